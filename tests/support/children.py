"""Child Python processes for the tests: bounded in time, none left behind.

A child leads a process group of its own; when it has finished, or has run past its
time, every process still in that group (a pool worker it forked, a child
that hung) is killed.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
"""The repository root: children run there, so they import tests.support and this nbsparse."""


def run_python(args, env=None, timeout=120):
    """``python *args`` in ``ROOT`` with ``os.environ`` updated by ``env``: the ``CompletedProcess``.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds; the child
    and all its descendants in its process group are then killed.
    """
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise
    _kill_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left in the group
        pass
