"""Children started after the parent ran nbsparse: every start method computes the reference's results, none hangs.

The scenarios run in a child process (tests/support/fork_workload.py), once
under each threading layer a user may have: ``omp`` (GNU OpenMP here, which
Numba makes terminate a forked child at its first parallel launch unless
``nbsparse._fork`` re-registers the child) with ``NBSPARSE_ADAPT_THREADS=0``,
so that the parent's launches start every OpenMP thread, and ``workqueue``,
where nbsparse's launch lock may be held by another thread at the fork.
"""

import json

import numba
import pytest

from nbsparse import _team
from tests.support.children import run_python
from tests.support.fork_workload import SCENARIOS

FORKED = [name for name in SCENARIOS if "spawn" not in name and "forkserver" not in name]


@pytest.mark.parametrize(("layer", "scenarios"), [("omp", list(SCENARIOS)), ("workqueue", FORKED)])
def test_children_started_every_way_match_the_reference(layer, scenarios):
    proc = run_python(["-m", "tests.support.fork_workload", *scenarios], timeout=240,
                      env={"NUMBA_THREADING_LAYER": layer, "NUMBA_NUM_THREADS": "2",
                           "NBSPARSE_ADAPT_THREADS": "0"})
    if "No threading layer could be loaded" in proc.stderr:
        pytest.skip(f"the {layer} threading layer is not available here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["layer"] == layer
    assert report["results"] == dict.fromkeys(scenarios, "ok")


def test_the_thread_ceiling_caps_every_launch(monkeypatch):
    monkeypatch.setattr(_team, "ceiling", 1)
    monkeypatch.setattr(_team, "ADAPTIVE", False)
    assert _team.size(max(2, numba.config.NUMBA_NUM_THREADS), 10**9, 1) == 1
