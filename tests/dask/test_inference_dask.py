"""Inference through the hierarchy on Dask arrays (``nbsparse._dask``).

- ``h_softmax_topk``, ``h_softmax_logprob`` and ``h_softmax_sample`` equal the NumPy
  path, lazily, however ``x`` (and ``candidates``) are chunked along the batch;
  the draws of ``h_softmax_sample`` are the NumPy path's for the same seed.
- Errors in the arguments are raised at the call with the NumPy path's messages; a
  bad candidate is raised by its chunk naming the row in the whole batch.
"""

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse._cpu.inference import seed_for_rows
from tests.support.assertions import FLOAT_DTYPES, assert_matches

da = pytest.importorskip("dask.array")

BATCH, N_IN, N_CLASSES, K, N_OUTPUTS = 50, 6, 5, 4, 18  # the last class truncated to 2 of 4 slots
CHUNKINGS = [13, 50, (1, 30, 19)]


def _problem(dtype=np.float64, batch=BATCH):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((batch, N_IN)).astype(dtype)
    W1 = rng.standard_normal((N_IN, N_CLASSES)).astype(dtype)
    b1 = rng.standard_normal(N_CLASSES).astype(dtype)
    W2 = rng.standard_normal((N_CLASSES, N_IN, K)).astype(dtype)
    b2 = rng.standard_normal((N_CLASSES, K)).astype(dtype)
    candidates = rng.integers(0, N_OUTPUTS, (batch, 3))
    return x, (batch, N_OUTPUTS, N_CLASSES, K, W1, b1, W2, b2), candidates


def _lazy(a, chunks):
    return da.from_array(a, chunks=(chunks, *a.shape[1:]))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("k", [1, 5, N_OUTPUTS])
def test_topk_matches_numpy(dtype, chunks, k):
    x, model, _ = _problem(dtype)
    expected = nbs.h_softmax_topk(x, *model, k)
    lazy = nbs.h_softmax_topk(_lazy(x, chunks), *model, k)
    assert type(lazy) is nbs.HSoftmaxTopK
    assert lazy.indices.chunks[0] == _lazy(x, chunks).chunks[0]
    assert (lazy.indices.dtype, lazy.log_probs.dtype) == (np.intp, np.dtype(dtype))
    np.testing.assert_array_equal(lazy.indices.compute(scheduler="threads"), expected.indices)
    assert_matches(lazy.log_probs.compute(scheduler="threads"), expected.log_probs, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(("x_chunks", "candidate_chunks"), [(13, 13), (13, 20), (50, None)], ids=str)
def test_logprob_matches_numpy(dtype, x_chunks, candidate_chunks):
    x, model, candidates = _problem(dtype)
    expected = nbs.h_softmax_logprob(x, *model, candidates)
    lazy_candidates = candidates if candidate_chunks is None else _lazy(candidates, candidate_chunks)
    lazy = nbs.h_softmax_logprob(_lazy(x, x_chunks), *model, lazy_candidates)
    assert (lazy.shape, lazy.dtype) == (expected.shape, expected.dtype)
    assert_matches(lazy.compute(scheduler="threads"), expected, dtype)


def test_logprob_with_numpy_x_and_chunked_candidates():
    x, model, candidates = _problem()
    lazy = nbs.h_softmax_logprob(x, *model, _lazy(candidates, 7))
    assert lazy.chunks[0] == (7,) * 7 + (1,)
    assert_matches(lazy.compute(), nbs.h_softmax_logprob(x, *model, candidates), np.float64)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("seed", [0, 123, 2**64 - 1])
def test_sample_draws_the_numpy_draws_however_chunked(chunks, seed):
    x, model, _ = _problem()
    # A flat model: a row's draw depends on its uniforms, so shifted streams would show.
    model = (*model[:4], model[4] * 0.1, model[5], model[6] * 0.1, model[7])
    expected = nbs.h_softmax_sample(x, *model, seed=seed)
    lazy = nbs.h_softmax_sample(_lazy(x, chunks), *model, seed=seed)
    assert (lazy.shape, lazy.dtype) == ((BATCH,), np.intp)
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), expected)
    assert len(set(expected.tolist())) > 5  # the draws vary from row to row


def test_sample_without_a_seed_draws_once_per_graph():
    x, model, _ = _problem()
    lazy = nbs.h_softmax_sample(_lazy(x, 13), *model)
    np.testing.assert_array_equal(lazy.compute(), lazy.compute())


@pytest.mark.parametrize("first_row", [0, 1, 13, 49])
def test_seed_for_rows_shifts_the_rows(first_row):
    x, model, _ = _problem()
    rest = BATCH - first_row
    whole = nbs.h_softmax_sample(x, *model, seed=99)
    part = nbs.h_softmax_sample(x[first_row:], rest, *model[1:], seed=seed_for_rows(99, first_row))
    np.testing.assert_array_equal(part, whole[first_row:])


EAGER = [  # (function, replacement of the arguments, error): raised at the call, before any graph runs
    ("topk", lambda a: {**a, "k": 0}, ValueError),
    ("topk", lambda a: {**a, "k": N_OUTPUTS + 1}, ValueError),
    ("topk", lambda a: {**a, "k": 2.0}, TypeError),
    ("logprob", lambda a: {**a, "candidates": a["candidates"].astype(np.float64)}, TypeError),
    ("logprob", lambda a: {**a, "candidates": a["candidates"][:, 0]}, ValueError),
    ("logprob", lambda a: {**a, "candidates": a["candidates"][:-1]}, ValueError),
    ("sample", lambda a: {**a, "seed": -1}, ValueError),
    ("sample", lambda a: {**a, "seed": "7"}, TypeError),
    ("sample", lambda a: {**a, "batch_size": BATCH + 1}, ValueError),
]


def _call(which, args, x):
    model = (args["batch_size"], *args["model"][1:])
    if which == "topk":
        return nbs.h_softmax_topk(x, *model, args["k"])
    if which == "logprob":
        return nbs.h_softmax_logprob(x, *model, args["candidates"])
    return nbs.h_softmax_sample(x, *model, seed=args["seed"])


@pytest.mark.parametrize(("which", "bad", "error"), EAGER, ids=[f"{e[0]}-{e[2].__name__}" for e in EAGER])
def test_argument_errors_are_raised_at_the_call_with_the_numpy_message(which, bad, error):
    x, model, candidates = _problem()
    args = bad({"model": model, "batch_size": BATCH, "k": 3, "candidates": candidates, "seed": 1})
    with pytest.raises(error) as numpy_info:
        _call(which, args, x)
    with pytest.raises(error) as dask_info:
        _call(which, args, _lazy(x, 13))
    assert str(dask_info.value) == str(numpy_info.value)


def test_a_bad_candidate_is_raised_by_its_chunk_naming_its_row_in_the_batch():
    x, model, candidates = _problem()
    candidates[37, 2] = N_OUTPUTS
    with pytest.raises(IndexError) as numpy_info:
        nbs.h_softmax_logprob(x, *model, candidates)
    lazy = nbs.h_softmax_logprob(_lazy(x, 13), *model, candidates)  # lazy: nothing is checked yet
    with pytest.raises(IndexError) as dask_info:
        lazy.compute(scheduler="threads")
    assert str(dask_info.value) == str(numpy_info.value)
    assert str(numpy_info.value).startswith("candidates[37, 2]")


def test_chunked_weights_are_refused():
    x, model, _ = _problem()
    W2 = da.from_array(model[6], chunks=(2, N_IN, K))
    with pytest.raises(ValueError, match="W2"):
        nbs.h_softmax_topk(_lazy(x, 13), *model[:6], W2, model[7], 3)
