"""10,000 small calls do not grow memory, and a failed call leaks nothing.

The counts run in a child process (tests/support/resources_workload.py) with one Numba
thread, so that the meters see nbsparse and not the test session: Python
allocations (tracemalloc), Numba's runtime allocations inside kernels
(``NUMBA_NRT_STATS=1``: allocations minus frees), and the resident set size.
In this process: a failed call keeps no reference to any argument and creates
no reference cycle (nothing for the garbage collector to find), on the host and
on device arrays.
"""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbsparse as nbs

ROOT = Path(__file__).parents[2]  # the children import tests.support and this nbsparse
N_CALLS, N_FAILING = 10_000, 2_000


@pytest.fixture(scope="module")
def meters():
    env = {**os.environ, "NUMBA_NRT_STATS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "tests.support.resources_workload",
                           str(N_CALLS), str(N_FAILING)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["ok", "failing"])
def test_many_calls_do_not_grow_memory(meters, kind):
    m = meters[kind]
    assert m["calls"] == (N_CALLS if kind == "ok" else N_FAILING)
    assert m["nrt_blocks"] == 0  # every array a kernel allocated was freed
    assert m["python_bytes"] < 4096  # a leak of 1 small object per call would be > 100 kB
    assert m["rss_bytes"] < 2 * 2**20  # allocator settling only (about 0.5 MiB, flat after)


def _refcounts(args):
    return [sys.getrefcount(a) for a in args]


def _fails_cleanly(func, args, kwargs, exc):
    """Call ``func``; it must raise ``exc``, keep no reference to ``args`` and leave no cycle."""
    before = _refcounts(args)
    gc.collect()
    gc.disable()
    try:
        try:
            func(*args, **kwargs)
        except exc:
            pass
        else:
            pytest.fail("the call did not fail")
        assert _refcounts(args) == before
        assert gc.collect() == 0  # the traceback and its frames were freed by refcounting
    finally:
        gc.enable()


def _problem():
    rng = np.random.default_rng(2)
    o, W, h = rng.standard_normal((4, 2, 3)), rng.standard_normal((3, 3, 5, 3)), np.ones((4, 2, 5))
    good, bad = np.zeros((4, 2), np.int64), np.full((4, 2), 7)
    return o, W, h, good, bad


FAILURES = {  # name: (args from the problem, keywords, exception)
    "index": (lambda o, W, h, good, bad: (o, W, h, good, bad), {"inplace": True}, IndexError),
    "shape": (lambda o, W, h, good, bad: (o, W, h[:, :1].copy(), good, good), {}, ValueError),
    "dtype": (lambda o, W, h, good, bad: (o, W, h, good.astype(float), good), {}, TypeError),
    "inplace-dtype": (lambda o, W, h, good, bad: (o.astype(np.float32), W, h, good, good),
                      {"inplace": True}, TypeError),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_call_leaks_nothing(failure):
    pick, kwargs, exc = FAILURES[failure]
    args = pick(*_problem())
    _fails_cleanly(nbs.sparse_block_gemv, args, kwargs, exc)


@pytest.mark.cuda
@pytest.mark.parametrize("failure", ["index", "shape", "inplace-dtype"])
def test_a_failed_device_call_leaks_nothing(failure):
    from numba import cuda

    pick, kwargs, exc = FAILURES[failure]
    args = [cuda.to_device(a) for a in pick(*_problem())]
    _fails_cleanly(nbs.sparse_block_gemv, args, kwargs, exc)
