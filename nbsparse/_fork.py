"""What a child process forked after nbsparse ran needs to run nbsparse's kernels.

Two things a ``fork()`` copies would otherwise stop the child:

- **nbsparse's locks.** A lock held by another thread at the fork (the
  ``workqueue`` launch lock of ``nbsparse._threads`` while that thread is in a
  kernel; the recycling cache's lock of ``nbsparse._hugepages``) stays held in
  the child, where that thread does not exist: the child's first call would
  wait for it forever. The child gets fresh, free locks.
- **GNU OpenMP**, Numba's ``omp`` threading layer on Linux. Its thread pool is
  not copied by ``fork()``, and a parallel region of more than one thread in
  the child waits for the missing threads forever. Numba guards against that by
  terminating the child at its first parallel launch ("fork() called from a
  process already using GNU OpenMP, this is unsafe"), which leaves a
  ``multiprocessing.Pool`` (``fork`` start method) waiting for a worker that is
  gone. A region of one thread runs: so a child forked from a process whose
  Numba runs GNU OpenMP registers itself with the layer (the layer's
  ``launch_threads`` records the calling process as the one that owns it) with a
  default of one thread, and every launch of nbsparse there runs on one thread
  (``nbsparse._team.ceiling``). Such a child computes the same results (they
  never depend on the thread count), single-threaded. Its own Numba code runs on
  one thread too; raising its thread count with ``numba.set_num_threads`` there
  would hang GNU OpenMP. A child that needs every core should be started with the
  ``spawn`` or ``forkserver`` method, or the parent should run under the ``tbb``
  or ``workqueue`` layer (``NUMBA_THREADING_LAYER``), both of which keep their
  threads working after a fork.

Nothing here costs a call anything: the handlers run only at a fork, and import
nothing that the process has not imported already.
"""

import os
import sys
import threading

from . import _hugepages, _team, _threads


def _numba_runs_gnu_openmp():
    """True when this process's Numba has started its threads on the GNU OpenMP layer."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or not parallel._is_initialized:
        return False
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    return (omppool is not None and getattr(omppool, "openmp_vendor", None) == "GNU"
            and parallel.threading_layer() == "omp")


def _reregister_with_gnu_openmp():
    """Make this (forked) process the owner of Numba's GNU OpenMP layer, with a default of one thread."""
    import ctypes

    from numba.np.ufunc import omppool

    set_count = ctypes.CFUNCTYPE(None, ctypes.c_int)
    set_count(omppool.launch_threads)(1)  # records this pid; threads that start here get 1
    set_count(omppool.set_num_threads)(1)  # this thread's own count (the forking thread's, copied)
    _team.ceiling = 1


def _after_fork_in_child():
    _threads.renew_lock()
    _hugepages._lock = threading.RLock()
    if _numba_runs_gnu_openmp():
        _reregister_with_gnu_openmp()


def install():
    """Register the handlers (once per process; ``nbsparse/__init__`` calls this)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
