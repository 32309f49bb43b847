"""Every gradient against central finite differences, in float64.

The loss is a random projection ``L = sum(G * f(args))``, so its gradient is what
the ``*_grad`` functions return for ``grad_output = G``. Up to 20 random
coordinates of each argument are perturbed by ``+-EPS``; with ``EPS = 1e-6`` the
central difference is accurate to about 1e-9 here (rounding of ``L``, about
1e-15, divided by ``EPS``), well inside the 1e-6 tolerance. Each test runs on
nbsparse and on the oracle, so the oracle's gradients are checked as well.
"""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import random_coordinates
from tests.support.cases import HSOFTMAX_CASES, PRODUCT_CASES, ProductCase

EPS = 1e-6
RTOL, ATOL = 1e-6, 1e-7

IMPLEMENTATIONS = [pytest.param(nbs, id="nbsparse"), pytest.param(_reference, id="reference")]

GRAD_PRODUCT_CASES = [c for c in PRODUCT_CASES if c.name in (
    "basic", "same_block_pair", "duplicates_in_row", "single_block", "windows_of_1", "strided",
)] + [ProductCase("tiny", batch=2, i_blocks=2, o_blocks=3, i_size=3, o_size=2, seed=30)]

GRAD_HSOFTMAX_CASES = [c for c in HSOFTMAX_CASES if c.name in (
    "exact", "truncated", "truncated_whole_class", "one_per_class", "one_class",
)]


def assert_gradient(loss, args, position, analytic, seed):
    """Central differences of ``loss(*args)`` in ``args[position]`` equal ``analytic`` there."""
    rng = np.random.default_rng(seed)
    a = args[position]
    numeric, expected = [], []
    for coordinate in random_coordinates(rng, a.shape):
        shifted = []
        for step in (EPS, -EPS):
            moved = np.array(a, copy=True)
            moved[coordinate] += step
            shifted.append(loss(*args[:position], moved, *args[position + 1:]))
        numeric.append((shifted[0] - shifted[1]) / (2 * EPS))
        expected.append(analytic[coordinate])
    assert len(numeric) > 0  # the case has coordinates to check
    np.testing.assert_allclose(numeric, expected, rtol=RTOL, atol=ATOL)


def _projection(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------
# sparse_block_dot


@pytest.mark.parametrize("wrt", ["W", "h", "b"])
@pytest.mark.parametrize("case", GRAD_PRODUCT_CASES, ids=str)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sparse_block_dot_grad_by_finite_differences(impl, case, wrt):
    a = case.make(np.float64)
    G = _projection(case.out_shape, case.seed)
    args = a.dot()

    def loss(W, h, input_idx, b, output_idx):
        return np.sum(G * impl.sparse_block_dot(W, h, input_idx, b, output_idx))

    grads = impl.sparse_block_dot_grad(G, *args)

    position = {"W": 0, "h": 1, "b": 3}[wrt]
    assert_gradient(loss, args, position, getattr(grads, wrt), case.seed)


# ---------------------------------------------------------------------------
# softmax

SOFTMAX_SHAPES = [((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -3)]


@pytest.mark.parametrize("shape, axis", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_softmax_grad_by_finite_differences(impl, shape, axis):
    x = 2.0 * _projection(shape, 1)
    G = _projection(shape, 2)

    def loss(x):
        return np.sum(G * impl.softmax(x, axis=axis))

    analytic = impl.softmax_grad(G, impl.softmax(x, axis=axis), axis=axis)

    assert_gradient(loss, (x,), 0, analytic, seed=3)


# ---------------------------------------------------------------------------
# h_softmax

HS_ARGUMENTS = {"x": 0, "W1": 5, "b1": 6, "W2": 7, "b2": 8}


@pytest.mark.parametrize("wrt", list(HS_ARGUMENTS))
@pytest.mark.parametrize("mode", ["full", "target"])
@pytest.mark.parametrize("case", GRAD_HSOFTMAX_CASES, ids=str)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_h_softmax_grad_by_finite_differences(impl, case, mode, wrt):
    a = case.make(np.float64)
    target = a.target if mode == "target" else None
    G = _projection((case.batch,) if target is not None else (case.batch, case.n_outputs),
                    case.seed)
    args = a.call()

    def loss(*call):
        return np.sum(G * impl.h_softmax(*call, target=target))

    grads = impl.h_softmax_grad(G, *args, target=target)

    assert_gradient(loss, args, HS_ARGUMENTS[wrt], getattr(grads, wrt), case.seed)


@pytest.mark.parametrize("wrt", list(HS_ARGUMENTS))
@pytest.mark.parametrize("case", GRAD_HSOFTMAX_CASES, ids=str)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_h_softmax_nll_grad_by_finite_differences(impl, case, wrt):
    a = case.make(np.float64)
    G = _projection((case.batch,), case.seed)
    args = a.call()

    def loss(*call):
        return np.sum(G * impl.h_softmax_nll(*call, a.target))

    grads = impl.h_softmax_nll_grad(G, *args, a.target)

    assert_gradient(loss, args, HS_ARGUMENTS[wrt], getattr(grads, wrt), case.seed)
