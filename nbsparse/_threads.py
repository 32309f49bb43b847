"""Thread safety of the CPU kernels under Numba's threading layers.

Numba runs ``parallel=True`` kernels on one of three threading layers. ``tbb``
and ``omp`` accept launches from several Python threads at once. ``workqueue``
does not: a second concurrent launch makes Numba print "Concurrent access has
been detected" and abort the whole process. nbsparse therefore launches its CPU
kernels through :func:`launch`, which serialises them with one process-wide
lock while the layer is ``workqueue`` or not yet known (Numba only says which
layer it picked once a parallel kernel has run), and calls them directly once
the layer is known to be thread-safe. ``nbsparse._host`` is the one module that
launches CPU kernels, each through it.

Only nbsparse's own launches are serialised: a program that also calls its own
``parallel=True`` functions from other threads under ``workqueue`` can still
abort. Nothing here imports Numba before the first kernel call.
"""

import threading

from . import _team

_LOCK = threading.Lock()
_THREADSAFE_LAYERS = frozenset({"tbb", "omp"})

# None while unknown; True once a thread-safe layer has run a kernel; False for workqueue.
_concurrent_ok = None


def _layer_verdict():
    """True/False when Numba's threading layer is known to be thread-safe or not, else None."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: Numba has not chosen a layer
        configured = str(numba.config.THREADING_LAYER).lower()
        return False if configured == "workqueue" else None
    return layer in _THREADSAFE_LAYERS


def launch(kernel, *args, items=None, min_items_per_thread=None):
    """Run the CPU kernel ``kernel(*args)``; every CPU kernel launch of nbsparse goes through here.

    ``items``, for a parallel kernel, is its work, and ``min_items_per_thread``
    its entry in ``nbsparse._cpu.tuning.MIN_ITEMS_PER_THREAD``: the launch then
    runs on a team sized by ``nbsparse._team``. Without them the kernel runs on
    the caller's thread count.

    While the threading layer is ``workqueue`` or not yet known, the launch holds
    the process-wide lock, and after a launch that succeeded the layer Numba
    reports is recorded; once a thread-safe layer (``tbb``, ``omp``) has run a
    kernel, launches go straight through.
    """
    global _concurrent_ok
    if _concurrent_ok:
        return _run(kernel, args, items, min_items_per_thread)
    with _LOCK:
        result = _run(kernel, args, items, min_items_per_thread)
        if _concurrent_ok is None:
            _concurrent_ok = _layer_verdict()
    return result


def _run(kernel, args, items, min_items_per_thread):
    if items is None:
        return kernel(*args)
    return _team.run(kernel, args, items, min_items_per_thread)


def renew_lock():
    """A new, free launch lock: what a forked child needs when another thread of its parent held it."""
    global _LOCK
    _LOCK = threading.Lock()


def launches_serialised():
    """True while nbsparse serialises its CPU kernel launches (workqueue, or layer not yet known)."""
    return not _concurrent_ok
