"""How many other tasks want a core right now: the load that decides whether a second thread pays.

On Linux the fourth field of ``/proc/loadavg`` counts the runnable tasks of the
whole machine at this instant (running or waiting for a core), this thread
included. Read from a descriptor kept open, with ``os.pread``, it costs about
2 µs; a reading is reused for :data:`SAMPLE_S`.

Elsewhere (no ``/proc/loadavg``) the load is unknown and reported as 0: the
team is then sized by the work alone, as before this module existed.
"""

import os
import time

LOADAVG = "/proc/loadavg"

SAMPLE_S = 0.001
"""A reading is reused for this long: a call launches up to 12 kernels, and a
core taken or freed within a millisecond changes nothing the next launch can use."""

_fd = None  # the open /proc/loadavg, False when it cannot be read
_sample_at = float("-inf")
_sample = 0  # what runnable_tasks returns until the next reading
_last = 1 << 30  # the last single reading (none yet: no bound)


def _open():
    global _fd
    try:
        _fd = os.open(LOADAVG, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        _fd = False


def runnable_tasks():
    """Runnable tasks on the machine now, this thread included; 0 when unknown.

    The lower of the last two readings, at least :data:`SAMPLE_S` apart: a task
    counts once two readings have seen it. On an idle machine here, about 4 % of
    single readings taken between kernel launches saw one more task (a kernel
    thread, a short-lived process), which would cost a large launch half its
    threads; a busy process shows in every reading, and is missed by one launch
    at most. Parses ``"0.43 0.78 0.91 3/108 2640"``: the ``3`` of ``3/108``.
    """
    global _sample_at, _sample, _last
    now = time.monotonic()
    if now - _sample_at < SAMPLE_S:
        return _sample
    if _fd is None:
        _open()
    if not _fd:
        return 0
    try:
        fields = os.pread(_fd, 128, 0).split()
        count = int(fields[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        count = 0
    _sample_at, _sample, _last = now, min(count, _last), count
    return _sample


def available_cores():
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
