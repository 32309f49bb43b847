"""softmax and softmax_grad against the NumPy oracle: shapes, axes, layouts, extremes."""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import (
    FLOAT_DTYPES,
    assert_empty,
    assert_matches,
    assert_new_array,
    assert_unchanged,
    in_result_dtype,
    snapshot,
    tolerance,
)
from tests.support.cases import SOFTMAX_CASES, relayout


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_softmax_matches_reference(case, dtype):
    x, _ = case.make(dtype)
    before = snapshot([x])
    expected = _reference.softmax(x, axis=case.axis)

    result = nbs.softmax(x, axis=case.axis)

    assert_matches(result, expected, dtype)
    np.testing.assert_allclose(result.sum(axis=case.axis), 1.0, **tolerance(dtype))
    assert_unchanged([x], before)
    assert_new_array(result, x)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_softmax_grad_matches_reference(case, dtype):
    x, g = case.make(dtype)
    y = _reference.softmax(x, axis=case.axis)
    before = snapshot([g, y])
    expected = _reference.softmax_grad(g, y, axis=case.axis)

    result = nbs.softmax_grad(g, y, axis=case.axis)

    assert_matches(result, expected, dtype)
    assert_unchanged([g, y], before)
    assert_new_array(result, g, y)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_of_1d_input_stays_1d(dtype):
    # Theano returned shape (1, n) for a vector.
    x = np.array([0.5, -1.0, 2.0, 0.0], dtype=dtype)

    result = nbs.softmax(x)
    grad = nbs.softmax_grad(np.ones_like(x), result)

    assert_matches(result, _reference.softmax(x), dtype)
    assert result.shape == (4,)
    assert grad.shape == (4,)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_default_axis_is_the_last(dtype):
    x = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(dtype)

    np.testing.assert_array_equal(nbs.softmax(x), nbs.softmax(x, axis=2))
    np.testing.assert_array_equal(nbs.softmax(x), nbs.softmax(x, axis=-1))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_of_a_transposed_input(dtype):
    x = np.random.default_rng(4).standard_normal((6, 5)).astype(dtype)

    assert_matches(nbs.softmax(x.T, axis=1), _reference.softmax(x, axis=0).T, dtype)
    assert_matches(nbs.softmax(x[::2, ::-1], axis=0),
                   _reference.softmax(np.ascontiguousarray(x[::2, ::-1]), axis=0), dtype)


# ---------------------------------------------------------------------------
# Extreme values


def test_softmax_subtracts_the_max_not_the_min():
    # exp(1000 - 0) overflows; exp(0 - 1000) underflows harmlessly.
    result = nbs.softmax(np.array([0.0, 1000.0]))

    assert_matches(result, np.array([0.0, 1.0]), np.float64)


@pytest.mark.parametrize("big", [1000.0, 1e4])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_of_huge_inputs_does_not_overflow(dtype, big):
    x = np.array([[big, 0.0, -big],
                  [big, big, big - 1.0],
                  [-big, -big, -big],
                  [big, big - np.log(3.0), 0.0]], dtype=dtype)

    result = nbs.softmax(x)

    assert np.isfinite(result).all()
    np.testing.assert_allclose(result.sum(axis=1), 1.0, **tolerance(dtype))
    assert_matches(result, _reference.softmax(x.astype(np.float64)).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_is_shift_invariant(dtype):
    x = np.random.default_rng(5).integers(-16, 16, size=(4, 6)) / 8.0  # x + 500 is exact

    shifted = nbs.softmax((x + 500.0).astype(dtype))

    assert_matches(shifted, _reference.softmax(x).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_gives_minus_inf_entries_zero_probability(dtype):
    x = np.array([[-np.inf, 0.0, 1.0, -np.inf],
                  [2.0, -np.inf, 2.0, -1.0],
                  [-np.inf, -np.inf, 5.0, -np.inf]], dtype=dtype)
    finite = np.where(np.isinf(x), 0.0, np.exp(np.where(np.isinf(x), 0.0, x).astype(np.float64)))
    expected = finite / finite.sum(axis=1, keepdims=True)

    result = nbs.softmax(x)

    assert_matches(result, expected, dtype)
    assert (result[np.isinf(x)] == 0).all()
    np.testing.assert_array_equal(result[2], [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_grad_of_a_saturated_softmax(dtype):
    y = nbs.softmax(np.array([[1e4, 0.0, -1e4]], dtype=dtype))
    g = np.array([[1.0, 2.0, 3.0]], dtype=dtype)

    result = nbs.softmax_grad(g, y)

    assert np.isfinite(result).all()
    assert_matches(result, _reference.softmax_grad(g, y), dtype)


# ---------------------------------------------------------------------------
# Zero-size arrays and dtypes

EMPTY = [((0,), 0), ((3, 0), -1), ((3, 0), 0), ((0, 4), -1), ((0, 4), 0), ((2, 0, 3), 1),
         ((2, 0, 3), -1)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape, axis", EMPTY, ids=str)
def test_zero_size_arrays_give_empty_results(shape, axis, dtype):
    x = np.zeros(shape, dtype=dtype)

    assert_empty(nbs.softmax(x, axis=axis), shape, dtype)
    assert_empty(nbs.softmax_grad(x, x, axis=axis), shape, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_keeps_the_dtype(dtype):
    x = np.linspace(-2, 2, 12).reshape(3, 4).astype(dtype)

    assert nbs.softmax(x).dtype == dtype
    assert nbs.softmax(x, axis=0).dtype == dtype


@pytest.mark.parametrize("g_dtype, y_dtype", [(np.float32, np.float64), (np.float64, np.float32)])
def test_softmax_grad_with_mixed_dtypes_gives_the_result_type(g_dtype, y_dtype):
    rng = np.random.default_rng(6)
    g = rng.standard_normal((3, 5)).astype(g_dtype)
    y = _reference.softmax(rng.standard_normal((3, 5))).astype(y_dtype)

    for axis in (0, 1):
        expected = _reference.softmax_grad(*in_result_dtype(g, y), axis=axis)
        assert_matches(nbs.softmax_grad(g, y, axis=axis), expected, np.float64)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_softmax_grad_of_a_strided_pair(dtype):
    rng = np.random.default_rng(7)
    y = relayout(_reference.softmax(rng.standard_normal((4, 5, 3)), axis=1).astype(dtype),
                 "strided")
    g = relayout(rng.standard_normal((4, 5, 3)).astype(dtype), "reversed")

    result = nbs.softmax_grad(g, y, axis=1)

    assert_matches(result, _reference.softmax_grad(g, y, axis=1), dtype)
