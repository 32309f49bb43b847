"""``h_softmax_topk``: exact against the full distribution sorted, and reading few class blocks where it can."""

import numba
import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _host, _reference, _team
from nbsparse._hierarchy import Problem
from tests.support.assertions import FLOAT_DTYPES, tolerance
from tests.support.cases import HSOFTMAX_CASES, HSoftmaxCase, bound_tie_hsoftmax, flat_hsoftmax, peaked_hsoftmax


def topk_and_reads(a, k):
    """``(indices, log_probs, classes_read)`` straight from the host backend."""
    dtype = np.result_type(a.x, a.W2)
    p = Problem(_host.HOST_BACKEND, dtype, a.x, a.n_outputs, a.n_classes, a.K, a.W1, a.b1, a.W2, a.b2, None)
    return _host.HOST_BACKEND.h_softmax_topk(p, k)


def assert_matches_reference(a, k, dtype):
    got = nbs.h_softmax_topk(*a.call(), k)
    want_idx, want_lp = _reference.h_softmax_topk(*a.call(), k)
    assert got.indices.dtype == np.intp and got.log_probs.dtype == dtype
    np.testing.assert_array_equal(got.indices, want_idx)
    np.testing.assert_allclose(got.log_probs, want_lp, **tolerance(dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_every_k_matches_the_sorted_full_distribution(case, dtype):
    a = case.make(dtype)
    for k in sorted({1, min(3, a.n_outputs), a.n_outputs}):
        assert_matches_reference(a, k, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_an_empty_batch_gives_empty_results(dtype):
    a = HSoftmaxCase("batch_0", batch=0, n_outputs=10).make(dtype)
    got = nbs.h_softmax_topk(*a.call(), 4)
    assert got.indices.shape == (0, 4) and got.log_probs.shape == (0, 4)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_ties_go_to_the_lower_output_index(k):
    a = flat_hsoftmax(HSoftmaxCase("flat", batch=3, n_in=4, n_classes=3, K=4, n_outputs=10), np.float64)
    got = nbs.h_softmax_topk(*a.call(), k)
    np.testing.assert_array_equal(got.indices, np.broadcast_to(np.arange(k), (3, k)))
    np.testing.assert_allclose(got.log_probs, np.log(1 / 12))  # the slot softmax spans all K slots


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_a_class_as_likely_as_the_bound_is_still_read(dtype):
    got = nbs.h_softmax_topk(*bound_tie_hsoftmax(dtype), 2)
    np.testing.assert_array_equal(got.indices, [[0, 2]])
    assert got.log_probs[0, 0] == got.log_probs[0, 1]  # an exact tie, decided by the index


def test_a_peaked_class_distribution_reads_one_class_block():
    a = peaked_hsoftmax(HSoftmaxCase("peaked", batch=16, n_in=8, n_classes=50, K=10, n_outputs=500, seed=3),
                        np.float64, leader=7)
    indices, _, reads = topk_and_reads(a, 5)
    assert (reads == 1).all(), reads  # class 7's 5 best outputs beat every other class's probability
    assert (indices // a.K == 7).all()
    assert_matches_reference(a, 5, np.float64)
    # The bound is the k-th output's: asking for more than class 7 holds reads more classes.
    _, _, more = topk_and_reads(a, 15)
    assert (more >= 2).all()


def test_a_flat_class_distribution_reads_every_class():
    a = flat_hsoftmax(HSoftmaxCase("flat", batch=2, n_in=3, n_classes=6, K=2, n_outputs=12), np.float64)
    _, _, reads = topk_and_reads(a, 3)
    # Ties: every class's probability equals the k-th output's: none can be skipped (a lower index may win).
    assert (reads == 6).all()


def test_same_bits_on_one_thread_and_on_two(monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    monkeypatch.setattr(_team, "ADAPTIVE", False)
    a = HSoftmaxCase("wide", batch=64, n_in=6, n_classes=20, K=7, n_outputs=137, seed=9).make(np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        two = nbs.h_softmax_topk(*a.call(), 12)
        numba.set_num_threads(1)
        one = nbs.h_softmax_topk(*a.call(), 12)
    finally:
        numba.set_num_threads(threads)
    assert two.indices.tobytes() == one.indices.tobytes()
    assert two.log_probs.tobytes() == one.log_probs.tobytes()


@pytest.mark.parametrize(("k", "error", "match"), [
    (0, ValueError, "k must be >= 1"),
    (11, ValueError, "k must be <= n_outputs = 10"),
    (2.0, TypeError, "k must be an integer"),
])
def test_a_bad_k_is_refused(k, error, match):
    a = HSoftmaxCase("truncated", n_outputs=10, seed=1).make(np.float64)
    with pytest.raises(error, match=match):
        nbs.h_softmax_topk(*a.call(), k)


