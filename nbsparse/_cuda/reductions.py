"""Shared-memory tree reductions over a thread block, for the kernels that reduce a row per block.

Each helper stores the calling thread's partial value in ``buf[tid]``, halves
the active threads until ``buf[0]`` holds the block's result, returns it to
every thread and ends on a barrier, so the buffer may be written again at once.
``threads`` is the block size, a power of two; every thread of the block must
call the helper (it holds barriers). The pair helpers reduce two buffers in
one tree, a barrier per step for both.

The helpers are :func:`.launch.device` functions, inlined into each kernel.
"""

import math

from numba import cuda

from .launch import device


@device
def _combine(buf, tid, step, take_max):
    """One step of the tree: ``buf[tid]`` takes in ``buf[tid + step]`` (``max`` or sum)."""
    if take_max:
        buf[tid] = max(buf[tid], buf[tid + step])
    else:
        buf[tid] += buf[tid + step]


@device
def _reduce(buf, tid, threads, value, take_max):
    """``max`` (``take_max``) or sum of ``value`` over the block, by a tree in ``buf``."""
    buf[tid] = value
    cuda.syncthreads()
    step = threads // 2
    while step > 0:
        if tid < step:
            _combine(buf, tid, step, take_max)
        cuda.syncthreads()
        step //= 2
    result = buf[0]
    cuda.syncthreads()  # all have read buf[0] before it is overwritten
    return result


@device
def _reduce2(buf_a, buf_b, tid, threads, a, b, take_max):
    """:func:`_reduce` of ``a`` in ``buf_a`` and ``b`` in ``buf_b`` side by side, one tree for both."""
    buf_a[tid], buf_b[tid] = a, b
    cuda.syncthreads()
    step = threads // 2
    while step > 0:
        if tid < step:
            _combine(buf_a, tid, step, take_max)
            _combine(buf_b, tid, step, take_max)
        cuda.syncthreads()
        step //= 2
    result_a, result_b = buf_a[0], buf_b[0]
    cuda.syncthreads()
    return result_a, result_b


@device
def block_sum(buf, tid, threads, value):
    """Sum of ``value`` over the threads of the block, in a fixed tree order.

    Parameters
    ----------
    buf : shared array
        At least ``threads`` elements of the value's dtype; overwritten.
    tid : int
        The calling thread's index in the block.
    threads : int
        Threads of the block, a power of two.
    value
        The calling thread's partial sum.

    Returns
    -------
    scalar
        The block's sum, the same in every thread.
    """
    return _reduce(buf, tid, threads, value, False)


@device
def block_max(buf, tid, threads, value):
    """Maximum of ``value`` over the threads of the block; as :func:`block_sum` otherwise."""
    return _reduce(buf, tid, threads, value, True)


@device
def block_sum2(buf_a, buf_b, tid, threads, a, b):
    """``(block_sum(a), block_sum(b))`` in one tree over ``buf_a`` and ``buf_b``."""
    return _reduce2(buf_a, buf_b, tid, threads, a, b, False)


@device
def block_max2(buf_a, buf_b, tid, threads, a, b):
    """``(block_max(a), block_max(b))`` in one tree over ``buf_a`` and ``buf_b``."""
    return _reduce2(buf_a, buf_b, tid, threads, a, b, True)


@device
def ranks_before(value_a, index_a, value_b, index_b):
    """True when ``(value_a, index_a)`` ranks before ``(value_b, index_b)``: a larger value, or an equal one
    with a lower index; NaN after every number, as NumPy sorts it. A strict total order over distinct
    indices, NaN included."""
    if math.isnan(value_a):
        return math.isnan(value_b) and index_a < index_b
    return math.isnan(value_b) or value_a > value_b or (value_a == value_b and index_a < index_b)


@device
def block_argmax(buf_v, buf_i, tid, threads, value, index):
    """The ``(value, index)`` pair of the block that ranks first (:func:`ranks_before`), in every thread.

    ``buf_v`` holds values, ``buf_i`` integer indices; as :func:`block_sum` otherwise.
    """
    buf_v[tid], buf_i[tid] = value, index
    cuda.syncthreads()
    step = threads // 2
    while step > 0:
        if tid < step and ranks_before(buf_v[tid + step], buf_i[tid + step], buf_v[tid], buf_i[tid]):
            buf_v[tid], buf_i[tid] = buf_v[tid + step], buf_i[tid + step]
        cuda.syncthreads()
        step //= 2
    value, index = buf_v[0], buf_i[0]
    cuda.syncthreads()
    return value, index
