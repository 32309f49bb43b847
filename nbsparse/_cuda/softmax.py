"""CUDA kernels for the softmax and its gradient along the last axis of a 2-D array.

One thread block per row (grid-stride over rows). Thread ``tid`` alone writes the
columns ``k = tid, tid + threads, ...`` of its block's row, so writes never
collide; the row's max and sum are shared-memory tree reductions
(:mod:`.reductions`). The block size is a compile-time power of two, so each
size is its own kernel from a cached factory.
"""

import functools
import math

from numba import cuda

from . import launch
from .reductions import block_max, block_sum


@functools.cache
def _kernels(threads):
    """``(softmax_rows, softmax_grad_rows)`` kernels for blocks of ``threads`` (a power of two)."""

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_ROWS)
    def softmax_rows_kernel(x, out):
        """``out[r] = exp(x[r] - max(x[r])) / sum(exp(x[r] - max(x[r])))``, a block per row."""
        buf = cuda.shared.array(threads, dtype=x.dtype)
        tid = cuda.threadIdx.x
        n_rows, n = x.shape
        # The row loop is block-uniform, so every thread reaches every barrier.
        for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            peak = x[row, 0]  # a member of the row: the identity for threads with no column
            for k in range(tid, n, threads):
                peak = max(peak, x[row, k])
            peak = block_max(buf, tid, threads, peak)

            total = x.dtype.type(0)
            for k in range(tid, n, threads):
                e = math.exp(x[row, k] - peak)
                out[row, k] = e
                total += e
            scale = x.dtype.type(1) / block_sum(buf, tid, threads, total)
            for k in range(tid, n, threads):
                out[row, k] *= scale

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_ROWS)
    def softmax_grad_rows_kernel(g, y, out):
        """``out[r] = y[r] * (g[r] - sum(g[r] * y[r]))``, a block per row."""
        buf = cuda.shared.array(threads, dtype=y.dtype)
        tid = cuda.threadIdx.x
        n_rows, n = y.shape
        for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            dot = y.dtype.type(0)
            for k in range(tid, n, threads):
                dot += g[row, k] * y[row, k]
            dot = block_sum(buf, tid, threads, dot)
            for k in range(tid, n, threads):
                out[row, k] = y[row, k] * (g[row, k] - dot)

    return softmax_rows_kernel, softmax_grad_rows_kernel


def softmax_rows(x, out, *, stream=0):
    """Same contract as ``_cpu.softmax.softmax_rows``; both arguments are device arrays."""
    if out.size == 0:
        return
    threads = launch.reduction_threads(x.shape[1])
    kernel = _kernels(threads)[0]
    kernel[launch.blocks_for(x.shape[0], per_block=1), threads, stream](x, out)


def softmax_grad_rows(g, y, out, *, stream=0):
    """Same contract as ``_cpu.softmax.softmax_grad_rows``; all arguments are device arrays."""
    if out.size == 0:
        return
    threads = launch.reduction_threads(y.shape[1])
    kernel = _kernels(threads)[1]
    kernel[launch.blocks_for(y.shape[0], per_block=1), threads, stream](g, y, out)
