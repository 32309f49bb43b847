"""Calls from several Python threads at once, under every threading layer a user may have.

The workload is tests/support/concurrency_workload.py: every op and mode, heavily repeated
index pairs for the accumulating ops, each Python thread on its own Numba thread
count, every result compared bit for bit with the same call made alone on one
Numba thread, and integer-valued accumulations compared exactly with the oracle.

In this process it runs under the layer Numba picked here (``omp`` where libgomp
is present). Child processes run it with ``NUMBA_NUM_THREADS=8`` (more threads
than cores, as a user may set) under ``omp``, under ``tbb`` when the ``tbb``
package is installed (``pip install tbb``; its library directory must be on
``LD_LIBRARY_PATH``, which the child gets), and under ``workqueue``, which is
not thread-safe: Numba aborts the process on a concurrent launch, so nbsparse
serialises its launches there, and the child must finish with correct results.
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numba
import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _threads
from tests.support.concurrency_workload import run

ROOT = Path(__file__).parents[2]  # the children import tests.support and this nbsparse
CHILD_THREADS, CHILD_REPEATS = 8, 4
"""Each child: 8 Python threads x 4 rounds x 22 calls (every op and mode in float32 and
float64, plus the two exact accumulations) = 704 concurrent calls."""


def test_concurrent_calls_in_this_process_match_the_serial_results():
    threads, repeats = 4, 3
    report = run(threads=threads, repeats=repeats)
    assert report["errors"] == []
    assert report["mismatches"] == []
    assert report["exact"] == []
    assert report["calls"] == threads * repeats * 22


def run_child(layer, adapt):
    # adapt "0" (NBSPARSE_ADAPT_THREADS=0): every launch on the thread's own count (up to 8);
    # "1": teams sized down to the work and the 2 cores, each thread's count restored after.
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer, "NUMBA_NUM_THREADS": "8", "NBSPARSE_ADAPT_THREADS": adapt,
           "LD_LIBRARY_PATH": os.pathsep.join(
               p for p in (str(Path(sys.prefix) / "lib"), os.environ.get("LD_LIBRARY_PATH")) if p)}
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "tests.support.concurrency_workload",
                           str(CHILD_THREADS), str(CHILD_REPEATS)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    return proc


def layer_unavailable(proc):
    return proc.returncode != 0 and "No threading layer could be loaded" in proc.stderr


@pytest.mark.parametrize("adapt", ["0", "1"])
@pytest.mark.parametrize("layer", ["omp", "tbb", "workqueue"])
def test_concurrent_calls_under_each_threading_layer(layer, adapt):
    proc = run_child(layer, adapt)
    if layer == "tbb" and layer_unavailable(proc):
        pytest.skip("the tbb threading layer is not installed (pip install tbb)")
    # A crash (workqueue's abort is SIGABRT, -6) fails here, with Numba's message.
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["layer"] == layer
    assert report["numba_threads"] == 8
    assert report["serialised"] is (layer == "workqueue")
    assert report["errors"] == []
    assert report["mismatches"] == []
    assert report["exact"] == []
    assert report["calls"] == CHILD_THREADS * CHILD_REPEATS * 22


# --------------------------------------------------------------------------- the decision
@pytest.fixture
def verdict(monkeypatch):
    """Forget what nbsparse learnt about the threading layer; ``set(layer)`` fakes Numba's answer."""
    monkeypatch.setattr(_threads, "_concurrent_ok", None)

    def fake(layer):
        def threading_layer():
            if layer is None:
                raise ValueError("Threading layer is not initialized.")
            return layer
        monkeypatch.setattr(numba, "threading_layer", threading_layer)

    return fake


class RecordingModule:
    """A kernel module whose one kernel records whether the serialisation lock was held."""

    def __init__(self):
        self.held = []

    def kernel(self, x):
        self.held.append(_threads._LOCK.locked())
        return x + 1


@pytest.mark.parametrize(("layer", "serialised"), [("omp", False), ("tbb", False),
                                                   ("workqueue", True)])
def test_launches_are_serialised_only_under_workqueue(verdict, layer, serialised):
    verdict(layer)
    module = RecordingModule()
    assert _threads.launch(module.kernel, 1) == 2  # before any launch the layer is unknown: locked
    assert module.held == [True]
    assert _threads.launches_serialised() is serialised
    _threads.launch(module.kernel, 1)
    assert module.held == [True, serialised]


def test_an_unknown_layer_stays_serialised(verdict):
    verdict(None)  # e.g. only serial kernels (bias_grad, split_target) have run so far
    module = RecordingModule()
    _threads.launch(module.kernel, 0)
    assert module.held == [True]
    assert _threads.launches_serialised()


def test_configured_workqueue_is_known_before_any_launch(verdict, monkeypatch):
    verdict(None)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "workqueue")
    assert _threads._layer_verdict() is False


def test_serialised_launches_exclude_each_other(verdict):
    """Two threads in one serialised kernel never overlap (the lock really is process-wide)."""
    verdict("workqueue")
    inside, overlaps = [0], []
    gate = threading.Barrier(2)

    def kernel():
        inside[0] += 1
        overlaps.append(inside[0] > 1)
        threading.Event().wait(0.02)
        inside[0] -= 1

    def call():
        gate.wait()
        for _ in range(5):
            _threads.launch(kernel)

    pool = [threading.Thread(target=call) for _ in range(2)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(overlaps) == 10 and not any(overlaps)


def test_every_host_kernel_launch_goes_through_the_serialisation(verdict, monkeypatch):
    """Each kernel of every ``nbsparse._cpu`` module that a public function runs is launched under the lock."""
    from nbsparse import _cpu

    verdict("workqueue")
    held = {}
    for module in ("products", "outer", "grads", "softmax", "hsoftmax"):
        for name, value in list(vars(getattr(_cpu, module)).items()):
            if type(value).__name__ == "CPUDispatcher" and not name.startswith("_"):
                def recording(*args, _kernel=value, _name=f"{module}.{name}"):
                    held.setdefault(_name, set()).add(_threads._LOCK.locked())
                    return _kernel(*args)
                recording.__name__ = name  # the team size is looked up by the kernel's name
                monkeypatch.setattr(getattr(_cpu, module), name, recording)
    rng = np.random.default_rng(0)
    W, h = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal((4, 2, 2))
    idx, b = rng.integers(0, 2, (4, 2)), rng.standard_normal((2, 2))
    nbs.sparse_block_gemv(np.zeros((4, 2, 2)), W, h, idx, idx)
    nbs.sparse_block_outer(np.zeros(W.shape), h, h, idx, idx)
    nbs.sparse_block_dot_grad(nbs.sparse_block_dot(W, h, idx, b, idx), W, h, idx, b, idx)
    nbs.softmax_grad(h, nbs.softmax(h))
    x, t = rng.standard_normal((4, 3)), np.array([0, 3, 2, 1])
    hargs = (x, 4, 4, 2, 2, rng.standard_normal((3, 2)), np.zeros(2), rng.standard_normal((2, 3, 2)),
             np.zeros((2, 2)))
    for target in (None, t):
        nbs.h_softmax_grad(nbs.h_softmax(*hargs, target=target), *hargs, target=target)
    nbs.h_softmax_nll_grad(nbs.h_softmax_nll(*hargs, t), *hargs, t)
    assert held and all(locked == {True} for locked in held.values()), held
