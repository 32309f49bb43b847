"""Memory use of many small calls and of failed calls; run as a script by tests/robustness/test_resources.py.

Three meters, read after warming every call up (compiling, filling caches):
Python allocations (``tracemalloc``), Numba's runtime allocations inside the
kernels (NRT statistics: allocations minus frees), and the process's resident
set size. Prints one JSON line.
"""

import gc
import json
import sys
import tracemalloc

import numpy as np
from numba.core.runtime import rtsys

import nbsparse as nbs
from tests.support.concurrency_workload import calls


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def nrt_alive():
    stats = rtsys.get_allocation_stats()
    return stats.alloc - stats.free


def failing_calls():
    """Calls that fail at each stage of validation, ``inplace=True`` included."""
    rng = np.random.default_rng(1)
    o, W, h = rng.standard_normal((4, 2, 3)), rng.standard_normal((3, 3, 5, 3)), np.ones((4, 2, 5))
    good, bad = np.zeros((4, 2), np.int64), np.full((4, 2), 7)
    x = rng.standard_normal((4, 6))
    return [
        lambda: nbs.sparse_block_gemv(o, W, h, good, bad, inplace=True),  # IndexError
        lambda: nbs.sparse_block_gemv(o, W, h[:, :1], good, good),  # ValueError (shapes)
        lambda: nbs.sparse_block_outer(W, h, o, good, [[0, 1]] * 4),  # TypeError (a list)
        lambda: nbs.softmax(x, axis=2),  # ValueError (axis)
        lambda: nbs.h_softmax(x, 4, 9, 2, 4, np.ones((6, 2)), np.ones(2), np.ones((2, 6, 4)),
                              np.ones((2, 4)), target=np.arange(4) * 3),  # IndexError (target 9)
    ]


def measure(thunks, n_calls, expect_error):
    """Growth of each meter over ``n_calls`` calls (round robin over ``thunks``) after a warm-up.

    The resident set is measured over a first pass without tracemalloc (whose own
    bookkeeping would count), Python and NRT allocations over a second pass.
    """
    for thunk in thunks:  # warm up: compile, load caches, let the allocator settle
        for _ in range(50):
            run(thunk, expect_error)
    gc.collect()
    rss = rss_bytes()
    for i in range(n_calls):
        run(thunks[i % len(thunks)], expect_error)
    gc.collect()
    rss = rss_bytes() - rss
    nrt = nrt_alive()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n_calls):
        run(thunks[i % len(thunks)], expect_error)
    gc.collect()
    python = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"calls": n_calls, "python_bytes": python, "nrt_blocks": nrt_alive() - nrt,
            "rss_bytes": rss}


def run(thunk, expect_error):
    if not expect_error:
        thunk()
        return
    try:
        thunk()
    except (TypeError, ValueError, IndexError):
        return
    raise AssertionError("the call did not fail")


if __name__ == "__main__":
    n_calls, n_failing = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps({"ok": measure(list(calls().values()), n_calls, False),
                      "failing": measure(failing_calls(), n_failing, True)}))
