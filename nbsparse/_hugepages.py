"""Large zeroed host arrays on transparent huge pages.

The weight gradients are fresh ``W``-sized arrays, so their first write pays a
page fault per page. ``np.zeros`` (calloc) often lands on 4 KiB pages here, and
in a virtual machine each of those faults is expensive: a fresh 16.7 MB
gradient cost 25 ms to fill the first time against 1.5 ms the second. An
anonymous mapping aligned to 2 MiB and marked ``MADV_HUGEPAGE`` faults once per
2 MiB instead (3.5 ms for the same fill, and steadily so). The memory is
returned to the system when the array and every view of it are gone. Nothing
here imports Numba.
"""

import mmap
import sys

import numpy as np

HUGE_PAGE = 2 << 20
# Below this, np.zeros is as good: a few pages, or memory the allocator reuses.
MIN_BYTES = 4 << 20
_SUPPORTED = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")


def zeros(shape, dtype):
    """A zeroed C-contiguous array, on 2 MiB-aligned huge pages when large (Linux).

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    numpy.ndarray
        Writeable and zero-filled; for ``MIN_BYTES`` or more on Linux, a view of
        a private anonymous mapping (``base`` holds it), else ``np.zeros``.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if not _SUPPORTED or nbytes < MIN_BYTES:
        return np.zeros(shape, dtype=dtype)
    try:
        buffer = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:
        return np.zeros(shape, dtype=dtype)
    start = np.frombuffer(buffer, np.uint8, count=1).ctypes.data
    offset = -start % HUGE_PAGE
    try:
        buffer.madvise(mmap.MADV_HUGEPAGE, 0, nbytes + HUGE_PAGE)
    except OSError:  # huge pages disabled: still a valid zeroed mapping
        pass
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
