"""Inference through the hierarchy on device arrays: ``h_softmax_topk``, ``h_softmax_logprob``, ``h_softmax_sample``.

Under the strict CUDA simulator with blocks of 8 threads (tests/device/test_device.py
explains both), on tiny problems: the simulator runs a thread as a Python thread and
a barrier costs milliseconds, and the top-k kernel has dozens per visited class.
Against the NumPy reference (top-k, log-probabilities) and against the CPU kernels
(the sampler draws the same outputs as the CPU for a seed).
"""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _reference
from nbsparse._hierarchy import Problem
from tests.support.assertions import FLOAT_DTYPES, tolerance
from tests.support.cases import HSoftmaxCase, bound_tie_hsoftmax, flat_hsoftmax, peaked_hsoftmax
from tests.support.device import SIM, is_device_array, to_device

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("strict_device_arrays", "small_blocks")]

CASES = [
    HSoftmaxCase("truncated", batch=4, n_in=3, n_classes=3, K=4, n_outputs=10, seed=41),
    HSoftmaxCase("truncated_whole_class", batch=3, n_in=2, n_classes=3, K=4, n_outputs=5, seed=42),
    HSoftmaxCase("wider_than_a_block", batch=2, n_in=3, n_classes=10, K=10, n_outputs=95, seed=46),
]
"""The last class cut to 2 slots; a class wholly past ``n_outputs``; classes, slots and ``k``
beyond the 8 threads of a block (each thread loops over several)."""


def on_device(args):
    """The positional arguments of ``args.call()`` with every array on the device."""
    return [to_device(v) if isinstance(v, np.ndarray) else v for v in args.call()]


def assert_unchanged(device_args, host_args):
    for d, a in zip(device_args, host_args.call()):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(d.copy_to_host(), a)


# --------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_topk_matches_the_sorted_full_distribution(case, dtype):
    a = case.make(dtype)
    args = on_device(a)
    for k in (1, 3, a.n_outputs):
        got = nbs.h_softmax_topk(*args, k)
        want_idx, want_lp = _reference.h_softmax_topk(*a.call(), k)
        assert isinstance(got, nbs.HSoftmaxTopK)
        assert is_device_array(got.indices) and is_device_array(got.log_probs)
        assert got.indices.dtype == np.intp and got.log_probs.dtype == dtype
        np.testing.assert_array_equal(got.indices.copy_to_host(), want_idx)
        np.testing.assert_allclose(got.log_probs.copy_to_host(), want_lp, **tolerance(dtype))
    assert_unchanged(args, a)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_topk_ties_go_to_the_lower_output_index(k):
    a = flat_hsoftmax(CASES[0], np.float64)
    got = nbs.h_softmax_topk(*on_device(a), k)
    np.testing.assert_array_equal(got.indices.copy_to_host(), np.broadcast_to(np.arange(k), (a.x.shape[0], k)))
    np.testing.assert_allclose(got.log_probs.copy_to_host(), np.log(1 / 12))  # the slot softmax spans all K


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_topk_reads_a_class_as_likely_as_the_bound(dtype):
    args = [to_device(a) if isinstance(a, np.ndarray) else a for a in bound_tie_hsoftmax(dtype)]
    got = nbs.h_softmax_topk(*args, 2)
    np.testing.assert_array_equal(got.indices.copy_to_host(), [[0, 2]])


@pytest.mark.parametrize("k", [1, 4, 10])
def test_topk_ranks_nan_last_as_the_reference_does(k):
    a = CASES[0].make(np.float64)
    x, W2 = a.x.copy(), a.W2.copy()
    x[0] = np.nan  # every output of row 0 NaN
    W2[1, 0, 0] = np.nan  # class 1's outputs NaN in every row
    call = (x, x.shape[0], a.n_outputs, a.n_classes, a.K, a.W1, a.b1, W2, a.b2)
    want_idx, want_lp = _reference.h_softmax_topk(*call, k)

    got = nbs.h_softmax_topk(*[to_device(v) if isinstance(v, np.ndarray) else v for v in call], k)

    np.testing.assert_array_equal(got.indices.copy_to_host(), want_idx)
    np.testing.assert_allclose(got.log_probs.copy_to_host(), want_lp, **tolerance(np.float64))


def classes_read(a, k):
    """``(indices, classes_read)`` on the host, from the device backend itself."""
    from nbsparse._device import DeviceBackend

    x = to_device(a.x)
    backend = DeviceBackend([x])
    dtype = np.result_type(a.x, a.W2)
    p = Problem(backend, dtype, x, a.n_outputs, a.n_classes, a.K, *(to_device(w) for w in (a.W1, a.b1, a.W2, a.b2)),
                None)
    indices, _, reads = backend.h_softmax_topk(p, k)
    return indices.copy_to_host(), reads.copy_to_host()


def test_topk_reads_one_class_block_of_a_peaked_distribution():
    a = peaked_hsoftmax(HSoftmaxCase("peaked", batch=3, n_in=3, n_classes=6, K=4, n_outputs=24, seed=43),
                        np.float64, leader=4)
    indices, reads = classes_read(a, 3)
    np.testing.assert_array_equal(reads, 1)
    assert (indices // a.K == 4).all()
    np.testing.assert_array_equal(indices, _reference.h_softmax_topk(*a.call(), 3)[0])
    _, more = classes_read(a, 6)  # more than class 4 holds: the bound comes from another class
    assert (more >= 2).all(), more


def test_topk_reads_every_class_of_a_flat_distribution():
    a = flat_hsoftmax(HSoftmaxCase("flat", batch=2, n_in=2, n_classes=4, K=2, n_outputs=8), np.float64)
    _, reads = classes_read(a, 3)
    np.testing.assert_array_equal(reads, 4)  # every class ties with the k-th output: a lower index may win


# --------------------------------------------------------------------------- log-probabilities
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_logprob_matches_the_reference_and_minus_the_nll(case, dtype):
    a = case.make(dtype)
    args = on_device(a)
    candidates = np.random.default_rng(44).integers(0, case.n_outputs, size=(case.batch, 4))
    candidates[:, 1] = candidates[:, 0]  # a repeat
    candidates[:, 2] = case.n_outputs - 1  # the truncated last class

    got = nbs.h_softmax_logprob(*args, to_device(candidates))

    assert is_device_array(got) and got.dtype == dtype and got.shape == candidates.shape
    np.testing.assert_allclose(got.copy_to_host(), _reference.h_softmax_logprob(*a.call(), candidates),
                               **tolerance(dtype))
    one = nbs.h_softmax_logprob(*args, to_device(a.target.reshape(-1, 1)))
    np.testing.assert_allclose(one.copy_to_host()[:, 0], -nbs.h_softmax_nll(*a.call(), a.target),
                               **tolerance(dtype))
    assert_unchanged(args, a)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_logprob_stays_finite_where_the_probability_underflows(dtype):
    x = np.ones((1, 2), dtype)
    W1, b1 = np.zeros((2, 2), dtype), np.array([0.0, 800.0], dtype)
    W2, b2 = np.zeros((2, 2, 2), dtype), np.zeros((2, 2), dtype)
    args = [to_device(v) for v in (x, W1, b1, W2, b2)]
    got = nbs.h_softmax_logprob(args[0], 1, 4, 2, 2, *args[1:], to_device(np.array([[1, 2]])))
    np.testing.assert_allclose(got.copy_to_host(), [[-800.0 - np.log(2.0), -np.log(2.0)]], **tolerance(dtype))


# --------------------------------------------------------------------------- sampling
def skewed(dtype, n_rows=24):
    """Rows with the last class truncated to 2 of its 4 slots and most of its slot mass past
    ``n_outputs`` (so some draws are rejected and redrawn), and a row of NaN activations."""
    rng = np.random.default_rng(45)
    x = rng.standard_normal((n_rows, 2)).astype(dtype)
    x[3] = np.nan
    W1 = (0.5 * rng.standard_normal((2, 3))).astype(dtype)
    b1 = np.array([0.0, -0.7, 0.9], dtype)
    W2 = (0.3 * rng.standard_normal((3, 2, 4))).astype(dtype)
    b2 = np.array([[0.0, 1.0, -1.0, 0.5], [0.2, 0.0, -0.5, 1.5], [-0.3, 0.4, 1.2, 0.8]], dtype)
    return (x, n_rows, 10, 3, 4, W1, b1, W2, b2)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_sample_draws_what_the_cpu_draws_for_a_seed(dtype):
    call = skewed(dtype)
    args = [to_device(v) if isinstance(v, np.ndarray) else v for v in call]
    cpu = nbs.h_softmax_sample(*call, seed=2024)
    assert cpu[3] == 0 and len(set(cpu.tolist())) >= 5  # guard: the NaN row, and varied draws

    got = nbs.h_softmax_sample(*args, seed=2024)

    assert is_device_array(got) and got.dtype == np.intp and got.shape == (call[1],)
    np.testing.assert_array_equal(got.copy_to_host(), cpu)
    again = nbs.h_softmax_sample(*args, seed=2024)
    np.testing.assert_array_equal(again.copy_to_host(), cpu)
    other = nbs.h_softmax_sample(*args, seed=2**64 - 1)
    np.testing.assert_array_equal(other.copy_to_host(), nbs.h_softmax_sample(*call, seed=2**64 - 1))


def test_sample_redraws_past_n_outputs_as_the_cpu_does():
    # Class 2 (truncated to slots 0, 1) holds nearly all the mass, nearly all of it past n_outputs:
    # almost every first draw is rejected; the redraw stays in class 2, on its valid slot 1.
    x = np.ones((8, 2))
    W1, b1 = np.zeros((2, 3)), np.array([0.0, -1e4, 10.0])
    W2 = np.zeros((3, 2, 4))
    b2 = np.array([[0.0, 0.0, -1e4, 0.0], [0.0] * 4, [-1e4, 0.0, 5.0, 5.0]])
    call = (x, 8, 10, 3, 4, W1, b1, W2, b2)
    args = [to_device(v) if isinstance(v, np.ndarray) else v for v in call]
    cpu = nbs.h_softmax_sample(*call, seed=7)
    assert set(cpu.tolist()) <= {0, 1, 3, 9} and (cpu == 9).sum() >= 6
    np.testing.assert_array_equal(nbs.h_softmax_sample(*args, seed=7).copy_to_host(), cpu)


# --------------------------------------------------------------------------- kinds, empty batch, bad input
@pytest.mark.skipif(not SIM, reason="host memory behind a CUDA array interface: simulator only")
def test_cupy_in_cupy_out(fake_cupy):
    a = CASES[0].make(np.float32)
    args = [fake_cupy.ndarray(v.copy()) if isinstance(v, np.ndarray) else v for v in a.call()]
    top = nbs.h_softmax_topk(*args, 2)
    candidates = fake_cupy.ndarray(a.target.reshape(-1, 1).copy())
    results = (top.indices, top.log_probs, nbs.h_softmax_logprob(*args, candidates),
               nbs.h_softmax_sample(*args, seed=3))
    for r in results:
        assert isinstance(r, fake_cupy.ndarray), type(r)
    np.testing.assert_array_equal(top.indices.memory, _reference.h_softmax_topk(*a.call(), 2)[0])
    np.testing.assert_array_equal(results[3].memory, nbs.h_softmax_sample(*a.call(), seed=3))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_an_empty_batch_gives_empty_device_results(dtype):
    a = HSoftmaxCase("batch_0", batch=0, n_outputs=10).make(dtype)
    args = on_device(a)
    top = nbs.h_softmax_topk(*args, 4)
    assert is_device_array(top.indices) and top.indices.shape == (0, 4) and top.log_probs.dtype == dtype
    lp = nbs.h_softmax_logprob(*args, to_device(np.zeros((0, 3), np.intp)))
    assert is_device_array(lp) and lp.shape == (0, 3) and lp.dtype == dtype
    draws = nbs.h_softmax_sample(*args, seed=0)
    assert is_device_array(draws) and draws.shape == (0,) and draws.dtype == np.intp


def test_bad_input_on_device_raises_as_on_the_host():
    a = CASES[0].make(np.float64)
    args = on_device(a)
    with pytest.raises(ValueError, match="k must be <= n_outputs = 10"):
        nbs.h_softmax_topk(*args, 11)
    with pytest.raises(ValueError, match="k must be >= 1"):
        nbs.h_softmax_topk(*args, 0)
    candidates = np.zeros((4, 3), np.int32)
    candidates[2, 1] = 10
    with pytest.raises(IndexError, match=r"^candidates\[2, 1\] = 10 is outside \[0, 10\) \(n_outputs = 10\)$"):
        nbs.h_softmax_logprob(*args, to_device(candidates))
    with pytest.raises(TypeError, match="candidates"):
        nbs.h_softmax_logprob(*args, to_device(np.zeros((4, 3))))
    with pytest.raises(ValueError, match="candidates"):
        nbs.h_softmax_logprob(*args, to_device(np.zeros((3, 2), np.intp)))
    with pytest.raises(ValueError, match="seed"):
        nbs.h_softmax_sample(*args, seed=-1)
    mixed = list(args)
    mixed[0] = a.x  # host x, device weights
    with pytest.raises(TypeError, match="x"):
        nbs.h_softmax_sample(*mixed, seed=0)
    with pytest.raises(TypeError, match="candidates"):
        nbs.h_softmax_logprob(*args, candidates)  # host candidates
    assert_unchanged(args, a)
