"""Thread safety of the CPU kernels under Numba's threading layers.

Numba runs ``parallel=True`` kernels on one of three threading layers. ``tbb``
and ``omp`` accept launches from several Python threads at once. ``workqueue``
does not: a second concurrent launch makes Numba print "Concurrent access has
been detected" and abort the whole process. nbsparse therefore launches its CPU
kernels through :func:`cpu_kernels`, which serialises them with one process-wide
lock while the layer is ``workqueue`` or not yet known (Numba only says which
layer it picked once a parallel kernel has run), and hands out the kernel
modules themselves, at no cost, once the layer is known to be thread-safe.

Only nbsparse's own launches are serialised: a program that also calls its own
``parallel=True`` functions from other threads under ``workqueue`` can still
abort. Nothing here imports Numba before the first kernel call.
"""

import threading

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


def _serialised(kernel):
    def launch(*args, **kwargs):
        global _concurrent_ok
        with _LOCK:
            result = kernel(*args, **kwargs)
            if _concurrent_ok is None:
                _concurrent_ok = _layer_verdict()
        return result

    launch.__name__ = getattr(kernel, "__name__", "kernel")
    launch.__wrapped__ = kernel
    return launch


class _SerialModule:
    """A kernel module whose functions run one at a time in the whole process
    (other attributes, such as constants, are passed through)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        value = getattr(self._module, name)
        return _serialised(value) if callable(value) else value


class _SerialKernels:
    """``nbsparse._cpu`` with every kernel launch, of any of its modules, under the lock."""

    def __init__(self, package):
        self._package = package

    def __getattr__(self, name):
        return _SerialModule(getattr(self._package, name))


_serial_cpu = None


def cpu_kernels():
    """The CPU kernel package to launch from: ``nbsparse._cpu`` itself when concurrent
    launches are known to be safe, else a view of it that serialises every launch.

    Returns
    -------
    module or object
        ``nbsparse._cpu``, or an object whose attributes are its kernel modules
        with every function serialised.
    """
    global _serial_cpu
    from . import _cpu  # compiles nothing: the kernels are lazily jitted

    if _concurrent_ok:
        return _cpu
    if _serial_cpu is None:
        _serial_cpu = _SerialKernels(_cpu)
    return _serial_cpu


def launches_serialised():
    """True while nbsparse serialises its CPU kernel launches (workqueue, or layer not yet known)."""
    return not _concurrent_ok
