"""The block-sparse products against the NumPy oracle: case x float dtype x index dtype."""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    assert_matches,
    assert_new_array,
    assert_unchanged,
    in_result_dtype,
    snapshot,
)
from tests.support.cases import EMPTY_PRODUCT_CASES, PRODUCT_CASES, ProductCase

ALPHAS = [2.5, 0.0, -1.5, np.float32(0.5)]


def _floats(args):
    return [a for a in args if a.dtype.kind == "f"]


# ---------------------------------------------------------------------------
# Every op against the oracle


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_gemv_matches_reference(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).gemv()
    before = snapshot(args)
    expected = _reference.sparse_block_gemv(*args)

    result = nbs.sparse_block_gemv(*args)

    assert_matches(result, expected, dtype)
    assert_unchanged(args, before)
    assert_new_array(result, *_floats(args))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_dot_matches_reference(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).dot()
    before = snapshot(args)
    expected = _reference.sparse_block_dot(*args)

    result = nbs.sparse_block_dot(*args)

    assert_matches(result, expected, dtype)
    assert_unchanged(args, before)
    assert_new_array(result, *_floats(args))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_outer_matches_reference(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).outer()
    before = snapshot(args)
    expected = _reference.sparse_block_outer(*args)

    result = nbs.sparse_block_outer(*args)

    assert_matches(result, expected, dtype)
    assert_unchanged(args, before)
    assert_new_array(result, *_floats(args))


@pytest.mark.parametrize("alpha", ALPHAS, ids=repr)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_outer_with_alpha_matches_reference(case, dtype, alpha):
    args = case.make(dtype).outer()
    before = snapshot(args)
    expected = _reference.sparse_block_outer(*args, alpha=alpha)

    result = nbs.sparse_block_outer(*args, alpha=alpha)

    assert_matches(result, expected, dtype)
    assert_unchanged(args, before)


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_dot_grad_matches_reference(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype).dot_grad()
    before = snapshot(args)
    expected = _reference.sparse_block_dot_grad(*args)

    result = nbs.sparse_block_dot_grad(*args)

    assert isinstance(result, nbs.SparseBlockDotGrad)
    assert result._fields == ("W", "h", "b")
    for name in result._fields:
        assert_matches(getattr(result, name), getattr(expected, name), dtype)
        assert_new_array(getattr(result, name), *_floats(args))
    assert_unchanged(args, before)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_dot_is_gemv_on_the_gathered_bias(case, dtype):
    a = case.make(dtype)
    gathered = np.asarray(a.b)[np.asarray(a.output_idx, dtype=np.intp)]

    assert_matches(nbs.sparse_block_dot(*a.dot()),
                   nbs.sparse_block_gemv(gathered, a.W, a.h, a.input_idx, a.output_idx), dtype)


# ---------------------------------------------------------------------------
# inplace


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_gemv_inplace_writes_into_o_and_returns_it(case, dtype):
    args = case.make(dtype).gemv()
    o, rest = args[0], args[1:]
    before = snapshot(rest)
    expected = _reference.sparse_block_gemv(*args)

    result = nbs.sparse_block_gemv(*args, inplace=True)

    assert result is o
    assert_matches(o, expected, dtype)  # also for F-ordered, strided and reversed o
    assert_unchanged(rest, before)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_sparse_block_outer_inplace_writes_into_o_and_returns_it(case, dtype):
    args = case.make(dtype).outer()
    o, rest = args[0], args[1:]
    before = snapshot(rest)
    expected = _reference.sparse_block_outer(*args, alpha=-0.5)

    result = nbs.sparse_block_outer(*args, alpha=-0.5, inplace=True)

    assert result is o
    assert_matches(o, expected, dtype)
    assert_unchanged(rest, before)


@pytest.mark.parametrize("op", ["gemv", "outer"])
def test_inplace_into_a_strided_o_leaves_the_memory_between_its_elements_alone(op):
    a = ProductCase("strided", layout="strided").make(np.float64)
    args = getattr(a, op)()
    o = args[0]
    base = o.base
    assert base is not None and np.isnan(base).sum() == base.size - o.size  # the case's premise
    expected = getattr(_reference, f"sparse_block_{op}")(*args)

    result = getattr(nbs, f"sparse_block_{op}")(*args, inplace=True)

    assert result is o
    assert_matches(o, expected, np.float64)
    assert np.isnan(base).sum() == base.size - o.size


@pytest.mark.parametrize("op", ["gemv", "outer"])
def test_without_inplace_o_is_left_alone(op):
    args = getattr(PRODUCT_CASES[0].make(np.float64), op)()
    before = snapshot(args)

    result = getattr(nbs, f"sparse_block_{op}")(*args, inplace=False)

    assert_unchanged(args, before)
    assert_new_array(result, args[0])


# ---------------------------------------------------------------------------
# Mixed float dtypes: the result dtype is np.result_type of the float inputs

F32, F64 = np.float32, np.float64
MIXED3 = [(F32, F32, F64), (F32, F64, F32), (F64, F32, F32), (F64, F64, F32)]


@pytest.mark.parametrize("dtypes", MIXED3, ids=lambda ds: "-".join(np.dtype(d).name for d in ds))
@pytest.mark.parametrize("op", ["gemv", "dot", "outer", "dot_grad"])
def test_mixed_float_dtypes_give_the_result_type(op, dtypes):
    # The float arguments take ``dtypes`` in order (dot_grad's fourth, b, is float32).
    # Expected values come from the oracle on inputs cast to the result dtype (see
    # tests.support.assertions.in_result_dtype): the result is computed in that dtype, not only stored in it.
    args = list(getattr(ProductCase("mixed", seed=21).make(np.float64), op)())
    floats = [p for p, arg in enumerate(args) if arg.dtype.kind == "f"]
    for position, dtype in zip(floats, [*dtypes, np.float32]):
        args[position] = args[position].astype(dtype)
    result_dtype = np.result_type(*dtypes)

    result = getattr(nbs, f"sparse_block_{op}")(*args)

    expected = getattr(_reference, f"sparse_block_{op}")(*in_result_dtype(*args))
    results, expected = (result, expected) if op == "dot_grad" else ([result], [expected])
    for got, want in zip(results, expected, strict=True):
        assert_matches(got, want, result_dtype)


@pytest.mark.parametrize("op", ["gemv", "outer"])
def test_inplace_with_mixed_dtypes_keeps_o_when_o_has_the_result_dtype(op):
    a = ProductCase("mixed_inplace", seed=22).make(np.float64)
    args = list(getattr(a, op)())
    args[1], args[2] = args[1].astype(np.float32), args[2].astype(np.float32)
    expected = getattr(_reference, f"sparse_block_{op}")(*in_result_dtype(*args))

    result = getattr(nbs, f"sparse_block_{op}")(*args, inplace=True)

    assert result is args[0]
    assert_matches(result, expected, np.float64)


# ---------------------------------------------------------------------------
# Zero-size cases, checked against formulas rather than the oracle


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", EMPTY_PRODUCT_CASES, ids=str)
def test_zero_size_cases_give_correctly_shaped_results(case, dtype):
    # Every empty case has either an empty result or no product term at all.
    a = case.make(dtype)
    gathered_bias = np.asarray(a.b)[np.asarray(a.output_idx, dtype=np.intp)]
    bias_grad = np.zeros(a.b.shape, dtype)
    np.add.at(bias_grad, np.asarray(a.output_idx, dtype=np.intp), a.grad)

    gemv = nbs.sparse_block_gemv(*a.gemv())
    dot = nbs.sparse_block_dot(*a.dot())
    outer = nbs.sparse_block_outer(*a.outer(), alpha=3.0)
    grads = nbs.sparse_block_dot_grad(*a.dot_grad())

    assert_matches(gemv, a.o, dtype)
    assert gemv.shape == case.out_shape
    assert_matches(dot, gathered_bias, dtype)
    assert dot.shape == case.out_shape
    assert_matches(outer, a.outer_o, dtype)
    assert outer.shape == case.W_shape
    assert_matches(grads.W, np.zeros(case.W_shape, dtype), dtype)
    assert_matches(grads.h, np.zeros(a.h.shape, dtype), dtype)
    assert_matches(grads.b, bias_grad, dtype)


# ---------------------------------------------------------------------------
# sparse_block_outer: repeated pairs, determinism, alpha


def _same_block_outer_args(dtype, batch=40, x_win=3, y_win=3):
    # x_size 20 spans two of the CPU kernel's row chunks; every (b, i, j) hits block (1, 2).
    rng = np.random.default_rng(7)
    o = rng.standard_normal((3, 4, 20, 5)).astype(dtype)
    x = rng.standard_normal((batch, x_win, 20)).astype(dtype)
    y = rng.standard_normal((batch, y_win, 5)).astype(dtype)
    x_idx = np.full((batch, x_win), 1, dtype=np.int32)
    y_idx = np.full((batch, y_win), 2, dtype=np.uint8)
    return o, x, y, x_idx, y_idx


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_outer_with_every_pair_on_one_block_loses_no_update(dtype):
    args = _same_block_outer_args(dtype)
    o, x, y = args[:3]
    expected = _reference.sparse_block_outer(*args, alpha=0.75)

    runs = [nbs.sparse_block_outer(*args, alpha=0.75) for _ in range(5)]

    for result in runs:
        assert_matches(result, expected, dtype)
        np.testing.assert_array_equal(result, runs[0])  # bitwise: the CPU kernel is deterministic
    untouched = np.ones(o.shape[:2], dtype=bool)
    untouched[1, 2] = False
    np.testing.assert_array_equal(runs[0][untouched], o[untouched])


def test_outer_with_every_pair_on_one_block_equals_the_closed_form():
    # All 360 pairs land in block (1, 2): it gains alpha * (sum_i x[b, i])^T (sum_j y[b, j]).
    o, x, y, x_idx, y_idx = _same_block_outer_args(np.float64)

    result = nbs.sparse_block_outer(o, x, y, x_idx, y_idx, alpha=0.75)

    expected = o.copy()
    expected[1, 2] += 0.75 * x.sum(axis=1).T @ y.sum(axis=1)
    assert_matches(result, expected, np.float64)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_outer_honours_alpha(dtype):
    # Theano's SparseBlockOuter accepted alpha and ignored it.
    a = PRODUCT_CASES[0].make(dtype)
    o = a.outer_o
    step = nbs.sparse_block_outer(*a.outer(), alpha=1.0).astype(np.float64) - o

    assert np.abs(step).max() > 0.1  # the premise: alpha = 1 changes o
    np.testing.assert_array_equal(nbs.sparse_block_outer(*a.outer(), alpha=0.0), o)
    for alpha in (3.0, -2.0, 0.5):
        scaled = nbs.sparse_block_outer(*a.outer(), alpha=alpha).astype(np.float64) - o
        np.testing.assert_allclose(scaled, alpha * step, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Blocks that no index selects


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_unselected_blocks_are_neither_read_nor_given_gradient(dtype):
    a = next(c for c in PRODUCT_CASES if c.name == "many_blocks_few_used").make(dtype)
    ii = np.asarray(a.input_idx, dtype=np.intp)
    oi = np.asarray(a.output_idx, dtype=np.intp)
    used_pair = np.zeros(a.W.shape[:2], dtype=bool)
    for n in range(ii.shape[0]):
        used_pair[np.ix_(ii[n], oi[n])] = True
    used_out = np.zeros(a.b.shape[0], dtype=bool)
    used_out[oi.ravel()] = True
    assert (~used_pair).sum() > 500 and (~used_out).sum() > 20  # the premise
    W_bad, b_bad = a.W.copy(), a.b.copy()
    W_bad[~used_pair] = np.nan
    b_bad[~used_out] = np.inf

    dot = nbs.sparse_block_dot(W_bad, a.h, a.input_idx, b_bad, a.output_idx)
    grads = nbs.sparse_block_dot_grad(a.grad, W_bad, a.h, a.input_idx, b_bad, a.output_idx)

    assert_matches(dot, _reference.sparse_block_dot(*a.dot()), dtype)
    expected = _reference.sparse_block_dot_grad(*a.dot_grad())
    for got, want in zip(grads, expected):
        assert_matches(got, want, dtype)
    assert not grads.W[~used_pair].any()
    assert not grads.b[~used_out].any()
