"""``python -m nbsparse.bench --load N``: nbsparse on a busy machine, against itself on one thread.

Starts ``N`` busy processes (pure-Python loops, one core each when they get
it) beside the run, then times every op at the self-check size and on the
benchmark's workloads twice, call by call in alternation so that both see the
same load: on the caller's Numba thread count (what a user gets) and with
``numba.set_num_threads(1)`` (the same kernels on one thread, what
``NUMBA_NUM_THREADS=1`` gives). A ratio near 1 means the busy machine costs
nbsparse's threads nothing beyond what it costs one thread; well above 1, the
team waits for cores other processes hold.

The busy processes are bounded: at most :data:`MAX_LOAD`, each stops by itself
after ``limit_s`` seconds or as soon as this process is gone, and all are
killed when the run ends.
"""

import contextlib
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from . import cases, machine, workloads

MAX_LOAD = 64

_BUSY_LOOP = """
import os, sys, time
parent, deadline = os.getppid(), time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(100000):
        pass
"""


@contextlib.contextmanager
def busy_processes(n, limit_s=3600.0):
    """``n`` processes each keeping a core busy while the block runs (and at most ``limit_s``)."""
    if not 0 <= n <= MAX_LOAD:
        raise ValueError(f"--load must be between 0 and {MAX_LOAD}, got {n}")
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(limit_s)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
             for _ in range(n)]
    try:
        time.sleep(0.3 if n else 0.0)  # let them start spinning
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def time_pair(func, repeat):
    """Medians of ``repeat`` calls of ``func`` on the caller's thread count and on one thread, alternating."""
    import numba

    threads = numba.get_num_threads()
    func()  # warm-up, both team sizes
    numba.set_num_threads(1)
    try:
        func()
    finally:
        numba.set_num_threads(threads)
    ours, single = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        ours.append(time.perf_counter() - start)
        numba.set_num_threads(1)
        try:
            start = time.perf_counter()
            func()
            single.append(time.perf_counter() - start)
        finally:
            numba.set_num_threads(threads)
    return statistics.median(ours), statistics.median(single)


def _selfcheck_calls(dtype):
    from .._optable import OPS, problem
    from .._selfcheck import SIZES

    arrays = problem(SIZES, dtype, np.random.default_rng(0))
    for op in OPS:
        args = op.kwargs(arrays)
        yield op.label, "self-check", (lambda op=op, args=args: op.func(**args))


def _benchmark_calls(ops, names, dtype, quick):
    for op in ops:
        for name in names:
            case = cases.make(op, name, dtype, quick)
            if case is not None:
                yield op, name, case.ours


HEADER = f"{'op':26s} {'workload':16s} {'dtype':8s} {'threads':>9s} {'1 thread':>9s} {'ratio':>6s}"


def run(load, ops=cases.OPS, names=tuple(workloads.WORKLOADS), dtypes=("float32", "float64"),
        quick=False, repeat=21, print=print):
    """Time every op under ``load`` busy processes; return the rows as JSON-ready dicts."""
    import numba

    from .. import _team

    rows = []
    with busy_processes(load):
        sizing = "on" if _team.ADAPTIVE else "off (NBSPARSE_ADAPT_THREADS=0)"
        print(f"nbsparse.bench --load {load}: {load} busy processes on {os.cpu_count()} cores, "
              f"numba {numba.get_num_threads()} threads, team sizing {sizing}, "
              f"median of {repeat} calls{', quick sizes' if quick else ''}")
        print(HEADER)
        for dtype in dtypes:
            calls = [*_selfcheck_calls(np.dtype(dtype)), *_benchmark_calls(ops, names, dtype, quick)]
            for op, workload, func in calls:
                ours, single = time_pair(func, repeat)
                rows.append({"op": op, "workload": workload, "dtype": np.dtype(dtype).name, "load": load,
                             "threads_s": ours, "one_thread_s": single, "ratio": ours / single})
                print(f"{op:26s} {workload:16s} {np.dtype(dtype).name:8s} {ours * 1e3:7.3f}ms "
                      f"{single * 1e3:7.3f}ms {ours / single:6.2f}", flush=True)
    print(f"threading layer {machine._threading_layer()}")
    worst = max(rows, key=lambda r: r["ratio"])
    print(f"worst ratio {worst['ratio']:.2f} ({worst['op']}, {worst['workload']}, {worst['dtype']}); "
          f"median {statistics.median(r['ratio'] for r in rows):.2f}")
    return {"load": load, "repeat": repeat, "quick": quick, "rows": rows}
