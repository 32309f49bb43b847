"""Dask arrays in, Dask arrays out (``nbsparse._dask``).

- Every op equals the NumPy path, lazily, on the threaded scheduler and on a
  two-process ``distributed`` cluster, whichever arguments are Dask arrays and
  however the batch is chunked; results have the right chunks, dtype and meta.
- Accumulating results are tree sums: for 64 chunks no task depends on more than
  ``split_every`` partial sums, and a NumPy weight is one graph key, not one copy per task.
- Errors: kinds, dtypes and shapes at once with the NumPy path's messages; chunking
  along a non-batch axis is a ValueError; an index error is raised by the chunk
  that holds it, naming the row in the whole batch.
- ``import nbsparse`` does not import Dask.
"""

import pickle
import subprocess
import sys
from dataclasses import dataclass, replace

import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _dask_graph
from nbsparse._optable import OPS, Sizes, problem
from tests.support.assertions import assert_matches
from tests.support.rows import OpRow

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

BATCH, CHUNK = 50, 13  # chunks 13, 13, 13, 11: a ragged last one
CHUNKS = (13, 13, 13, 11)


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case(OpRow):
    """A row of the op table on a seeded NumPy problem of ``sizes``."""

    op: object
    sizes: Sizes = Sizes(batch=BATCH, softmax_width=9, axis=1)

    @property
    def batch(self):
        """The arguments with a batch axis: chunked along it; the others are used whole."""
        return self.op.batch

    def numpy_args(self, dtype=np.float64):
        return self.op.kwargs(problem(self.sizes, dtype, np.random.default_rng(7)))

    def call(self, args):
        return self.func(**args)


CASES = [Case(op) for op in OPS]
CASE = {c.name: c for c in CASES}
by_case = pytest.mark.parametrize("case", CASES, ids=str)

ACCUMULATING = {op.name: list(op.summed) for op in OPS if op.accumulates}
"""Result fields summed over the chunks (None: the result itself), by op."""


def _chunked(a, rows):
    """``a`` as a Dask array chunked along axis 0 only, in ``rows``-row chunks."""
    return da.from_array(a, chunks=(rows, *a.shape[1:]))


def to_dask(case, args, mode):
    """The arguments of ``case`` with some of them made Dask arrays.

    ``batch``: every batch argument, chunked by ``CHUNK`` rows; the weights stay NumPy.
    ``all``: the weights too, as one-chunk Dask arrays.
    ``one``: only the first batch argument; the others stay NumPy (and follow its chunks).
    ``unaligned``: batch arguments chunked differently (13 and 20 rows): aligned by the call.
    """
    out = dict(args)
    for k, name in enumerate(case.batch):
        a = args[name]
        if a is None or (mode == "one" and k > 0):
            continue
        out[name] = _chunked(a, 20 if mode == "unaligned" and k % 2 else CHUNK)
    if mode == "all":
        for name, a in args.items():
            if isinstance(a, np.ndarray) and name not in case.batch:
                out[name] = da.from_array(a, chunks=-1)
    return out


def fields(result):
    """A result's arrays: the array itself or every field of a gradient tuple."""
    return list(result) if isinstance(result, tuple) else [result]


def assert_same(lazy, expected):
    """``lazy`` is made of Dask arrays with the shapes and dtypes of ``expected``'s arrays."""
    if isinstance(expected, tuple):
        assert type(lazy) is type(expected)  # the same named tuple, of Dask arrays
    for r, e in zip(fields(lazy), fields(expected)):
        assert isinstance(r, da.Array), type(r)
        assert (r.shape, r.dtype) == (e.shape, e.dtype)


def compute(lazy, scheduler):
    return dask.compute(*fields(lazy), scheduler=scheduler)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, started once for this module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c:
        yield c


# --------------------------------------------------------------------------- values
@by_case
@pytest.mark.parametrize("mode", ["batch", "all", "one", "unaligned"])
def test_threaded_matches_numpy(case, mode):
    args = case.numpy_args()
    expected = case.call(args)
    lazy = case.call(to_dask(case, args, mode))
    assert_same(lazy, expected)
    for r, e in zip(compute(lazy, "threads"), fields(expected)):
        assert_matches(r, e, e.dtype)


@by_case
def test_distributed_matches_numpy(case, client):
    args = case.numpy_args()
    expected = case.call(args)
    lazy = case.call(to_dask(case, args, "batch"))
    for r, e in zip(compute(lazy, client), fields(expected)):
        assert_matches(r, e, e.dtype)


@by_case
def test_result_chunks_dtype_and_meta(case):
    """Batch results keep the batch chunks, summed ones are one chunk; dtype from mixed floats."""
    args = {k: a.astype(np.float32) if k in case.batch and a is not None and a.dtype.kind == "f" else a
            for k, a in case.numpy_args().items()}
    expected = case.call(args)
    lazy = case.call(to_dask(case, args, "batch"))
    summed = ACCUMULATING.get(case.name, [])
    names = lazy._fields if isinstance(lazy, tuple) else [None]
    for name, r, e in zip(names, fields(lazy), fields(expected)):
        assert r.dtype == e.dtype
        assert type(r._meta) is np.ndarray and r._meta.ndim == e.ndim
        if name in summed:
            assert r.chunks == tuple((n,) for n in e.shape)
        else:
            assert r.chunks == (CHUNKS, *((n,) for n in e.shape[1:]))
            for i, rows in enumerate(CHUNKS):  # the declared chunks are the computed ones
                assert r.blocks[i].compute(scheduler="sync").shape == (rows, *e.shape[1:])


def test_softmax_chunked_along_other_axes():
    x = np.random.default_rng(0).standard_normal((6, 40))
    lazy = nbs.softmax(da.from_array(x, chunks=(6, 7)), axis=0)
    assert lazy.chunks == ((6,), (7, 7, 7, 7, 7, 5))
    assert_matches(lazy.compute(scheduler="threads"), nbs.softmax(x, axis=0), np.float64)


def test_every_chunk_is_computed_once_per_gradient_call(monkeypatch):
    """The three fields of ``sparse_block_dot_grad`` share one task per chunk; keywords reach it."""
    calls = []
    original = _dask_graph.run_chunk

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(_dask_graph, "run_chunk", counting)
    case = CASE["sparse_block_dot_grad"]
    lazy = nbs.sparse_block_dot_grad(**to_dask(case, case.numpy_args(), "batch"), deterministic=True)
    compute(lazy, "threads")
    assert calls == [{"deterministic": True}] * len(CHUNKS)


# --------------------------------------------------------------------------- graph shape
def tree_shape(result):
    """``(chunk tasks, widest sum, levels)`` of a tree-summed Dask array.

    Chunk tasks: the tasks of the layer that runs the op on each chunk. Widest
    sum: the most direct dependencies of a summing task. Levels: the most summing
    tasks on a path from a chunk task to the result.
    """
    graph = result.__dask_graph__()
    deps = graph.get_all_dependencies()
    parts = next(n for n in graph.dependencies[result.name] if "-parts-" in n)
    chunk_tasks = set(graph.layers[parts])
    own = {k for k in deps if k[0].startswith(result.name)}
    picks = {k for k in own if len(deps[k]) == 1 and deps[k] <= chunk_tasks}  # a field of one chunk
    sums = own - picks

    def levels(key):
        return 1 + max((levels(d) for d in deps[key] if d in sums), default=0)

    def reaches(key):
        return {key} if key in chunk_tasks else set().union(*(reaches(d) for d in deps[key]))

    final = (result.name, *(0,) * result.ndim)
    assert reaches(final) == chunk_tasks  # the total is over every chunk
    return chunk_tasks, max(len(deps[k]) for k in sums), levels(final)


def _64_chunks(case):
    """``case``'s arguments with a batch of 256 rows, as Dask arrays of 64 chunks of 4 rows."""
    rows = 256
    args = replace(case, sizes=replace(case.sizes, batch=rows)).numpy_args()
    return {k: _chunked(a, 4) if k in case.batch else a for k, a in args.items()}


@pytest.mark.parametrize("name", list(ACCUMULATING))
@pytest.mark.parametrize("split_every", [None, 4])
def test_accumulations_are_tree_sums(name, split_every):
    case = CASE[name]
    with dask.config.set({"nbsparse.split_every": split_every} if split_every else {}):
        lazy = case.call(_64_chunks(case))
    fan_in = split_every or 8
    root = 1 if name == "sparse_block_outer" else 0  # o joins the last sum
    results = [lazy] if ACCUMULATING[name] == [None] else [getattr(lazy, f) for f in ACCUMULATING[name]]
    for result in results:
        chunk_tasks, widest, levels = tree_shape(result)
        assert len(chunk_tasks) == 64
        assert widest <= fan_in + root < 64  # no task waits for every chunk
        assert levels == (2 if fan_in == 8 else 3)  # 64 -> 8 -> 1, or 64 -> 16 -> 4 -> 1


@pytest.mark.parametrize("name", ["sparse_block_outer", "sparse_block_dot_grad"])
def test_tree_sum_over_64_chunks_matches_numpy(name):
    case = CASE[name]
    dask_args = _64_chunks(case)
    expected = case.call({k: np.asarray(a) if isinstance(a, da.Array) else a for k, a in dask_args.items()})
    for r, e in zip(compute(case.call(dask_args), "threads"), fields(expected)):
        assert_matches(r, e, np.float64)


@pytest.mark.parametrize("value", [1, 0, "8", 2.0])
def test_split_every_must_be_an_integer_of_at_least_two(value):
    case = CASE["sparse_block_dot_grad"]
    args = to_dask(case, case.numpy_args(), "batch")
    with dask.config.set({"nbsparse.split_every": value}), pytest.raises(ValueError, match="split_every"):
        case.call(args)


@pytest.mark.parametrize("name", ["sparse_block_dot", "sparse_block_dot_grad"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy_W", "dask_W"])
def test_weights_are_one_graph_key(name, as_dask):
    """A 5 MiB W is stored once in the graph of 64 chunks, not once per task."""
    case = CASE[name]
    args = _64_chunks(case)
    W = np.random.default_rng(2).standard_normal((2000, 6, 7, 8))  # indices use the first 5 blocks
    args["W"] = da.from_array(W, chunks=-1) if as_dask else W
    graph = {}
    for r in fields(case.call(args)):
        graph.update(r.__dask_graph__())
    others = sum(a.nbytes for k, a in args.items() if k != "W" and isinstance(a, da.Array))
    assert W.nbytes < len(pickle.dumps(graph)) < W.nbytes + others + 100_000


# --------------------------------------------------------------------------- errors
def _numpy_error(case, args, error):
    with pytest.raises(error) as info:
        case.call(args)
    return str(info.value)


BAD_INDEX = [  # (case, argument, position): a row past the first chunk, not first in its own
    ("sparse_block_gemv", "input_idx", (47, 1)),
    ("sparse_block_dot", "output_idx", (44, 3)),
    ("sparse_block_outer", "y_idx", (40, 0)),
    ("sparse_block_dot_grad", "input_idx", (49, 0)),
    ("h_softmax[target]", "target", (45,)),
    ("h_softmax_grad[target]", "target", (27,)),
]


@pytest.mark.parametrize(("name", "arg", "position"), BAD_INDEX, ids=[b[0] for b in BAD_INDEX])
@pytest.mark.parametrize("value", [-1, 99])
def test_index_error_is_raised_by_its_chunk_with_the_numpy_message(name, arg, position, value):
    case = CASE[name]
    args = case.numpy_args()
    args[arg] = args[arg].copy()
    args[arg][position] = value
    message = _numpy_error(case, args, IndexError)
    lazy = case.call(to_dask(case, args, "batch"))  # lazy: nothing is checked yet
    with pytest.raises(IndexError) as info:
        compute(lazy, "threads")
    assert str(info.value) == message
    assert str(position[0]) in message


def test_index_error_on_a_distributed_worker(client):
    case = CASE["sparse_block_dot"]
    args = case.numpy_args()
    args["input_idx"][31, 1] = 5
    message = _numpy_error(case, args, IndexError)
    with pytest.raises(IndexError) as info:
        compute(case.call(to_dask(case, args, "batch")), client)
    assert str(info.value) == message == "input_idx[31, 1] = 5 is outside [0, 5) (W has 5 input blocks)"


def test_target_of_shape_batch_by_one():
    case = CASE["h_softmax[target]"]
    args = case.numpy_args()
    args["target"] = args["target"].reshape(BATCH, 1)
    assert_matches(case.call(to_dask(case, args, "batch")).compute(scheduler="threads"),
                   case.call(args), np.float64)
    args["target"][30, 0] = 9
    message = _numpy_error(case, args, IndexError)
    with pytest.raises(IndexError, match=r"^target\[30, 0\] = 9 is outside") as info:
        case.call(to_dask(case, args, "batch")).compute(scheduler="threads")
    assert str(info.value) == message


EAGER = [  # (case, argument, replacement, error): raised at the call, before any graph runs
    ("sparse_block_dot", "W", lambda a: a.astype(np.int32), TypeError),
    ("sparse_block_dot", "h", lambda a: a[:, :, :5], ValueError),
    ("sparse_block_dot", "b", lambda a: a.tolist(), TypeError),
    ("sparse_block_dot_grad", "grad_output", lambda a: a[:, :3], ValueError),
    ("sparse_block_outer", "x_idx", lambda a: a.astype(np.float64), TypeError),
    ("sparse_block_gemv", "o", lambda a: a[:-1], ValueError),
    ("h_softmax", "batch_size", lambda n: n + 1, ValueError),
    ("h_softmax_grad[target]", "grad_output", lambda a: a[:, None], ValueError),
    ("softmax", "axis", lambda axis: 2, ValueError),
    ("softmax_grad", "y", lambda a: a[:, :4], ValueError),
    ("h_softmax_nll", "target", lambda a: None, TypeError),
    ("h_softmax_nll_grad", "target", lambda a: None, TypeError),
]


@pytest.mark.parametrize(("name", "arg", "bad", "error"), EAGER, ids=[f"{e[0]}-{e[1]}" for e in EAGER])
def test_argument_errors_are_raised_at_the_call_with_the_numpy_message(name, arg, bad, error):
    case = CASE[name]
    args = case.numpy_args()
    args[arg] = bad(args[arg])
    message = _numpy_error(case, args, error)
    with pytest.raises(error) as info:
        case.call(to_dask(case, args, "batch"))
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["sparse_block_gemv", "sparse_block_outer"])
def test_inplace_is_refused(name):
    case = CASE[name]
    with pytest.raises(ValueError, match="inplace=True cannot write into a Dask array"):
        case.func(**to_dask(case, case.numpy_args(), "batch"), inplace=True)


def test_chunks_along_a_non_batch_axis_are_refused():
    case = CASE["sparse_block_dot"]
    args = to_dask(case, case.numpy_args(), "batch")
    args["h"] = args["h"].rechunk((CHUNK, 1, 7))
    with pytest.raises(ValueError, match=r"^h is chunked along axis 1 \(chunks \(1, 1\)\), but only "
                                         r"the batch axis \(0\) may be chunked: rechunk it first, "
                                         r"e\.g\. h\.rechunk\(\{1: -1\}\)$"):
        case.call(args)


def test_chunked_weights_are_refused():
    case = CASE["sparse_block_dot_grad"]
    args = to_dask(case, case.numpy_args(), "batch")
    args["W"] = da.from_array(args["W"], chunks=(2, 6, 7, 8))
    with pytest.raises(ValueError, match=r"^W is chunked along axis 0 .* used whole by every batch chunk"):
        case.call(args)


@pytest.mark.parametrize("name", ["softmax", "softmax_grad"])
def test_softmax_chunked_along_its_axis_is_refused(name):
    case = CASE[name]
    args = to_dask(case, case.numpy_args(), "one")
    first = case.batch[0]
    args[first] = args[first].rechunk((CHUNK, 3))
    with pytest.raises(ValueError, match=f"^{first} is chunked along axis 1 .* the softmax normalises "
                                         "along axis 1"):
        case.call(args)


def test_unknown_chunk_sizes_are_refused():
    x = da.from_array(np.ones((10, 3)), chunks=(5, 3))
    x = x[x[:, 0] > 0]  # a boolean mask: the row count is unknown until computed
    with pytest.raises(ValueError, match=r"^x has unknown chunk sizes .* x\.compute_chunk_sizes\(\)"):
        nbs.softmax(x)


# --------------------------------------------------------------------------- device chunks
@pytest.mark.cuda
def test_device_weights_with_host_chunks_are_a_type_error():
    from numba import cuda

    case = CASE["sparse_block_dot"]
    args = to_dask(case, case.numpy_args(), "batch")
    args["W"] = cuda.to_device(args["W"])
    with pytest.raises(TypeError, match="cannot mix host and device arrays in one call: "
                                        "h, input_idx, b, output_idx on the host .*; W on the GPU"):
        case.call(args)


def _fake_cupy_dask(cp, a, rows):
    """A Dask array of fake-CuPy chunks (a real CuPy-backed Dask array needs a GPU)."""
    name = f"fake-cupy-{id(a)}"
    starts = range(0, a.shape[0], rows)
    tail = (0,) * (a.ndim - 1)
    graph = {(name, i, *tail): cp.ndarray(np.ascontiguousarray(a[s:s + rows])) for i, s in enumerate(starts)}
    chunks = (tuple(min(rows, a.shape[0] - s) for s in starts), *((n,) for n in a.shape[1:]))
    return da.Array(graph, name, chunks, meta=cp.ndarray(np.empty((0,) * a.ndim, a.dtype)))


@pytest.mark.cuda
def test_cupy_chunks_run_on_the_gpu_backend(monkeypatch):
    """Each chunk goes through the public function, so a CuPy chunk gets the GPU kernels."""
    from tests.support.device import make_fake_cupy

    cp = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    case = CASE["sparse_block_dot"]
    args = case.numpy_args()
    dask_args = {k: _fake_cupy_dask(cp, a, CHUNK if k in case.batch else a.shape[0])
                 for k, a in args.items()}
    lazy = case.call(dask_args)
    graph = lazy.__dask_graph__()
    blocks = dask.get(graph, [(lazy.name, i, 0, 0) for i in range(len(CHUNKS))])
    assert all(isinstance(b, cp.ndarray) for b in blocks)
    assert_matches(np.concatenate([b.get() for b in blocks]), case.call(args), np.float64)


# --------------------------------------------------------------------------- imports
def test_import_and_numpy_calls_do_not_import_dask():
    code = """
import sys
import numpy as np
import nbsparse as nbs
nbs.softmax(np.ones(3))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
assert not loaded, loaded
assert "nbsparse._dask" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- benchmark
def test_benchmark_graph_shape_for_64_chunks():
    from nbsparse._dask_bench import BATCH_ARGS, graph_shape, problem

    args = problem(256, blocks=4, size=8, window=2)
    lazy = {k: _chunked(a, 4) if k in BATCH_ARGS else a for k, a in args.items()}
    shape = graph_shape(nbs.sparse_block_dot_grad(**lazy))
    assert shape["chunk_tasks"] == 64
    assert shape["summing_tasks"] == 2 * (8 + 1)  # W and b: 8 partial sums and a total each
    assert (shape["levels"], shape["widest_sum"]) == (2, 8)


def test_benchmark_runs_on_the_cluster(client):
    from nbsparse._dask_bench import run

    rows, shape = run(client, batch=64, chunk_counts=[4], repeat=1, blocks=4, size=8, window=2)
    assert [(name, n) for name, n, _, _ in rows] == [
        ("in-process call", "-"), ("Dask, from client", 4), ("Dask, data on workers", 4)]
    assert all(t > 0 and ratio > 0 for _, _, t, ratio in rows)
    assert (shape["chunk_tasks"], shape["levels"]) == (4, 1)
