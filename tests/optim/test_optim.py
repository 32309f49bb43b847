"""nbsparse.optim: sgd and adam against the NumPy reference, dense and on listed blocks; errors write nothing."""

import dataclasses
import inspect
import math
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbsparse import BlockGrad, _reference, _team, optim
from nbsparse.optim import AdamState
from tests.support.assertions import FLOAT_DTYPES, assert_unchanged, snapshot

TOL = {np.dtype(np.float32): {"rtol": 1e-6, "atol": 1e-6}, np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12}}
HYPER = {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6}


def assert_close(result, expected):
    assert result.dtype == expected.dtype and result.shape == expected.shape
    np.testing.assert_allclose(result, expected, **TOL[result.dtype])


class Case:
    """A parameter shape and the block rows a BlockGrad lists (``d`` columns each)."""

    def __init__(self, name, shape, d, listed):
        self.name, self.shape, self.d = name, shape, d
        self.index = np.array(listed, dtype=np.intp).reshape(len(listed), d)

    def __str__(self):
        return self.name

    def make(self, dtype, seed=0):
        """``(param, grad, state)``: a BlockGrad over the listed blocks and a non-trivial Adam state."""
        rng = np.random.default_rng(seed)
        param = rng.standard_normal(self.shape).astype(dtype)
        values = rng.standard_normal((len(self.index), *self.shape[self.d:])).astype(dtype)
        state = AdamState(rng.standard_normal(self.shape).astype(dtype), rng.random(self.shape).astype(dtype), 2)
        return param, BlockGrad(self.index, values), state


def all_rows(grid):
    return [tuple(r) for r in np.ndindex(*grid)]


CASES = [
    Case("W-like d=2", (4, 5, 3, 2), 2, [(0, 1), (1, 4), (3, 0), (3, 4)]),
    Case("3-D d=1", (6, 3, 4), 1, [(1,), (4,), (5,)]),
    Case("b-like d=1", (5, 7), 1, [(0,), (2,), (3,)]),
    Case("scalar blocks d=ndim", (5, 7), 2, [(0, 6), (2, 2), (4, 0)]),
    Case("empty index", (4, 5, 3, 2), 2, []),
    Case("single block", (4, 5, 3, 2), 2, [(2, 3)]),
    Case("all blocks d=2", (4, 5, 3, 2), 2, all_rows((4, 5))),
    Case("all blocks d=1", (6, 3, 4), 1, all_rows((6,))),
]


def listed_mask(case):
    mask = np.zeros(case.shape[:case.d], dtype=bool)
    mask[tuple(case.index.T)] = True
    return mask


# --------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dense", [False, True], ids=["blocks", "dense"])
def test_sgd_matches_reference(case, dtype, dense):
    param, grad, _ = case.make(dtype)
    if dense:
        grad = grad.to_dense(case.shape)
    expected = _reference.sgd(param, grad, 0.3)

    result = optim.sgd(param, grad, 0.3)

    assert result is param
    assert_close(param, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dense", [False, True], ids=["blocks", "dense"])
def test_adam_matches_reference(case, dtype, dense):
    param, grad, state = case.make(dtype)
    if dense:
        grad = grad.to_dense(case.shape)
    m, v = state.m, state.v
    expected = _reference.adam(param, grad, m, v, state.step, **HYPER)

    result = optim.adam(param, grad, state, **HYPER)

    assert result is param
    assert state.m is m and state.v is v  # updated in place
    for got, want in zip((param, state.m, state.v), expected[:3]):
        assert_close(got, want)
    assert state.step == expected[3] == 3


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_empty_index_changes_nothing_but_adams_step(dtype):
    param, grad, state = CASES[4].make(dtype)
    before = snapshot([param, state.m, state.v])
    optim.sgd(param, grad, 0.5)
    optim.adam(param, grad, state)
    assert_unchanged([param, state.m, state.v], before)
    assert state.step == 3


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_lazy_adam_over_three_steps_matches_reference_and_keeps_untouched_blocks(dtype):
    shape, rng = (5, 4, 3, 2), np.random.default_rng(1)
    param = rng.standard_normal(shape).astype(dtype)
    state = AdamState.zeros_like(param)
    touched_sets = [[(0, 1), (2, 2), (4, 3)], [(0, 1), (1, 0)], [(1, 0), (2, 2), (3, 3)]]
    first = param.copy()
    ref_p, ref_m, ref_v, ref_step = param.copy(), state.m.copy(), state.v.copy(), 0
    for touched in touched_sets:
        grad = BlockGrad(np.array(touched, dtype=np.intp), rng.standard_normal((len(touched), 3, 2)).astype(dtype))
        optim.adam(param, grad, state, **HYPER)
        ref_p, ref_m, ref_v, ref_step = _reference.adam(ref_p, grad, ref_m, ref_v, ref_step, **HYPER)
    for got, want in zip((param, state.m, state.v), (ref_p, ref_m, ref_v)):
        assert_close(got, want)
    assert state.step == ref_step == 3
    untouched = np.ones(shape[:2], dtype=bool)
    for touched in touched_sets:
        untouched[tuple(np.array(touched).T)] = False
    np.testing.assert_array_equal(param[untouched], first[untouched])
    np.testing.assert_array_equal(state.m[untouched], 0)
    np.testing.assert_array_equal(state.v[untouched], 0)
    # A block touched at step 1 only keeps its moments from then on, undecayed.
    assert (state.m[4, 3] != 0).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dense_adam_over_three_steps_matches_reference(dtype):
    rng = np.random.default_rng(2)
    param = rng.standard_normal((7, 3, 5)).astype(dtype)
    state = AdamState.zeros_like(param)
    ref = (param.copy(), state.m.copy(), state.v.copy(), 0)
    for _ in range(3):
        grad = rng.standard_normal(param.shape).astype(dtype)
        optim.adam(param, grad, state, **HYPER)
        ref = _reference.adam(ref[0], grad, ref[1], ref[2], ref[3], **HYPER)
    for got, want in zip((param, state.m, state.v), ref[:3]):
        assert_close(got, want)
    assert state.step == 3


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_a_block_step_is_the_dense_step_on_its_dense_gradient(dtype):
    case = CASES[0]
    param, grad, state = case.make(dtype)
    dense = grad.to_dense(case.shape)
    p_blocks, p_dense = param.copy(), param.copy()
    assert_close(optim.sgd(p_blocks, grad, 0.2), optim.sgd(p_dense, dense, 0.2))

    s_blocks = AdamState(state.m.copy(), state.v.copy(), state.step)
    p_blocks, p_dense = param.copy(), param.copy()
    optim.adam(p_blocks, grad, s_blocks, **HYPER)
    optim.adam(p_dense, dense, state, **HYPER)
    listed = listed_mask(case)  # the dense step also decays the moments of the other blocks
    for a, b in ((p_blocks, p_dense), (s_blocks.m, state.m), (s_blocks.v, state.v)):
        assert_close(a[listed], b[listed])
    assert s_blocks.step == state.step


def test_adam_state_zeros_like_is_c_contiguous_zeros():
    param = np.asfortranarray(np.ones((3, 4), dtype=np.float32))
    state = AdamState.zeros_like(param)
    for a in (state.m, state.v):
        assert a.dtype == np.float32 and a.shape == (3, 4) and a.flags.c_contiguous and not a.any()
    assert state.step == 0
    state.step += 1
    assert state.step == 1


# --------------------------------------------------------------------------- threads and non-finite values

@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_the_same_bits_on_one_thread_and_on_all(monkeypatch, dtype):
    monkeypatch.setattr(_team, "ADAPTIVE", False)  # every launch gets the caller's count
    rng = np.random.default_rng(3)
    param = rng.standard_normal((400, 500)).astype(dtype)  # 200k elements
    dense = rng.standard_normal(param.shape).astype(dtype)
    index = np.sort(rng.choice(400, 300, replace=False))[:, None]
    blocks = BlockGrad(index, rng.standard_normal((300, 500)).astype(dtype))
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            p, state = param.copy(), AdamState.zeros_like(param)
            optim.sgd(p, dense, 0.1)
            optim.sgd(p, blocks, 0.1)
            optim.adam(p, dense, state)
            optim.adam(p, blocks, state)
            results.append([a.tobytes() for a in (p, state.m, state.v)])
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dense", [False, True], ids=["blocks", "dense"])
def test_nan_in_grad_propagates_to_param(dtype, dense):
    param, grad, state = CASES[0].make(dtype)
    grad.values[1, 2, 1] = np.nan  # block (1, 4)
    if dense:
        grad = grad.to_dense(param.shape)
    p = param.copy()
    optim.sgd(p, grad, 0.1)
    assert np.isnan(p[1, 4, 2, 1]) and np.isnan(p).sum() == 1
    optim.adam(param, grad, state)
    assert np.isnan(param[1, 4, 2, 1]) and np.isnan(param).sum() == 1
    assert np.isnan(state.m[1, 4, 2, 1]) and np.isnan(state.v[1, 4, 2, 1])


# --------------------------------------------------------------------------- errors: nothing written

def problem():
    """A float64 ``(4, 5, 3)`` param, a BlockGrad of 2 blocks of its ``(4, 5)`` grid, an Adam state."""
    rng = np.random.default_rng(4)
    param = rng.standard_normal((4, 5, 3))
    grad = BlockGrad(np.array([[0, 1], [2, 3]]), rng.standard_normal((2, 3)))
    return param, grad, AdamState(rng.standard_normal((4, 5, 3)), rng.random((4, 5, 3)), 3), {}


def read_only(a):
    a.flags.writeable = False
    return a


def index(*listed):
    return lambda p, g, s, k: (p, BlockGrad(np.array(listed), g.values[:len(listed)] if len(listed) <= 2
                                            else np.zeros((len(listed), 3))), s, k)


def values(shape, dtype=np.float64):
    return lambda p, g, s, k: (p, BlockGrad(g.index, np.zeros(shape, dtype)), s, k)


def dense(shape, dtype=np.float64):
    return lambda p, g, s, k: (p, np.zeros(shape, dtype), s, k)


def hyper(**changed):
    return lambda p, g, s, k: (p, g, s, changed)


def with_state(**changed):
    def change(p, g, s, k):
        for name, make in changed.items():
            setattr(s, name, make(getattr(s, name)))
        return p, g, s, k
    return change


BOTH, ADAM = ("sgd", "adam"), ("adam",)
BAD = {
    # name: (change of problem(), ops, exception, message fragment)
    "grad.values dtype": (values((2, 3), np.float32), BOTH, TypeError, "grad.values has dtype float32"),
    "dense grad dtype": (dense((4, 5, 3), np.float32), BOTH, TypeError, "grad has dtype float32"),
    "state.m dtype": (with_state(m=lambda m: m.astype(np.float32)), ADAM, TypeError, "state.m has dtype"),
    "state.v dtype": (with_state(v=lambda v: v.astype(np.float32)), ADAM, TypeError, "state.v has dtype"),
    "int param": (lambda p, g, s, k: (p.astype(np.int64), g, s, k), BOTH, TypeError, "param must be a float32"),
    "float index": (lambda p, g, s, k: (p, BlockGrad(g.index.astype(float), g.values), s, k), BOTH, TypeError,
                    "grad.index must be an integer"),
    "list grad": (lambda p, g, s, k: (p, p.tolist(), s, k), BOTH, TypeError, "grad must be a NumPy array"),
    "state not AdamState": (lambda p, g, s, k: (p, g, (s.m, s.v, s.step), k), ADAM, TypeError, "AdamState"),
    "float step": (with_state(step=lambda t: 1.5), ADAM, TypeError, "state.step must be an integer"),
    "lr not a number": (hyper(lr="0.1"), BOTH, TypeError, "lr must be a real scalar"),
    "dense grad shape": (dense((4, 5, 2)), BOTH, ValueError, "grad has shape"),
    "state.m shape": (with_state(m=lambda m: m[:3].copy()), ADAM, ValueError, "state.m has shape"),
    "index 1-D": (lambda p, g, s, k: (p, BlockGrad(np.array([0, 2]), g.values), s, k), BOTH, ValueError,
                  "grad.index must be 2-D"),
    "d too large": (lambda p, g, s, k: (p, BlockGrad(np.zeros((2, 4), int), np.zeros((2,))), s, k), BOTH,
                    ValueError, "grad.index must be 2-D"),
    "rows decreasing": (index([2, 3], [0, 1]), BOTH, ValueError, r"grad.index\[1\] = \(0, 1\) does not come after"),
    "rows decreasing later": (index([0, 1], [2, 3], [2, 2]), BOTH, ValueError, r"grad.index\[2\]"),
    "rows duplicated": (index([0, 1], [0, 1]), BOTH, ValueError, r"grad.index\[1\] = \(0, 1\) repeats"),
    "values wrong shape": (values((2, 4)), BOTH, ValueError, "grad.values has shape"),
    "values wrong count": (values((3, 3)), BOTH, ValueError, "grad.values has shape"),
    "read-only param": (lambda p, g, s, k: (read_only(p), g, s, k), BOTH, ValueError, "param is read-only"),
    "read-only m": (with_state(m=read_only), ADAM, ValueError, "state.m is read-only"),
    "read-only v": (with_state(v=read_only), ADAM, ValueError, "state.v is read-only"),
    "non-contiguous param": (lambda p, g, s, k: (np.asfortranarray(p), g, s, k), BOTH, ValueError,
                             "param must be C-contiguous"),
    "non-contiguous v": (with_state(v=np.asfortranarray), ADAM, ValueError, "state.v must be C-contiguous"),
    "negative step": (with_state(step=lambda t: -1), ADAM, ValueError, "state.step must be >= 0"),
    "lr negative": (hyper(lr=-0.1), BOTH, ValueError, "lr must be finite and >= 0"),
    "lr nan": (hyper(lr=float("nan")), BOTH, ValueError, "lr must be finite"),
    "lr inf": (hyper(lr=float("inf")), BOTH, ValueError, "lr must be finite"),
    "beta1 = 1": (hyper(beta1=1.0), ADAM, ValueError, r"beta1 must be in \[0, 1\)"),
    "beta2 = -0.1": (hyper(beta2=-0.1), ADAM, ValueError, r"beta2 must be in \[0, 1\)"),
    "beta2 nan": (hyper(beta2=float("nan")), ADAM, ValueError, r"beta2 must be in \[0, 1\)"),
    "eps = 0": (hyper(eps=0.0), ADAM, ValueError, "eps must be finite and > 0"),
    "index outside the grid": (index([0, 1], [2, 5]), BOTH, IndexError,
                               r"grad.index\[1\] = \(2, 5\) is outside the block grid \(4, 5\) of param"),
    "negative index": (index([-1, 1], [2, 3]), BOTH, IndexError, r"grad.index\[0\] = \(-1, 1\) is outside"),
    "index outside, unsorted after": (index([0, 1], [9, 0], [1, 0]), BOTH, IndexError, r"grad.index\[1\]"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_call_raises_and_writes_nothing(name):
    change, ops, error, message = BAD[name]
    for op in ops:
        param, grad, state, kwargs = change(*problem())
        arrays = [param] + ([state.m, state.v] if isinstance(state, AdamState) else [])
        step = getattr(state, "step", None)
        before = snapshot(arrays)
        with pytest.raises(error, match=message):
            if op == "sgd":
                optim.sgd(param, grad, kwargs.get("lr", 0.1))
            else:
                optim.adam(param, grad, state, **kwargs)
        assert_unchanged(arrays, before)
        assert getattr(state, "step", None) == step


class FakeDeviceArray:
    """Looks like a GPU array to the kind check (which reads only the attribute)."""

    __cuda_array_interface__ = {}


def test_mixing_host_and_gpu_arrays_is_a_type_error():
    """(The GPU steps themselves: tests/optim/test_optim_device.py.)"""
    gpu = FakeDeviceArray()
    param, grad, state, _ = problem()
    with pytest.raises(TypeError, match="cannot mix host and device"):
        optim.sgd(param, BlockGrad(gpu, gpu), 0.1)
    with pytest.raises(TypeError, match="cannot mix host and device"):
        optim.adam(param, grad, AdamState(gpu, state.v, 3))
    assert state.step == 3


def test_dask_arrays_are_not_implemented():
    da = pytest.importorskip("dask.array")
    param, grad, state, _ = problem()
    with pytest.raises(NotImplementedError, match="Dask"):
        optim.sgd(da.from_array(param), grad, 0.1)
    with pytest.raises(NotImplementedError, match="Dask"):
        optim.adam(param, da.from_array(grad.to_dense(param.shape)), state)
    assert state.step == 3


def test_the_contracts_signatures():
    assert str(inspect.signature(optim.sgd)) == "(param, grad, lr)"
    assert str(inspect.signature(optim.adam)) == "(param, grad, state, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08)"
    assert [f.name for f in dataclasses.fields(AdamState)] == ["m", "v", "step"]
    assert set(optim.__all__) == {"AdamState", "adam", "sgd"}


def test_importing_optim_does_not_import_numba():
    code = "import sys, nbsparse.optim; from nbsparse import optim; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- property

@st.composite
def block_problems(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    d = draw(st.integers(1, ndim))
    grid = shape[:d]
    touched = draw(st.lists(st.booleans(), min_size=math.prod(grid), max_size=math.prod(grid)))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    step = draw(st.integers(0, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, d, np.flatnonzero(touched), dtype, step, seed


@settings(max_examples=30, deadline=None)
@given(block_problems())
def test_block_adam_matches_reference(case):
    shape, d, flat, dtype, step, seed = case
    rng = np.random.default_rng(seed)
    grid = shape[:d]
    index = np.stack(np.unravel_index(flat, grid), axis=1).astype(np.intp).reshape(len(flat), d)
    grad = BlockGrad(index, rng.standard_normal((len(flat), *shape[d:])).astype(dtype))
    param = rng.standard_normal(shape).astype(dtype)
    state = AdamState(rng.standard_normal(shape).astype(dtype), rng.random(shape).astype(dtype), step)
    expected = _reference.adam(param, grad, state.m, state.v, step, **HYPER)

    optim.adam(param, grad, state, **HYPER)

    for got, want in zip((param, state.m, state.v), expected[:3]):
        assert_close(got, want)
    assert state.step == expected[3] == step + 1
