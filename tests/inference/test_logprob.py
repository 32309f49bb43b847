"""h_softmax_logprob: against the reference, h_softmax and h_softmax_nll; shared and repeated
candidates; every bad input."""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import FLOAT_DTYPES, assert_matches, assert_unchanged, snapshot
from tests.support.cases import HSOFTMAX_CASES, HSoftmaxCase


def _candidates(case, m, seed=0):
    return np.random.default_rng(seed).integers(0, case.n_outputs, size=(case.batch, m))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_logprob_matches_reference_and_h_softmax(case, dtype):
    args = case.make(dtype)
    candidates = _candidates(case, 5)
    before = snapshot([args.x, args.W1, args.b1, args.W2, args.b2, candidates])

    result = nbs.h_softmax_logprob(*args.call(), candidates)

    assert_matches(result, _reference.h_softmax_logprob(*args.call(), candidates), dtype)
    full = nbs.h_softmax(*args.call()).astype(np.float64)
    expected = np.log(full[np.arange(case.batch)[:, None], candidates])
    finite = np.isfinite(expected)
    assert_matches(result[finite].reshape(-1), expected[finite].reshape(-1).astype(dtype), dtype)
    assert_unchanged([args.x, args.W1, args.b1, args.W2, args.b2, candidates], before)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_one_candidate_is_minus_the_nll(case, dtype):
    args = case.make(dtype)
    result = nbs.h_softmax_logprob(*args.call(), args.target.reshape(-1, 1))
    assert_matches(result[:, 0], -nbs.h_softmax_nll(*args.call(), args.target), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_repeated_candidates_and_shared_classes_give_the_same_values(dtype):
    case = HSoftmaxCase("truncated", n_outputs=10, seed=1)  # classes 0..2 of K = 4
    args = case.make(dtype)
    # Row by row: a repeat, three candidates of one class, the truncated last class.
    candidates = np.tile(np.array([[5, 5, 4, 6, 7, 9, 8, 0]]), (case.batch, 1))
    result = nbs.h_softmax_logprob(*args.call(), candidates)
    assert np.array_equal(result[:, 0], result[:, 1])
    alone = np.stack([nbs.h_softmax_logprob(*args.call(), candidates[:, j:j + 1])[:, 0]
                      for j in range(candidates.shape[1])], axis=1)
    assert_matches(result, alone, dtype)
    assert_matches(result, _reference.h_softmax_logprob(*args.call(), candidates), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_logprob_stays_finite_where_the_probability_underflows(dtype):
    x = np.ones((1, 2), dtype)
    W1, b1 = np.zeros((2, 2), dtype), np.array([0.0, 800.0], dtype)
    W2, b2 = np.zeros((2, 2, 2), dtype), np.zeros((2, 2), dtype)
    result = nbs.h_softmax_logprob(x, 1, 4, 2, 2, W1, b1, W2, b2, np.array([[1, 2]]))
    assert_matches(result, np.array([[-800.0 - np.log(2.0), -np.log(2.0)]], dtype), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_batch_0_and_no_candidates(dtype):
    args = HSoftmaxCase("batch_0", batch=0, n_outputs=10).make(dtype)
    result = nbs.h_softmax_logprob(*args.call(), np.zeros((0, 3), np.intp))
    assert result.shape == (0, 3) and result.dtype == dtype
    args = HSoftmaxCase("exact").make(dtype)
    result = nbs.h_softmax_logprob(*args.call(), np.zeros((5, 0), np.int32))
    assert result.shape == (5, 0) and result.dtype == dtype


@pytest.mark.parametrize("bad, value", [(-1, -1), (10, 10)])
def test_candidate_out_of_range_names_its_position(bad, value):
    args = HSoftmaxCase("truncated", n_outputs=10, seed=1).make(np.float64)
    candidates = np.zeros((5, 3), np.intp)
    candidates[3, 2] = bad
    with pytest.raises(IndexError, match=rf"candidates\[3, 2\] = {value} is outside \[0, 10\)"):
        nbs.h_softmax_logprob(*args.call(), candidates)


def test_float_candidates_are_a_type_error():
    args = HSoftmaxCase("exact").make(np.float64)
    with pytest.raises(TypeError, match="candidates"):
        nbs.h_softmax_logprob(*args.call(), np.zeros((5, 2)))


@pytest.mark.parametrize("shape", [(5,), (4, 2), (5, 2, 1)])
def test_candidates_of_the_wrong_shape_are_a_value_error(shape):
    args = HSoftmaxCase("exact").make(np.float64)
    with pytest.raises(ValueError, match="candidates"):
        nbs.h_softmax_logprob(*args.call(), np.zeros(shape, np.intp))


def test_h_softmax_checks_come_first():
    args = HSoftmaxCase("exact").make(np.float64)
    call = list(args.call())
    call[1] = 4  # batch_size
    with pytest.raises(ValueError, match="batch_size"):
        nbs.h_softmax_logprob(*call, np.zeros((5, 1), np.intp))
