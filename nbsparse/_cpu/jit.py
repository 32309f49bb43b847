"""The one decorator that compiles the CPU kernels: ``numba.njit`` with a disk cache keyed on the whole package.

Numba's own disk cache keys a function on its bytecode and on the (mtime, size)
of the file that defines it (numba/numba#1833). A kernel inlines helpers and
reads constants from the other modules of this package, so after an edit of
one of those, or an upgrade of nbsparse, Numba would load the old machine code.
Here every kernel's cache key also holds a hash of the source of every module
of ``nbsparse._cpu`` and the nbsparse version: any such change compiles afresh,
and an unchanged package keeps loading from the cache. Where the cache lives,
and why a missing, read-only, damaged or full one never fails a call:
:mod:`.diskcache`.
"""

import functools
import hashlib
import pathlib

import numba
from numba.np.ufunc.parallel import _launch_threads

from .._version import __version__
from .diskcache import KeyedFunctionCache as _DiskCache


@functools.cache
def package_source_hash():
    """SHA-256 (hex) of the nbsparse version and the name and bytes of every ``.py`` file of this package."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class KeyedFunctionCache(_DiskCache):
    """The disk cache of one kernel, with :func:`package_source_hash` in every index key."""

    def __init__(self, py_func):
        super().__init__(py_func, package_source_hash)

    def load_overload(self, sig, target_context):
        # Numba calls this before it compiles or loads any overload. The threading
        # layer's C symbols (``get_num_threads``, the chunk-size pair) are
        # registered with LLVM only when Numba starts its threads, and a
        # non-parallel helper that calls them (``scheduling.min_units``) can be
        # compiled or loaded from the cache before any parallel kernel has started
        # them: start them first. Idempotent and cheap; no thread starts at import.
        _launch_threads()
        return super().load_overload(sig, target_context)


def cached_jit(**options):
    """``numba.njit(**options)`` whose machine code is cached on disk under a package-wide key.

    Parameters
    ----------
    **options
        Numba's ``njit`` options (``parallel``, ``fastmath``, ...); ``cache`` is
        implied and must not be given.

    Returns
    -------
    callable
        A decorator that turns a Python function into a lazily compiled Numba
        dispatcher using :class:`KeyedFunctionCache`.
    """
    def decorate(py_func):
        dispatcher = numba.njit(**options)(py_func)
        dispatcher._cache = KeyedFunctionCache(py_func)  # what Dispatcher.enable_caching() does, keyed
        return dispatcher

    return decorate
