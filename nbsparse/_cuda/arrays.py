"""Small device-array utilities the dispatch layer needs: fill and index range checks."""

import numpy as np
from numba import cuda

from . import launch


@launch.kernel
def _fill(a, value):
    """``a[:] = value`` on a 1-D array; thread ``t`` alone writes ``a[t]``."""
    for t in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[t] = value


@launch.kernel
def _count_outside(idx, n, count):
    """``count[0] += number of idx values outside [0, n)``, with one atomic per bad value."""
    for t in range(cuda.grid(1), idx.size, cuda.gridsize(1)):
        value = idx[t]
        if value < 0 or value >= n:
            cuda.atomic.add(count, 0, 1)


def fill(a, value, *, stream=0):
    """Set every element of the C-contiguous device array ``a`` to ``value``."""
    if a.size:
        flat = a.reshape(a.size)
        _fill[launch.blocks_for(a.size), launch.threads(), stream](flat, a.dtype.type(value))


def count_outside(idx, n, *, stream=0):
    """How many values of the C-contiguous device array ``idx`` lie outside ``[0, n)``.

    Moves 4 bytes to the host (and synchronises ``stream``), whatever the size of ``idx``.
    """
    if idx.size == 0:
        return 0
    count = cuda.to_device(np.zeros(1, dtype=np.int32), stream=stream)
    flat = idx.reshape(idx.size)
    _count_outside[launch.blocks_for(idx.size), launch.threads(), stream](flat, np.int64(n), count)
    host = count.copy_to_host(stream=stream)
    if stream:  # the copy is asynchronous on a non-default stream
        stream.synchronize()
    return int(host[0])


@launch.kernel
def _gather_rows(dst, src, rows):
    """``dst[k, :] = src[rows[k], :]`` on 2-D arrays; thread ``t`` alone writes ``dst.flat[t]``."""
    width = dst.shape[1]
    for t in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        k, c = t // width, t % width
        dst[k, c] = src[rows[k], c]


@launch.kernel
def _scatter_rows(dst, rows, src):
    """``dst[rows[k], :] = src[k, :]`` on 2-D arrays, ``rows`` distinct: no two threads write one element."""
    width = src.shape[1]
    for t in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        k, c = t // width, t % width
        dst[rows[k], c] = src[k, c]


def gather_rows(dst, src, rows, *, stream=0):
    """``dst[k] = src[rows[k]]`` for the 2-D C-contiguous device arrays ``dst``, ``src`` and ``intp`` ``rows``."""
    if dst.size:
        _gather_rows[launch.blocks_for(dst.size), launch.threads(), stream](dst, src, rows)


def scatter_rows(dst, rows, src, *, stream=0):
    """``dst[rows[k]] = src[k]`` for the 2-D C-contiguous device arrays ``dst``, ``src``; ``rows`` distinct."""
    if src.size:
        _scatter_rows[launch.blocks_for(src.size), launch.threads(), stream](dst, rows, src)
