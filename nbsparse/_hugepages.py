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
it dies: it goes back to a cache, and the next request it fits (the same size,
or up to half as large) gets it again, already mapped (a training loop asks for
the same shapes every step).

The cache must not hoard. Keyed by exact size, a loop of varying shapes kept
every dropped result: 1.05 GiB cached and a peak RSS of 1.27 GiB against 0.28
GiB with recycling off. So the cache holds at most

- as many bytes as the program ever had in use on these mappings at once (what
  the next step of a loop can ask for again), dropping the least recently
  freed mappings first;
- :func:`cache_limit`: ``NBSPARSE_HOST_CACHE_MB``, or a quarter of the memory
  this process may use (the physical memory, or the cgroup's limit when lower:
  a container's).

A mapping that cannot be made (``ENOMEM``: an address-space limit, a full
machine) empties the cache and is tried once more before the caller gets a
plain NumPy array or its ``MemoryError``. :func:`free_cached_memory` unmaps what
the cache holds. Nothing here imports Numba.
"""

import functools
import math
import mmap
import os
import sys
import threading
import weakref

import numpy as np

HUGE_PAGE = 2 << 20
# Below this, np.zeros / np.empty are as good: a few pages, or memory malloc reuses.
MIN_BYTES = 4 << 20
# A cached mapping serves a request of at least this fraction of its size.
MIN_FILL = 0.5
_SUPPORTED = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")
CACHE_LIMIT_VARIABLE = "NBSPARSE_HOST_CACHE_MB"

_lock = threading.RLock()  # RLock: a finalizer may run, by garbage collection, inside a locked block
_free = []  # cached _Mapping, least recently freed first
_cached_bytes = 0
_in_use_bytes = 0  # bytes of mappings leased to live arrays
_peak_in_use_bytes = 0


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


def cgroup_memory_limit(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup"):
    """The lowest memory limit in bytes of this process's cgroup and its ancestors (v2 or v1), or None."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    files = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            files.append((root, path, "memory.max"))
        elif "memory" in controllers.split(","):
            files.append((os.path.join(root, "memory"), path, "memory.limit_in_bytes"))
    limits = []
    for base, path, name in files:
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            try:
                with open(os.path.join(base, *parts[:depth], name)) as f:
                    value = f.read().strip()
            except OSError:
                continue
            if value.isdigit():  # "max" (v2) is no limit; v1's "none" is a number near 2**63
                limits.append(int(value))
    return min(limits) if limits else None


@functools.cache
def usable_memory():
    """Bytes this process may use: the physical memory, or its cgroup's limit when lower."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 4 << 30
    limit = cgroup_memory_limit()
    return physical if limit is None else min(physical, limit)


def cache_limit():
    """Bytes of freed mappings kept for reuse at most: ``NBSPARSE_HOST_CACHE_MB``, or a quarter of the usable memory.

    Raises
    ------
    ValueError
        ``NBSPARSE_HOST_CACHE_MB`` is not a finite number of MiB, 0 or more.
    """
    value = os.environ.get(CACHE_LIMIT_VARIABLE, "").strip()
    if not value:
        return usable_memory() // 4
    try:
        mib = float(value)
    except ValueError:
        mib = math.nan
    if not (math.isfinite(mib) and mib >= 0):
        raise ValueError(f"{CACHE_LIMIT_VARIABLE}={value!r} is not a number of MiB, 0 or more "
                         "(0 turns recycling off)")
    return int(mib * (1 << 20))


def _recycle(mapping):
    """Finalizer of a lease: keep ``mapping`` for reuse, unmapping the least recently freed ones that no longer fit."""
    global _cached_bytes, _in_use_bytes
    try:
        limit = cache_limit()
    except ValueError:  # reported by the allocation that reads it; never from a finalizer
        limit = 0
    unmap = []
    with _lock:
        _in_use_bytes -= mapping.size
        budget = min(limit, _peak_in_use_bytes)
        if mapping.size > budget:
            unmap.append(mapping)
        else:
            _free.append(mapping)
            _cached_bytes += mapping.size
            while _cached_bytes > budget:
                oldest = _free.pop(0)
                _cached_bytes -= oldest.size
                unmap.append(oldest)
    for old in unmap:
        old.buffer.close()


def _take(size):
    """The smallest cached mapping of ``size`` to ``size / MIN_FILL`` bytes (its last user's contents), or None."""
    global _cached_bytes
    with _lock:
        fits = [m for m in _free if size <= m.size <= size / MIN_FILL]
        if not fits:
            return None
        mapping = min(fits, key=lambda m: m.size)
        _free.remove(mapping)
        _cached_bytes -= mapping.size
        return mapping


def _lease(mapping):
    """Count ``mapping`` as in use."""
    global _in_use_bytes, _peak_in_use_bytes
    with _lock:
        _in_use_bytes += mapping.size
        _peak_in_use_bytes = max(_peak_in_use_bytes, _in_use_bytes)


def _new_mapping(size):
    """A fresh mapping, after emptying the cache if the first try fails; None if the second fails too."""
    for attempt in range(2):
        try:
            return _Mapping(size)
        except OSError:  # ENOMEM: an address-space limit, or no memory left
            if attempt == 0 and not free_cached_memory():
                return None
    return None


def free_cached_memory():
    """Unmap every cached mapping; returns the number of bytes given back to the system.

    Arrays still in use are not affected.
    """
    global _cached_bytes
    with _lock:
        mappings = list(_free)
        _free.clear()
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
        mapping = _new_mapping(size)
        if mapping is None:
            return None, False
    _lease(mapping)
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
