"""Fuzzing every public function and mode on NumPy arrays against the NumPy oracle.

The strategies and checks are in ``tests/support/fuzzing.py``: arbitrary small shapes
(zero-size dimensions and windows of 1 included), repeated and permuted
indices, every integer index dtype, float32/float64 mixes, C/F/strided/negative
strides, read-only arguments, NaN and +-inf, and an ``o`` that shares memory
with another argument under ``inplace=True``. The number of examples follows
the hypothesis profile (tests/conftest.py): "ci" by default, ``--hypothesis-profile=long``
for a long local run.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbsparse as nbs
from nbsparse import _reference
from nbsparse._optable import OP
from nbsparse._overlap import byte_extent, extents_overlap
from tests.support.fuzzing import OPS, calls, check_host_call, examples, truncated_class_problem


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=examples())
@given(data=st.data())
def test_fuzz_against_the_reference(op, data):
    check_host_call(data.draw(calls(op), label="call"))


GRADIENT_OPS = [op for op in OPS if OP[op].gradient]


@pytest.mark.parametrize("op", GRADIENT_OPS)
@settings(max_examples=examples())
@given(data=st.data())
def test_fuzzed_block_lists_are_the_dense_gradients_bit_for_bit(op, data):
    """``sparse=True`` on the same drawn call: every ``BlockGrad``'s ``to_dense`` is the dense field's bits."""
    fz = data.draw(calls(op), label="call")
    dense = fz.func(**fz.kwargs())
    sparse = fz.func(**fz.kwargs(), sparse=True)
    assert type(sparse) is type(dense)
    for field in dense._fields:
        got, want = getattr(sparse, field), getattr(dense, field)
        if isinstance(got, nbs.BlockGrad):
            got = got.to_dense(want.shape)
        assert got.dtype == want.dtype and got.shape == want.shape, field
        assert got.tobytes() == want.tobytes(), field


# --------------------------------------------------------------------------- aliasing, pinned
# The fuzz draws aliasing at random; these examples pin the cases the README names.
def _gemv_args(rng, dtype=np.float64):
    W = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    h = rng.standard_normal((3, 2, 4)).astype(dtype)
    return W, h, rng.integers(0, 2, (3, 2)), rng.integers(0, 3, (3, 2))


def test_inplace_o_that_is_h_gives_the_result_on_copies(rng):
    W, h, input_idx, output_idx = _gemv_args(rng)
    o = h  # o is h itself: shapes (3, 2, 4) agree
    expected = nbs.sparse_block_gemv(o.copy(), W, h.copy(), input_idx, output_idx)

    result = nbs.sparse_block_gemv(o, W, h, input_idx, output_idx, inplace=True)

    assert result is o
    np.testing.assert_array_equal(o, expected)


def test_inplace_o_over_the_index_bytes_never_reads_the_overwritten_indices(rng):
    """o shares output_idx's bytes: the kernel must not see indices change under it.

    Before the fix the kernel wrote straight into o, turning the block indices into
    float bit patterns mid-call: out-of-range reads and a segfault.
    """
    W = rng.standard_normal((4, 4, 8, 8))
    h = rng.standard_normal((64, 4, 8))
    memory = np.zeros(64 * 4 * 8, np.int64)
    output_idx = memory[:64 * 4].reshape(64, 4)
    output_idx[...] = rng.integers(0, 4, (64, 4))
    input_idx = rng.integers(0, 4, (64, 4))
    o = memory.view(np.float64).reshape(64, 4, 8)
    expected = nbs.sparse_block_gemv(o.copy(), W, h, input_idx, output_idx.copy())

    result = nbs.sparse_block_gemv(o, W, h, input_idx, output_idx, inplace=True)

    assert result is o
    np.testing.assert_array_equal(o, expected)


def test_inplace_outer_o_overlapping_x_gives_the_result_on_copies(rng):
    memory = rng.standard_normal(2 * 3 * 2 * 2)
    o, x = memory.reshape(2, 3, 2, 2), memory[4:16].reshape(3, 2, 2)
    y = rng.standard_normal((3, 2, 2))
    x_idx, y_idx = rng.integers(0, 2, (3, 2)), rng.integers(0, 3, (3, 2))
    expected = nbs.sparse_block_outer(o.copy(), x.copy(), y, x_idx, y_idx, 0.5)

    result = nbs.sparse_block_outer(o, x, y, x_idx, y_idx, 0.5, inplace=True)

    assert result is o
    np.testing.assert_array_equal(o, expected)


def test_non_inplace_calls_with_aliased_inputs_read_them_only(rng):
    memory = rng.standard_normal(3 * 2 * 4 + 96)
    W = memory[:96].reshape(2, 3, 4, 4)
    o = memory[40:64].reshape(3, 2, 4)  # inside W
    _, h, input_idx, output_idx = _gemv_args(rng)
    before = memory.copy()
    expected = nbs.sparse_block_gemv(o.copy(), W.copy(), h, input_idx, output_idx)

    result = nbs.sparse_block_gemv(o, W, h, input_idx, output_idx)

    np.testing.assert_array_equal(result, expected)
    assert memory.tobytes() == before.tobytes()


# --------------------------------------------------------------------------- NaN past the truncation


def test_truncated_class_inf_does_not_reach_the_forward_result():
    """The forward pass never shows a wholly truncated class (oracle and nbsparse agree)."""
    _, args = truncated_class_problem()
    with np.errstate(all="ignore"):
        expected = _reference.h_softmax(*args)
    result = nbs.h_softmax(*args)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(result, expected, rtol=1e-12)


def test_truncated_class_nan_reaches_the_class_gradient():
    """NaN in the W2/b2 block of a class wholly past n_outputs reaches every gradient the
    oracle's does (0 * NaN): the kernels sum the class gradient over the truncated slots too."""
    g, args = truncated_class_problem()
    with np.errstate(all="ignore"):
        expected = _reference.h_softmax_grad(g, *args)
    result = nbs.h_softmax_grad(g, *args)
    for name, got, want in zip(expected._fields, result, expected):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)


# --------------------------------------------------------------------------- the overlap test
def _byte_bounds(a):
    bounds = getattr(np.lib, "array_utils", np).byte_bounds  # NumPy 2 moved it
    return bounds(a)


def _views():
    base = np.arange(60.0).reshape(3, 4, 5)
    yield "whole", base
    yield "steps", base[::2, 1::2, ::3]
    yield "negative", base[::-1, :, ::-2]
    yield "transposed", base.transpose(2, 0, 1)
    yield "broadcast", np.broadcast_to(base[:1], (4, 4, 5))
    yield "one", base[1:2, 2:3, 3:4]
    yield "float32-view", base.view(np.float32)[:, ::2, 1::3]


@pytest.mark.parametrize(("name", "view"), list(_views()), ids=[n for n, _ in _views()])
def test_byte_extent_matches_numpy(name, view):
    assert byte_extent(view.__array_interface__) == _byte_bounds(view)


def test_empty_arrays_overlap_nothing():
    base = np.zeros(10)
    empty = base[3:3]
    low, high = byte_extent(empty.__array_interface__)
    assert low == high
    assert not extents_overlap((low, high), byte_extent(base.__array_interface__))
    assert extents_overlap(byte_extent(base[:4].__array_interface__),
                           byte_extent(base[3:].__array_interface__))
    assert not extents_overlap(byte_extent(base[:3].__array_interface__),
                               byte_extent(base[3:].__array_interface__))
