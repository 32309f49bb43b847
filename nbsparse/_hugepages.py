"""Large host arrays on transparent huge pages, recycled when the caller drops them.

The weight gradients are fresh ``W``-sized arrays, so their first write pays a
page fault per page, and the kernel of the operating system zeroes every page
it hands out. ``np.zeros`` (calloc) often lands on 4 KiB pages here, and in a
virtual machine each of those faults is expensive: a fresh 16.7 MB gradient
cost 25 ms to fill the first time against 1.5 ms the second. An anonymous
mapping aligned to 2 MiB and marked ``MADV_HUGEPAGE`` faults once per 2 MiB
instead (3.5 ms for the same fill).

Even on huge pages the faults of a 128 MB gradient cost about as much as the
kernel that fills it. So a mapping is not unmapped when the last array viewing
it dies: it goes back to a cache, and the next request of the same rounded
size gets it again, already mapped (a training loop asks for the same shapes
every step). The cache holds at most :func:`cache_limit` bytes (a quarter of
the physical memory, or ``NBSPARSE_HOST_CACHE_MB``; 0 turns recycling off);
:func:`free_cached_memory` unmaps what it holds. Nothing here imports Numba.
"""

import mmap
import os
import sys
import threading
import weakref

import numpy as np

HUGE_PAGE = 2 << 20
# Below this, np.zeros / np.empty are as good: a few pages, or memory malloc reuses.
MIN_BYTES = 4 << 20
_SUPPORTED = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")
CACHE_LIMIT_VARIABLE = "NBSPARSE_HOST_CACHE_MB"

_lock = threading.RLock()  # RLock: a finalizer may run, by garbage collection, inside a locked block
_cache = {}  # rounded size in bytes -> list of free _Mapping
_cached_bytes = 0


class _Mapping:
    """A private anonymous mapping with a 2 MiB-aligned usable range of ``size`` bytes."""

    __slots__ = ("buffer", "address", "size")

    def __init__(self, size):
        self.buffer = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        start = np.frombuffer(self.buffer, np.uint8, count=1).ctypes.data
        self.address = start + (-start % HUGE_PAGE)
        self.size = size
        try:
            self.buffer.madvise(mmap.MADV_HUGEPAGE, 0, size + HUGE_PAGE)
        except OSError:  # huge pages disabled: still a valid mapping
            pass


class _Lease:
    """What a handed-out array views (its ``base``); when it dies, so has every view."""

    def __init__(self, mapping, shape, dtype):
        self.__array_interface__ = {
            "version": 3, "shape": shape, "typestr": dtype.str, "data": (mapping.address, False),
        }


def cache_limit():
    """Bytes of freed mappings kept for reuse: ``NBSPARSE_HOST_CACHE_MB`` or a quarter of the memory."""
    value = os.environ.get(CACHE_LIMIT_VARIABLE, "").strip()
    if value:
        try:
            return max(0, int(float(value) * (1 << 20)))
        except ValueError:
            raise ValueError(f"{CACHE_LIMIT_VARIABLE}={value!r} is not a number of MiB") from None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def _recycle(mapping):
    """Finalizer of a lease: keep ``mapping`` for reuse, or unmap it if the cache is full."""
    global _cached_bytes
    try:
        limit = cache_limit()
    except ValueError:  # reported by the allocation that reads it; never from a finalizer
        limit = 0
    with _lock:
        if _cached_bytes + mapping.size <= limit:
            _cache.setdefault(mapping.size, []).append(mapping)
            _cached_bytes += mapping.size
            return
    mapping.buffer.close()


def _take(size):
    """A cached mapping of ``size`` bytes (contents left by its last user), or None."""
    global _cached_bytes
    with _lock:
        free = _cache.get(size)
        if not free:
            return None
        _cached_bytes -= size
        return free.pop()


def free_cached_memory():
    """Unmap every cached mapping; returns the number of bytes given back to the system.

    Arrays still in use are not affected.
    """
    global _cached_bytes
    with _lock:
        mappings = [m for free in _cache.values() for m in free]
        _cache.clear()
        released, _cached_bytes = _cached_bytes, 0
    for mapping in mappings:
        mapping.buffer.close()
    return released


def cached_bytes():
    """Bytes of freed mappings the cache holds now."""
    return _cached_bytes


def _large(shape, dtype):
    """``(array, recycled)`` on a mapping for ``MIN_BYTES`` or more (Linux), else ``(None, False)``."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if not _SUPPORTED or nbytes < MIN_BYTES:
        return None, False
    cache_limit()  # a malformed setting is the caller's error, raised here
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    mapping = _take(size)
    recycled = mapping is not None
    if not recycled:
        try:
            mapping = _Mapping(size)
        except OSError:
            return None, False
    lease = _Lease(mapping, (count,), dtype)
    finalizer = weakref.finalize(lease, _recycle, mapping)
    finalizer.atexit = False  # at exit the mappings go with the process
    return np.asarray(lease).reshape(shape), recycled


def empty(shape, dtype):
    """An uninitialised C-contiguous array, on recycled or fresh huge pages when large (Linux).

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    numpy.ndarray
        Writeable; its contents are arbitrary (a recycled mapping keeps what its
        last user wrote). For ``MIN_BYTES`` or more on Linux its ``base`` leases a
        mapping that returns to the cache when the array and every view of it
        are gone; else ``np.empty``.
    """
    array, _ = _large(shape, dtype)
    return np.empty(shape, dtype=dtype) if array is None else array


def zeros(shape, dtype):
    """A zeroed C-contiguous array, on recycled or fresh huge pages when large (Linux).

    Parameters
    ----------
    shape, dtype
        As for :func:`empty`.

    Returns
    -------
    numpy.ndarray
        As :func:`empty` returns, zero-filled: a fresh mapping comes zeroed from
        the system, a recycled one is cleared here.
    """
    array, recycled = _large(shape, dtype)
    if array is None:
        return np.zeros(shape, dtype=dtype)
    if recycled:
        array.fill(0)
    return array
