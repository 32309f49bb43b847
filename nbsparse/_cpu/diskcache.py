"""Where the CPU kernels' machine code is cached on disk, and why a cache problem never fails a call.

Numba's disk cache raises at the first call when no cache directory is
writable (a read-only install with a read-only home: "no locator available"),
ignores a cache compiled into a package that was made read-only afterwards,
fails every later process on a damaged entry (a process killed while writing,
a full disk: ``EOFError``, ``UnpicklingError``, machine code loaded under
another signature), and fails the compiling call when saving fails (``ENOSPC``).
:class:`KeyedFunctionCache` keeps Numba's files and layout but:

- saves to the first writable directory of Numba's order (``NUMBA_CACHE_DIR``,
  the package's ``__pycache__``, the user's cache directory) and, when none is
  writable, compiles in memory;
- loads from that directory, then from the package's own ``__pycache__`` (a
  cache compiled where the package is installed, e.g. by ``python -m nbsparse
  check``, is used even when the package is read-only);
- stores each entry's key in its data file and checks it on load; an entry that
  cannot be loaded is removed (its data file, or an unreadable index), the kernel
  compiles afresh and the new entry replaces it;
- writes an entry's data before the index that names it, and treats a failed
  save as a cache miss for later processes, not as an error.

Each kind of problem is reported once per process, as a
:class:`KernelCacheWarning`; where warnings are errors (``python -W error``) it
is logged instead, so it never fails the call that hit it.
"""

import contextlib
import errno
import inspect
import logging
import os
import warnings

from numba.core.caching import (
    CompileResultCacheImpl,
    FunctionCache,
    IndexDataCacheFile,
    InTreeCacheLocator,
    UserProvidedCacheLocator,
    UserWideCacheLocator,
)

_reported = set()  # the kinds of problem this process has reported


class KernelCacheWarning(RuntimeWarning):
    """The kernel cache could not load or save an entry; the call went on with a fresh compile."""


def report_once(kind, message):
    """Warn ``message`` the first time this process meets a problem of ``kind``."""
    if kind in _reported:
        return
    _reported.add(kind)
    try:
        warnings.warn(message, KernelCacheWarning, stacklevel=3)
    except KernelCacheWarning:  # warnings are errors here: the call itself succeeded
        logging.getLogger("nbsparse").warning("%s: %s", KernelCacheWarning.__name__, message)


class _InstalledCacheLocator(InTreeCacheLocator):
    """The package's ``__pycache__``, accepted when read-only: loads what was compiled at install time."""

    @classmethod
    def from_function(cls, py_func, py_file):
        return cls(py_func, py_file) if os.path.exists(py_file) else None

    def ensure_cache_path(self):
        path = self.get_cache_path()
        if not os.access(path, os.W_OK):
            raise OSError(errno.EROFS, "no writable cache directory (NUMBA_CACHE_DIR, the package's "
                                       "__pycache__ or the user's cache directory)", path)
        super().ensure_cache_path()


class _KeyedImpl(CompileResultCacheImpl):
    # Numba's order, then the installed cache read-only instead of "no locator available".
    _locator_classes = [UserProvidedCacheLocator, InTreeCacheLocator, UserWideCacheLocator,
                        _InstalledCacheLocator]


class _EntryFiles(IndexDataCacheFile):
    """Numba's index and data files of one function; each data file holds its own key."""

    def load(self, key):
        """The payload saved under ``key``, or None; raises when the entry is damaged."""
        name = self._load_index().get(key)
        if name is None:
            return None
        try:
            stored_key, payload = self._load_data(name)
        except FileNotFoundError:  # a save that stopped after the data file went
            return None
        if stored_key != key:  # a data file of another signature or function, or a stale one
            raise ValueError(f"{name} holds the entry of another signature")
        return payload

    def save(self, key, payload):
        """Save ``payload`` under ``key``: the data file first, so the index never names a missing one."""
        try:
            overloads = self._load_index()
        except Exception:  # damaged: this save starts a new index
            overloads = {}
        name = overloads.get(key)
        if name is None:
            taken = set(overloads.values())
            name = next(self._data_name(i) for i in range(1, len(taken) + 2) if self._data_name(i) not in taken)
        self._save_data(name, (key, payload))
        if overloads.get(key) != name:
            overloads[key] = name
            self._save_index(overloads)

    def discard(self, key):
        """Remove the entry of ``key`` (its data file; the index itself when it cannot be read)."""
        with contextlib.suppress(OSError):
            try:
                name = self._load_index().get(key)
            except Exception:
                os.remove(self._index_path)
                return
            if name is not None:
                os.remove(self._data_path(name))

    def describe(self):
        """The entry's files, as a glob pattern."""
        return os.path.join(self._cache_path, self._index_name[:-len(".nbi")] + ".*")


class KeyedFunctionCache(FunctionCache):
    """Numba's disk cache of one function with the loading, saving and repair described above.

    The index key is Numba's plus ``extra_key()`` (the caller's; e.g. a hash of
    every file the kernel may inline), so an entry is only found again while
    that value is unchanged.
    """

    _impl_class = _KeyedImpl

    def __init__(self, py_func, extra_key):
        self._extra_key = extra_key
        super().__init__(py_func)
        locator = self._impl.locator
        stamp, base = locator.get_source_stamp(), self._impl.filename_base
        self._cache_file = _EntryFiles(self._cache_path, base, stamp)
        installed = InTreeCacheLocator(py_func, inspect.getfile(py_func)).get_cache_path()
        self._sources = [self._cache_file]
        if os.path.abspath(installed) != os.path.abspath(self._cache_path):
            self._sources.append(_EntryFiles(installed, base, stamp))

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), self._extra_key())

    def _load_overload(self, sig, target_context):
        if not self._enabled:
            return None
        key = self._index_key(sig, target_context.codegen())
        for files in self._sources:
            try:
                payload = files.load(key)
                if payload is not None:
                    return self._impl.rebuild(target_context, payload)
            except Exception as error:  # whatever a damaged file raises: unpickling, LLVM, a wrong key
                files.discard(key)
                report_once("damaged", (
                    f"nbsparse kernel cache: an entry of {files.describe()} could not be loaded "
                    f"({type(error).__name__}: {error}); the kernel is compiled again and the entry replaced"))
        return None

    def save_overload(self, sig, data):
        try:
            self._save_overload(sig, data)
        except OSError as error:
            report_once("unsaved", (
                f"nbsparse kernel cache: compiled kernels cannot be saved ({error}); they are compiled "
                "in memory, again in each new process (seconds per kernel). Set NUMBA_CACHE_DIR to a "
                "writable directory with free space, or run `python -m nbsparse check` once where the "
                "package is installed"))

    def _save_overload(self, sig, data):
        if not self._enabled or not self._impl.check_cachable(data):
            return
        self._impl.locator.ensure_cache_path()
        key = self._index_key(sig, data.codegen)
        self._cache_file.save(key, self._impl.reduce(data))
