"""How many threads one CPU kernel launch gets: no more than its work pays for, nor than the cores free now.

Numba runs a ``parallel=True`` kernel on a team of ``numba.get_num_threads()``
threads, and each parallel region ends at a barrier that waits for every member
of the team. Between regions the members busy-wait (OpenMP's workers spin for
about 5 ms here) and are then put to sleep. When other processes hold the
cores, a member that is not running must wait for the scheduler to give it
one, and the region waits with it: on the 2-core machine, with two busy
processes, each region of a call took about 8 ms (two 4 ms scheduler ticks),
so a 0.04 ms ``sparse_block_dot`` took 16 ms and ``h_softmax`` with a target,
seven regions, 55 ms. A team of one thread has no barrier to wait at.

So each launch gets

    min(the caller's thread count, the threads its work pays for, the free cores)

threads, at least one:

- **the caller's thread count**, ``numba.get_num_threads()``: what
  ``NUMBA_NUM_THREADS`` and ``numba.set_num_threads`` (per Python thread) set.
  It is never exceeded, and the caller's setting is restored after the launch.
- **the threads its work pays for**: ``items // MIN_ITEMS_PER_THREAD[kernel]``
  (``nbsparse._cpu.tuning``), where ``items`` is the launch's work in the
  kernel's own unit (multiply-adds, elements, rows) and the constant is the
  work at which a second thread first made the kernel faster on an idle
  machine.
- **the free cores**: the cores this process may use, less the other tasks that
  are runnable now (``nbsparse._load``): every runnable task but this thread and
  the team's own workers still spinning after the last launch.

``NBSPARSE_ADAPT_THREADS=0`` (read at import) turns the last two off: every
launch then runs on the caller's thread count, as Numba would. Results do not
depend on the team size: the kernels cut their work into units and sum in an
order that is the same for any number of threads.
"""

import functools
import os
import time

from . import _load

ADAPTIVE = os.environ.get("NBSPARSE_ADAPT_THREADS", "1").strip() != "0"
"""False when ``NBSPARSE_ADAPT_THREADS=0``: every launch uses the caller's thread count."""

SPIN_S = 0.01
"""After a region, OpenMP's workers stay runnable (spinning) for about 5 ms
(4-8 ms measured here through ``/proc/loadavg``); for this long after a launch
of ``n`` threads, ``n - 1`` of the runnable tasks are taken to be this process's own."""

ceiling = None
"""The most threads any launch may get: None, or 1 in a child forked from a process whose
Numba runs GNU OpenMP (set by ``nbsparse._fork``; more would hang there)."""

_last_team = 1
_last_team_end = float("-inf")


@functools.cache
def thread_count_functions():
    """``(get, set)`` of the calling Python thread's Numba thread count.

    The threading layer's own C functions (0.2 and 0.5 µs a call, against 1.4
    and 2 µs for ``numba.get_num_threads``/``numba.set_num_threads``, which
    check their argument and start the threads first: a call of nbsparse makes
    up to 12 launches), once Numba has started its threads; the public
    functions where a Numba version lacks them. Imports Numba at the first
    launch, not at ``import nbsparse``.
    """
    import numba
    from numba.np.ufunc import parallel

    numba.get_num_threads()  # starts the threads: the layer's functions exist from here on
    get, set_ = getattr(parallel, "_get_num_threads", None), getattr(parallel, "_set_num_threads", None)
    if callable(get) and callable(set_):
        return get, set_
    return numba.get_num_threads, numba.set_num_threads


def others_running(now=None):
    """Runnable tasks on the machine other than this thread and this process's spinning workers."""
    now = time.monotonic() if now is None else now
    own = 1 + (_last_team - 1 if now - _last_team_end < SPIN_S else 0)
    return max(0, _load.runnable_tasks() - own)


def size(callers_threads, items, min_items_per_thread):
    """The team size for a launch of ``items`` units of work (see the module docstring)."""
    if ceiling is not None:
        callers_threads = min(callers_threads, ceiling)
    if callers_threads <= 1 or not ADAPTIVE:
        return callers_threads
    threads = min(callers_threads, items // min_items_per_thread)
    if threads <= 1:
        return 1
    return max(1, min(threads, _load.available_cores() - others_running()))


def run(kernel, args, items, min_items_per_thread):
    """``kernel(*args)`` on a team of :func:`size` threads; the caller's thread count is restored.

    ``items`` is the launch's work, in the unit of ``min_items_per_thread``
    (the kernel's entry in ``nbsparse._cpu.tuning.MIN_ITEMS_PER_THREAD``).
    """
    global _last_team, _last_team_end
    get_threads, set_threads = thread_count_functions()
    callers = get_threads()
    threads = size(callers, items, min_items_per_thread)
    if threads == callers:
        result = kernel(*args)
    else:
        set_threads(threads)
        try:
            result = kernel(*args)
        finally:
            set_threads(callers)
    if threads > 1:
        _last_team, _last_team_end = threads, time.monotonic()
    return result
