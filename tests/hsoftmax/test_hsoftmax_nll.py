"""h_softmax_nll and h_softmax_nll_grad: against the oracle, in log space, poisoned classes.

The device sweep (every dtype, index dtype, layout, CuPy, streams) is in
test_device.py and the finite differences in test_grads.py; this module checks
the loss itself on the host and, for the properties that a kernel could break
(stability, unread classes), on the device too.
"""

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
)
from tests.support.cases import HSOFTMAX_CASES, HSoftmaxCase

TARGET_SHAPES = ["flat", "column"]


def _float_args(args):
    return [args.x, args.W1, args.b1, args.W2, args.b2]


def _target(args, shape):
    return args.target if shape == "flat" else args.target.reshape(-1, 1)


@pytest.fixture
def cuda(monkeypatch):
    """numba.cuda, with 8 threads per block: several blocks and fewer simulated threads."""
    from numba import cuda

    from nbsparse._cuda import launch

    monkeypatch.setattr(launch, "THREADS_PER_BLOCK", 8)
    return cuda


# ---------------------------------------------------------------------------
# Against the oracle


@pytest.mark.parametrize("target_shape", TARGET_SHAPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_nll_matches_reference(case, dtype, index_dtype, target_shape):
    args = case.make(dtype, index_dtype)
    target = _target(args, target_shape)
    before = snapshot([*_float_args(args), target])
    expected = _reference.h_softmax_nll(*args.call(), target)

    result = nbs.h_softmax_nll(*args.call(), target)

    assert_matches(result, expected, dtype)
    assert result.shape == (case.batch,)
    assert_unchanged([*_float_args(args), target], before)


@pytest.mark.parametrize("target_shape", TARGET_SHAPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_nll_grad_matches_reference(case, dtype, index_dtype, target_shape):
    args = case.make(dtype, index_dtype)
    target = _target(args, target_shape)
    g = np.random.default_rng(case.seed + 300).standard_normal(case.batch).astype(dtype)
    before = snapshot([g, *_float_args(args), target])
    expected = _reference.h_softmax_nll_grad(g, *args.call(), target)

    result = nbs.h_softmax_nll_grad(g, *args.call(), target)

    assert type(result) is nbs.HSoftmaxGrad
    for got, want in zip(result, expected):
        assert_matches(got, want, dtype)
    assert_unchanged([g, *_float_args(args), target], before)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_h_softmax_nll_is_minus_log_h_softmax_where_that_is_finite(case, dtype):
    args = case.make(dtype)
    p = nbs.h_softmax(*args.call(), target=args.target)
    assert (p > 1e-6).all()  # guard: unit-normal weights, so -log(p) is accurate here

    assert_matches(nbs.h_softmax_nll(*args.call(), args.target), -np.log(p), dtype)


# ---------------------------------------------------------------------------
# Log space: huge logits


def _huge_logits(dtype):
    """Targets whose probability is exp(-13000): 0 in any float, while the NLL is 13000.

    Row 0's target is class 0 (logit 0 against 1e4), slot 0 (logit -3e3 against 0);
    row 1's target is the likely class 1, slot 1 (logit 0 against -3e3). With
    ``x = 1`` and zero weights the activations are the biases, so the exact values
    are known: NLL ``1e4 + 3e3`` and ``0`` (up to exp(-3e3)), and each level's
    activation gradient is ``softmax - onehot`` with a softmax of exactly 0 and 1.
    """
    x = np.ones((2, 3), dtype)
    W1, b1 = np.zeros((3, 2), dtype), np.array([0.0, 1e4], dtype)
    W2 = np.zeros((2, 3, 2), dtype)
    b2 = np.array([[-3e3, 0.0], [-3e3, 0.0]], dtype)
    target = np.array([0, 3])
    call = (x, 2, 4, 2, 2, W1, b1, W2, b2)
    expected_nll = np.array([13000.0, 0.0], dtype)
    expected_db1 = np.array([-1.0, 1.0], dtype)  # row 0: (0, 1) - (1, 0); row 1: (0, 1) - (0, 1)
    expected_db2 = np.array([[-1.0, 1.0], [0.0, 0.0]], dtype)
    return call, target, expected_nll, expected_db1, expected_db2


def _check_huge_logits(nll, grads, dtype):
    _, _, expected_nll, expected_db1, expected_db2 = _huge_logits(dtype)
    np.testing.assert_allclose(nll, expected_nll, rtol=1e-6, atol=0)
    for got in grads:
        assert np.isfinite(got).all()
    np.testing.assert_array_equal(grads.b1, expected_db1)
    np.testing.assert_array_equal(grads.b2, expected_db2)
    np.testing.assert_array_equal(grads.W1, np.stack([expected_db1] * 3))  # x = 1: dW1 = db1


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_huge_logits_give_a_finite_nll_where_log_h_softmax_is_inf(dtype):
    call, target, *_ = _huge_logits(dtype)
    with np.errstate(divide="ignore"):
        assert np.isinf(-np.log(nbs.h_softmax(*call, target=target)[0]))  # guard: p underflows

    nll = nbs.h_softmax_nll(*call, target)
    grads = nbs.h_softmax_nll_grad(np.ones(2, dtype), *call, target)

    _check_huge_logits(nll, grads, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_huge_logits_on_the_device(cuda, dtype):
    call, target, *_ = _huge_logits(dtype)
    d_call = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in call]
    d_target = cuda.to_device(target)

    nll = nbs.h_softmax_nll(*d_call, d_target).copy_to_host()
    grads = nbs.h_softmax_nll_grad(cuda.to_device(np.ones(2, dtype)), *d_call, d_target)

    _check_huge_logits(nll, nbs.HSoftmaxGrad(*(a.copy_to_host() for a in grads)), dtype)


# ---------------------------------------------------------------------------
# Classes that no target selects are never read


def _poisoned(dtype):
    """Targets in classes 0 and 2 only; NaN and inf in the W2/b2 blocks of classes 1 and 3."""
    clean = HSoftmaxCase("poisoned", batch=6, n_in=5, n_classes=4, K=3, n_outputs=11,
                         seed=19).make(dtype)
    target = np.array([0, 7, 2, 8, 6, 1], dtype=np.int32)  # classes 0, 2, 0, 2, 2, 0
    W2, b2 = clean.W2.copy(), clean.b2.copy()
    W2[1], W2[3] = np.nan, np.inf
    b2[1], b2[3] = np.inf, np.nan
    b2[3, 0] = -np.inf
    x, n, n_out, n_cls, K, W1, b1 = clean.call()[:7]
    g = np.linspace(-1.0, 2.0, n).astype(dtype)
    return clean, (x, n, n_out, n_cls, K, W1, b1, W2, b2), target, g


def _check_poisoned(clean, target, g, nll, grads, dtype):
    assert_matches(nll, _reference.h_softmax_nll(*clean.call(), target), dtype)
    for got, want in zip(grads, _reference.h_softmax_nll_grad(g, *clean.call(), target)):
        assert np.isfinite(got).all()
        assert_matches(got, want, dtype)
    np.testing.assert_array_equal(grads.W2[[1, 3]], 0.0)  # exactly zero, not merely small
    np.testing.assert_array_equal(grads.b2[[1, 3]], 0.0)
    assert np.abs(grads.W2[[0, 2]]).max() > 0  # the selected classes do get a gradient


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_non_finite_weights_of_unselected_classes_reach_no_result(dtype):
    clean, call, target, g = _poisoned(dtype)

    nll = nbs.h_softmax_nll(*call, target)
    grads = nbs.h_softmax_nll_grad(g, *call, target)

    _check_poisoned(clean, target, g, nll, grads, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_non_finite_weights_of_unselected_classes_reach_no_result_on_the_device(cuda, dtype):
    clean, call, target, g = _poisoned(dtype)
    d_call = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in call]

    nll = nbs.h_softmax_nll(*d_call, cuda.to_device(target))
    grads = nbs.h_softmax_nll_grad(cuda.to_device(g), *d_call, cuda.to_device(target))

    _check_poisoned(clean, target, g, nll.copy_to_host(),
                    nbs.HSoftmaxGrad(*(a.copy_to_host() for a in grads)), dtype)


# ---------------------------------------------------------------------------
# Batch 0, dtypes


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_batch_0(dtype):
    args = HSoftmaxCase("batch_0", batch=0, n_outputs=10).make(dtype)
    target = np.zeros(0, dtype=np.int32)

    assert_empty(nbs.h_softmax_nll(*args.call(), target), (0,), dtype)
    grads = nbs.h_softmax_nll_grad(np.zeros(0, dtype), *args.call(), target)
    assert_empty(grads.x, (0, 4), dtype)
    for name in ("W1", "b1", "W2", "b2"):  # a sum over no rows
        assert_matches(getattr(grads, name), np.zeros_like(getattr(args, name)), dtype)


def test_mixed_float_dtypes_give_the_result_type():
    args = HSoftmaxCase("mixed", seed=11).make(np.float64)
    x, n, n_out, n_cls, K, W1, b1, W2, b2 = args.call()
    x, W2 = x.astype(np.float32), W2.astype(np.float32)
    g = np.random.default_rng(12).standard_normal(n).astype(np.float32)
    call = (x, n, n_out, n_cls, K, W1, b1, W2, b2)
    exact = in_result_dtype(g, *call)

    assert_matches(nbs.h_softmax_nll(*call, args.target),
                   _reference.h_softmax_nll(*exact[1:], args.target), np.float64)
    grads = nbs.h_softmax_nll_grad(g, *call, args.target)
    for got, want in zip(grads, _reference.h_softmax_nll_grad(*exact, args.target)):
        assert_matches(got, want, np.float64)
