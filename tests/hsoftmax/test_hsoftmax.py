"""h_softmax and h_softmax_grad against the NumPy oracle, both modes."""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    assert_empty,
    assert_matches,
    assert_unchanged,
    in_result_dtype,
    snapshot,
    tolerance,
)
from tests.support.cases import HSOFTMAX_CASES, HSoftmaxCase

TARGET_SHAPES = ["flat", "column"]


def _target(args, shape):
    return args.target if shape == "flat" else args.target.reshape(-1, 1)


def _float_args(args):
    return [args.x, args.W1, args.b1, args.W2, args.b2]


def _level_probs(args):
    """Class and within-class probabilities in float64, each from its own softmax."""
    x, W1, b1, W2, b2 = (a.astype(np.float64) for a in _float_args(args))
    p_class = _reference.softmax(x @ W1 + b1)
    p_slot = np.stack([_reference.softmax(x @ W2[c] + b2[c]) for c in range(args.n_classes)],
                      axis=1)
    return p_class, p_slot  # (batch, n_classes), (batch, n_classes, K)


# ---------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_full_matches_reference(case, dtype):
    args = case.make(dtype)
    before = snapshot(_float_args(args))
    expected = _reference.h_softmax(*args.call())

    result = nbs.h_softmax(*args.call())

    assert_matches(result, expected, dtype)
    assert result.shape == (case.batch, case.n_outputs)
    assert_unchanged(_float_args(args), before)


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_target_matches_reference(case, dtype, index_dtype):
    args = case.make(dtype, index_dtype)
    before = snapshot([*_float_args(args), args.target])
    expected = _reference.h_softmax(*args.call(), target=args.target)

    result = nbs.h_softmax(*args.call(), target=args.target)

    assert_matches(result, expected, dtype)
    assert result.shape == (case.batch,)
    assert_unchanged([*_float_args(args), args.target], before)


@pytest.mark.parametrize("target_shape", TARGET_SHAPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_target_mode_is_the_full_mode_probability_of_the_target(case, dtype, target_shape):
    args = case.make(dtype)
    target = _target(args, target_shape)
    full = nbs.h_softmax(*args.call())

    result = nbs.h_softmax(*args.call(), target=target)

    assert_matches(result, full[np.arange(case.batch), args.target], dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_full_mode_columns_are_class_times_slot_probabilities(case, dtype):
    args = case.make(dtype)
    p_class, p_slot = _level_probs(args)
    products = (p_class[:, :, None] * p_slot).reshape(case.batch, -1)

    result = nbs.h_softmax(*args.call())

    assert_matches(result, products[:, :case.n_outputs], dtype)
    # Rows sum to 1 less what the truncation drops (nothing when n_classes * K == n_outputs).
    dropped = products[:, case.n_outputs:].sum(axis=1)
    np.testing.assert_allclose(result.astype(np.float64).sum(axis=1), 1.0 - dropped,
                               **tolerance(dtype))
    assert (dropped > 0).all() == case.truncated


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_truncated_rows_sum_to_less_than_one(dtype):
    args = HSoftmaxCase("truncated", n_outputs=10, seed=1).make(dtype)

    sums = nbs.h_softmax(*args.call()).sum(axis=1)

    assert (sums < 1.0 - 1e-3).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_exact_rows_sum_to_one(dtype):
    args = HSoftmaxCase("exact").make(dtype)

    sums = nbs.h_softmax(*args.call()).sum(axis=1)

    np.testing.assert_allclose(sums, 1.0, **tolerance(dtype))


# ---------------------------------------------------------------------------
# Gradients against the oracle (finite differences are in test_grads.py)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_grad_full_matches_reference(case, dtype):
    args = case.make(dtype)
    g = np.random.default_rng(case.seed + 100).standard_normal((case.batch, case.n_outputs))
    g = g.astype(dtype)
    before = snapshot([g, *_float_args(args)])
    expected = _reference.h_softmax_grad(g, *args.call())

    result = nbs.h_softmax_grad(g, *args.call())

    assert isinstance(result, nbs.HSoftmaxGrad)
    assert result._fields == ("x", "W1", "b1", "W2", "b2")
    for got, want in zip(result, expected):
        assert_matches(got, want, dtype)
    assert_unchanged([g, *_float_args(args)], before)


@pytest.mark.parametrize("target_shape", TARGET_SHAPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_grad_target_matches_reference(case, dtype, index_dtype, target_shape):
    args = case.make(dtype, index_dtype)
    target = _target(args, target_shape)
    g = np.random.default_rng(case.seed + 200).standard_normal(case.batch).astype(dtype)
    before = snapshot([g, *_float_args(args), target])
    expected = _reference.h_softmax_grad(g, *args.call(), target=target)

    result = nbs.h_softmax_grad(g, *args.call(), target=target)

    assert isinstance(result, nbs.HSoftmaxGrad)
    for got, want in zip(result, expected):
        assert_matches(got, want, dtype)
    assert_unchanged([g, *_float_args(args), target], before)


# ---------------------------------------------------------------------------
# Classes that no target selects are never read


def _poisoned(dtype, target_shape):
    """A problem whose targets all lie in classes 0 and 2, with NaN/inf in classes 1 and 3."""
    case = HSoftmaxCase("poisoned", batch=6, n_in=5, n_classes=4, K=3, n_outputs=11, seed=9)
    clean = case.make(dtype)
    target = np.array([0, 7, 2, 8, 6, 1], dtype=np.int16)  # classes 0, 2, 0, 2, 2, 0
    W2, b2 = clean.W2.copy(), clean.b2.copy()
    W2[1], W2[3] = np.nan, np.inf
    b2[1], b2[3] = np.inf, np.nan
    b2[3, 0] = -np.inf
    if target_shape == "column":
        target = target.reshape(-1, 1)
    return clean, W2, b2, target


@pytest.mark.parametrize("target_shape", TARGET_SHAPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_non_finite_weights_of_unselected_classes_reach_no_result(dtype, target_shape):
    clean, W2, b2, target = _poisoned(dtype, target_shape)
    x, n, n_out, n_cls, K, W1, b1 = clean.call()[:7]
    g = np.linspace(-1.0, 2.0, x.shape[0]).astype(dtype)
    expected_p = _reference.h_softmax(*clean.call(), target=target)
    expected_g = _reference.h_softmax_grad(g, *clean.call(), target=target)

    probs = nbs.h_softmax(x, n, n_out, n_cls, K, W1, b1, W2, b2, target=target)
    grads = nbs.h_softmax_grad(g, x, n, n_out, n_cls, K, W1, b1, W2, b2, target=target)

    assert_matches(probs, expected_p, dtype)
    for got, want in zip(grads, expected_g):
        assert np.isfinite(got).all()
        assert_matches(got, want, dtype)
    np.testing.assert_array_equal(grads.W2[[1, 3]], 0.0)  # exactly zero, not merely small
    np.testing.assert_array_equal(grads.b2[[1, 3]], 0.0)
    assert np.abs(grads.W2[[0, 2]]).max() > 0  # the selected classes do get a gradient


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_full_mode_probability_below_the_float_range_is_zero(dtype):
    """A slot activation far below the others has probability 0, as ``exp`` underflows in the reference."""
    x, W1, b1 = np.ones((1, 2), dtype), np.zeros((2, 1), dtype), np.zeros(1, dtype)
    W2, b2 = np.zeros((1, 2, 3), dtype), np.array([[0.0, -1e4, -np.inf]], dtype)
    probs = nbs.h_softmax(x, 1, 3, 1, 3, W1, b1, W2, b2)
    np.testing.assert_array_equal(probs, [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_full_mode_grad_infinite_weight_times_zero_probability_is_nan(dtype):
    """``0 * inf`` is NaN in the input gradient, as in the reference (found by fuzzing).

    The second row's slot activations are ``[finite, -inf]``: probability 0 meets
    the infinite weight, in the host's fused full-mode kernel as in the reference.
    """
    g = np.array([[0.28, -0.55], [0.98, -0.31]], dtype)
    x = np.array([[0.19], [-0.52]], dtype)
    W1, b1 = np.array([[-0.41]], dtype), np.array([-2.44], dtype)
    W2, b2 = np.array([[[1.8, np.inf]]], dtype), np.array([[-0.33, 0.77]], dtype)
    with np.errstate(all="ignore"):
        expected = _reference.h_softmax_grad(g, x, 2, 2, 1, 2, W1, b1, W2, b2)
    grads = nbs.h_softmax_grad(g, x, 2, 2, 1, 2, W1, b1, W2, b2)
    assert np.isnan(expected.x).all()
    for name in expected._fields:
        np.testing.assert_array_equal(np.isnan(getattr(grads, name)), np.isnan(getattr(expected, name)), name)


# ---------------------------------------------------------------------------
# Batch 0, dtypes


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_batch_0(dtype):
    args = HSoftmaxCase("batch_0", batch=0, n_outputs=10).make(dtype)
    target = np.zeros(0, dtype=np.int32)

    assert_empty(nbs.h_softmax(*args.call()), (0, 10), dtype)
    assert_empty(nbs.h_softmax(*args.call(), target=target), (0,), dtype)
    full_grads = nbs.h_softmax_grad(np.zeros((0, 10), dtype), *args.call())
    target_grads = nbs.h_softmax_grad(np.zeros(0, dtype), *args.call(), target=target)
    for grads in (full_grads, target_grads):
        assert_empty(grads.x, (0, 4), dtype)
        for name in ("W1", "b1", "W2", "b2"):  # a sum over no rows
            assert_matches(getattr(grads, name), np.zeros_like(getattr(args, name)), dtype)


@pytest.mark.parametrize("mode", ["full", "target"])
def test_mixed_float_dtypes_give_the_result_type(mode):
    args = HSoftmaxCase("mixed", seed=11).make(np.float64)
    x, n, n_out, n_cls, K, W1, b1, W2, b2 = args.call()
    x, b2 = x.astype(np.float32), b2.astype(np.float32)
    target = None if mode == "full" else args.target
    g_shape = (n,) if target is not None else (n, n_out)
    g = np.random.default_rng(12).standard_normal(g_shape).astype(np.float32)
    call = (x, n, n_out, n_cls, K, W1, b1, W2, b2)
    exact = in_result_dtype(g, *call)

    assert_matches(nbs.h_softmax(*call, target=target),
                   _reference.h_softmax(*exact[1:], target=target), np.float64)
    grads = nbs.h_softmax_grad(g, *call, target=target)
    for got, want in zip(grads, _reference.h_softmax_grad(*exact, target=target)):
        assert_matches(got, want, np.float64)
