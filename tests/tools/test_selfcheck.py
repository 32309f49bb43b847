"""``python -m nbsparse check``: every row of the op table, in both dtypes, matches the reference."""

import pytest

from nbsparse import _load, _selfcheck
from nbsparse._optable import OPS
from tests.support.children import run_python


def test_selfcheck_runs_every_op_and_finds_them_matching(monkeypatch):
    monkeypatch.setattr(_selfcheck, "other_runnable_tasks", lambda: 0)  # no warning line
    lines = []
    assert _selfcheck.run(print=lines.append)
    rows = [line.split()[0] for line in lines[2:-1]]
    labels = [op.label.split()[0] for op in OPS]
    assert rows == labels * 2  # float32, then float64
    assert lines[-1] == "all ops match the NumPy reference"


@pytest.mark.parametrize(("runnable", "warned"), [(1, False), (2, True), (4, True)])
def test_selfcheck_warns_when_other_tasks_are_runnable(monkeypatch, runnable, warned):
    monkeypatch.setattr(_load, "runnable_tasks", lambda: runnable)  # this thread is one of them
    monkeypatch.setattr(_selfcheck, "OPS", OPS[:1])
    lines = []
    _selfcheck.run(print=lines.append)
    warnings = [line for line in lines if line.startswith("warning: the machine is busy")]
    assert len(warnings) == warned
    if warned:
        assert f"({runnable - 1} other runnable task" in warnings[0]


def test_the_busy_reading_is_a_median_not_one_sample(monkeypatch):
    readings = iter([5, 1, 1, 1, 5])  # two spikes in five readings: not busy
    monkeypatch.setattr(_load, "runnable_tasks", lambda: next(readings))
    assert _selfcheck.other_runnable_tasks(samples=5, pause_s=0) == 0


def test_selfcheck_matches_with_the_jit_disabled():
    """``NUMBA_DISABLE_JIT=1``, Numba's debugging switch: every kernel runs as Python, and every op
    still matches the reference, without a warning."""
    proc = run_python(["-W", "error", "-m", "nbsparse", "check"], env={"NUMBA_DISABLE_JIT": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NUMBA_DISABLE_JIT=1: the kernels run as Python" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "all ops match the NumPy reference"
