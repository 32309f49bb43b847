"""Child processes started after the parent ran nbsparse's kernels; run as a script by tests/robustness/test_fork.py.

The parent runs a kernel (so Numba's threading layer has started its threads),
then starts children every way a program does: ``os.fork``,
``multiprocessing.Process`` and ``Pool`` and ``concurrent.futures.ProcessPoolExecutor``
with each start method, and an ``os.fork`` while other threads hold nbsparse's
launch lock and its recycling cache's lock (as a thread inside a kernel holds
the first under ``workqueue``). Every child compares its results with the NumPy
reference. Every wait is bounded: a child that hangs or dies is reported, not
waited for.

As a script: ``python -m tests.support.fork_workload [scenario ...]`` prints one
JSON line, ``{"layer": ..., "results": {scenario: "ok" or what went wrong}}``.
"""

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import threading
import time

import numba
import numpy as np

import nbsparse as nbs
from nbsparse import _hugepages, _reference, _threads

WAIT_S = 60
"""The longest any child is waited for (spawned children import Numba: about 2 s here)."""


def matches_reference(seed=0):
    """``sparse_block_dot`` and ``h_softmax_nll_grad`` on a problem of 368,640 multiply-adds, against the reference."""
    rng = np.random.default_rng(seed)
    W, h = rng.standard_normal((8, 16, 24, 40)), rng.standard_normal((64, 3, 24))
    input_idx, output_idx = rng.integers(0, 8, (64, 3)), rng.integers(0, 16, (64, 2))
    b = rng.standard_normal((16, 40))
    dot_ok = np.allclose(nbs.sparse_block_dot(W, h, input_idx, b, output_idx),
                         _reference.sparse_block_dot(W, h, input_idx, b, output_idx))
    x, target, g = rng.standard_normal((64, 12)), rng.integers(0, 30, 64), rng.standard_normal(64)
    hsm = (x, 64, 30, 5, 6, rng.standard_normal((12, 5)), rng.standard_normal(5),
           rng.standard_normal((5, 12, 6)), rng.standard_normal((5, 6)))
    grads = nbs.h_softmax_nll_grad(g, *hsm, target)
    expected = _reference.h_softmax_nll_grad(g, *hsm, target)
    return bool(dot_ok and all(np.allclose(a, e) for a, e in zip(grads, expected)))


def _child_more_threads(seed):
    """In the child: ask Numba for every thread it has first (a forked GNU OpenMP child must still run)."""
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return matches_reference(seed)


def _wait(pid):
    """The child's exit code, or "hung" after ``WAIT_S`` (the child is then killed)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"


def _fork_and_check():
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if _child_more_threads(1) else 2
        except BaseException:  # reported by the exit code; the child must not return into the parent's code
            code = 3
        os._exit(code)
    code = _wait(pid)
    return {0: "ok", "hung": "hung"}.get(code, f"child exit {code}")


def os_fork():
    return _fork_and_check()


def os_fork_with_locks_held():
    """Other threads hold nbsparse's locks at the fork (as one inside a kernel holds the launch lock)."""
    held, release = threading.Barrier(3), threading.Event()

    def hold(lock):
        with lock:
            held.wait()
            release.wait()

    holders = [threading.Thread(target=hold, args=(lock,)) for lock in (_threads._LOCK, _hugepages._lock)]
    for t in holders:
        t.start()
    held.wait()
    try:
        return _fork_and_check()
    finally:
        release.set()
        for t in holders:
            t.join()


def process_fork():
    proc = mp.get_context("fork").Process(target=matches_reference, args=(2,))
    proc.start()
    proc.join(WAIT_S)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return "hung"
    return "ok" if proc.exitcode == 0 else f"child exit {proc.exitcode}"


def _workers(method):
    """Two forked workers; one started afresh (it imports Numba and loads the kernels: about 2 s here)."""
    return 2 if method == "fork" else 1


def _pool(method):
    pool = mp.get_context(method).Pool(_workers(method))
    try:
        results = pool.map_async(_child_more_threads, range(3, 6)).get(WAIT_S)
    except mp.TimeoutError:
        return "hung"
    finally:
        pool.terminate()
        pool.join()
    return "ok" if all(results) else "wrong results"


def _executor(method):
    with cf.ProcessPoolExecutor(_workers(method), mp_context=mp.get_context(method)) as ex:
        try:
            results = list(ex.map(_child_more_threads, range(6, 9), timeout=WAIT_S))
        except cf.TimeoutError:
            for proc in list(ex._processes.values()):  # what shutdown would wait for
                proc.kill()
            return "hung"
    return "ok" if all(results) else "wrong results"


SCENARIOS = {
    "os.fork": os_fork,
    "os.fork, nbsparse's locks held": os_fork_with_locks_held,
    "Process(fork)": process_fork,
    **{f"Pool({m})": (lambda m=m: _pool(m)) for m in ("fork", "spawn", "forkserver")},
    **{f"ProcessPoolExecutor({m})": (lambda m=m: _executor(m)) for m in ("fork", "spawn", "forkserver")},
}
"""Every way of starting a child, by name."""


def run(names):
    assert matches_reference()  # the parent has started Numba's threads
    results = {}
    for name in names:
        try:
            results[name] = SCENARIOS[name]()
        except Exception as e:  # a broken pool (a worker killed) is a result, not a crash of the parent
            results[name] = f"{type(e).__name__}: {e}"
    return {"layer": numba.threading_layer(), "results": results}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(SCENARIOS))))
