"""``python -m nbsparse._dask_bench``: ``sparse_block_dot_grad`` on Dask workers against one plain call.

A large batch (65,536 rows, 4 x 4 windows of 32 x 32 blocks, 64 x 64 blocks: a
16 MiB float32 ``W``) is run

- in-process: one ``nbs.sparse_block_dot_grad`` call on NumPy arrays (Numba's threads);
- on a ``LocalCluster`` of 2 worker processes with 1 thread each and
  ``NUMBA_NUM_THREADS=1`` (so both use the same cores), with the batch in 2, 8 or
  64 chunks, two ways:

  * ``from client``: every input is a NumPy array of this process and all three
    gradients come back to it (everything crosses process boundaries);
  * ``data on workers``: the batch inputs already live on the workers (persisted
    beforehand, as when each worker loads its own shard); ``W`` and ``b`` are sent
    with the graph, as after a weight update; ``dW`` and ``db`` come back, ``dh``
    stays on the workers for the layer below.

Each round times the plain call and then a Dask run; it prints the best times and
the median of the per-round ratios over ``--repeat`` rounds, then the shape of
the 64-chunk graph: tasks, summing levels and the widest task.
"""

import argparse
import os
import time
import warnings

import numpy as np


def problem(batch, dtype=np.float32, seed=0, blocks=64, size=32, window=4):
    """Seeded ``sparse_block_dot_grad`` arguments, by name."""
    rng = np.random.default_rng(seed)
    return {
        "grad_output": rng.standard_normal((batch, window, size)).astype(dtype),
        "W": rng.standard_normal((blocks, blocks, size, size)).astype(dtype),
        "h": rng.standard_normal((batch, window, size)).astype(dtype),
        "input_idx": rng.integers(0, blocks, (batch, window)),
        "b": rng.standard_normal((blocks, size)).astype(dtype),
        "output_idx": rng.integers(0, blocks, (batch, window)),
    }


BATCH_ARGS = ("grad_output", "h", "input_idx", "output_idx")


def _seconds(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def paired(repeat, plain, other):
    """``(best plain time, best other time, median of the per-round ratios)`` over ``repeat`` rounds.

    Each round times ``plain()`` and then ``other()``: on a shared machine whose
    load drifts, the ratio within a round is steadier than a ratio of best times.
    """
    rounds = [(_seconds(plain), _seconds(other)) for _ in range(repeat)]
    ratios = sorted(b / a for a, b in rounds)
    return min(a for a, _ in rounds), min(b for _, b in rounds), ratios[len(ratios) // 2]


def graph_shape(collections):
    """Tasks, chunk tasks, summing levels and fan-ins of the graph computing ``collections``.

    Chunk tasks run the op on one batch chunk. A summing task adds partial sums;
    ``levels`` is the most summing tasks on one path. ``widest_sum`` is the most
    direct dependencies of a summing task, ``widest`` of any task.
    """
    from dask.highlevelgraph import HighLevelGraph

    graph = HighLevelGraph.merge(*(c.__dask_graph__() for c in collections))
    deps = graph.get_all_dependencies()
    chunk_tasks = {k for name, layer in graph.layers.items() if "-parts-" in name for k in layer}
    downstream, frontier = set(), set(chunk_tasks)
    while frontier:
        frontier = {k for k, d in deps.items() if d & frontier} - downstream
        downstream |= frontier
    # A task taking one field of one chunk's result adds nothing.
    sums = {k for k in downstream if not (len(deps[k]) == 1 and deps[k] <= chunk_tasks)}
    memo = {}

    def levels(key):
        if key not in memo:
            memo[key] = (key in sums) + max((levels(d) for d in deps[key] if d in downstream), default=0)
        return memo[key]

    return {
        "tasks": len(deps),
        "chunk_tasks": len(chunk_tasks),
        "summing_tasks": len(sums),
        "levels": max(levels(k) for k in downstream),
        "widest_sum": max(len(deps[k]) for k in sums),
        "widest": max(len(d) for d in deps.values()),
    }


def run(client, batch, chunk_counts, repeat, dtype=np.float32, **sizes):
    """Time the plain call and the Dask runs on ``client``.

    Returns ``(rows, shape)``: rows of ``(run, chunks, best seconds, median ratio
    to the plain call)`` (see :func:`paired`) and the :func:`graph_shape` for the
    last of ``chunk_counts``. ``sizes`` go to :func:`problem`.
    """
    import dask
    import dask.array as da
    import distributed

    import nbsparse as nbs

    args = problem(batch, dtype, **sizes)
    nbs.sparse_block_dot_grad(**problem(64, dtype, **sizes))  # compile (or load) outside the timing
    def plain():
        nbs.sparse_block_dot_grad(**args)

    rows, shape, best_plain = [], None, float("inf")
    for n in chunk_counts:
        rows_per_chunk = -(-batch // n)
        lazy = {k: da.from_array(a, chunks=(rows_per_chunk, *a.shape[1:])) if k in BATCH_ARGS else a
                for k, a in args.items()}
        grads = nbs.sparse_block_dot_grad(**lazy)
        shape = graph_shape(grads)
        dask.compute(*grads, scheduler=client)  # warm the workers up: Numba's cache, connections
        a, t, ratio = paired(repeat, plain, lambda: dask.compute(*nbs.sparse_block_dot_grad(**lazy),
                                                                scheduler=client))
        best_plain = min(best_plain, a)
        rows.append(("Dask, from client", n, t, ratio))

        with client.as_current():  # distributed.wait asks for the current client
            on_workers = dict(zip(BATCH_ARGS, client.persist([lazy[k] for k in BATCH_ARGS])))
            distributed.wait(list(on_workers.values()))

            def step():
                g = nbs.sparse_block_dot_grad(**{**lazy, **on_workers})
                dW, db, dh = client.persist([g.W, g.b, g.h])  # one submission: one task per chunk
                dask.compute(dW, db, scheduler=client)
                distributed.wait(dh)

            a, t, ratio = paired(repeat, plain, step)
            best_plain = min(best_plain, a)
            client.cancel(list(on_workers.values()))
        rows.append(("Dask, data on workers", n, t, ratio))
    return [("in-process call", "-", best_plain, 1.0), *rows], shape


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nbsparse._dask_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 8, 64])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    opts = parser.parse_args(argv)

    import dask
    import distributed
    import numba

    # W and b travel inside each step's graph (they change every step); distributed
    # warns about every graph above 10 MB.
    warnings.filterwarnings("ignore", message="Sending large graph of size", category=UserWarning)
    print(f"nbsparse Dask benchmark: sparse_block_dot_grad, batch {opts.batch}, float32, "
          f"{os.cpu_count()} cores, in-process Numba threads {numba.get_num_threads()}, "
          f"{opts.workers} worker processes x 1 thread (NUMBA_NUM_THREADS=1), dask {dask.__version__}")
    with distributed.LocalCluster(n_workers=opts.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        rows, shape = run(client, opts.batch, opts.chunks, opts.repeat)
    print(f"{'run':<24}{'chunks':>8}{'best time':>12}{'median ratio':>14}")
    for name, n, t, ratio in rows:
        print(f"{name:<24}{n!s:>8}{t * 1e3:>10.1f}ms{ratio:>14.2f}")
    print(f"graph for {opts.chunks[-1]} chunks: {shape['tasks']} tasks ({shape['chunk_tasks']} chunk tasks, "
          f"{shape['summing_tasks']} summing tasks), {shape['levels']} summing levels, "
          f"widest summing task {shape['widest_sum']} inputs, widest task {shape['widest']} inputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
