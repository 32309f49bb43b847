"""CUDA kernels for the block-sparse products and their gradients.

The launchers mirror ``nbsparse._cpu`` (``products``, ``outer``, ``grads``): same names and positional
arguments, device arrays in, results written in place (``gemv``, ``outer``,
``grad_h`` and ``bias_grad`` add into their output; ``set_bias`` assigns). Every
kernel is grid-stride over a flat index whose fastest part is the last axis, so
neighbouring threads touch neighbouring addresses of ``W``/``o``.

Race freedom: ``gemv``, ``set_bias`` and ``grad_h`` give each output element to
one thread. ``outer`` and ``bias_grad`` update blocks that repeated indices
share: by default with ``cuda.atomic.add`` (summation order then varies run to
run); with ``deterministic=True`` the host sorts the updates by target block and
one thread sums each block element's updates in that fixed order.
"""

import functools

import numpy as np
from numba import cuda

from . import arrays, launch


@launch.kernel
def _gemv_flat(o, W, h, input_idx, output_idx):
    """``o[b, j] += sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``, one thread per element.

    Thread ``t`` alone writes ``o[b, j, k]`` (``k`` fastest), so writes never
    collide. Loads of ``W`` are coalesced along ``k``; ``h[b, i, r]`` is one address
    for all threads of a row (a broadcast). Used when ``oSize`` is small next to the
    block, where the tiled kernel would leave most threads idle.
    """
    o_win, o_size = o.shape[1], o.shape[2]
    i_win, i_size = h.shape[1], h.shape[2]
    for t in range(cuda.grid(1), o.size, cuda.gridsize(1)):
        b, j, k = t // (o_win * o_size), (t // o_size) % o_win, t % o_size
        out_block = output_idx[b, j]
        acc = o[b, j, k]
        for i in range(i_win):
            in_block = input_idx[b, i]
            for r in range(i_size):
                acc += h[b, i, r] * W[in_block, out_block, r, k]
        o[b, j, k] = acc


@functools.cache
def _gemv_tiled(threads, tile):
    """The gemv kernel for blocks of ``threads`` threads staging ``tile <= threads`` inputs."""

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_PRODUCTS)
    def gemv_tiled(o, W, h, input_idx, output_idx):
        """``o[b, j] += sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``, a block per tile.

        A work unit is one output row ``(b, j)`` and ``threads`` consecutive ``k``;
        blocks take units grid-stride (a block-uniform loop, so the barriers are
        reached by every thread). Thread ``k`` alone writes ``o[b, j, k]``. The block
        stages ``h[b, i, r0:r0 + tile]`` in shared memory once for all its threads.
        """
        h_tile = cuda.shared.array(tile, dtype=h.dtype)
        batch, o_win, o_size = o.shape
        i_win, i_size = h.shape[1], h.shape[2]
        k_tiles = (o_size + threads - 1) // threads
        tid = cuda.threadIdx.x
        for unit in range(cuda.blockIdx.x, batch * o_win * k_tiles, cuda.gridDim.x):
            row = unit // k_tiles
            b, j = row // o_win, row % o_win
            k = (unit % k_tiles) * threads + tid
            active = k < o_size  # idle threads of a ragged tile still load and sync
            out_block = output_idx[b, j]
            acc = o[b, j, k] if active else o.dtype.type(0)
            for i in range(i_win):
                in_block = input_idx[b, i]
                for r0 in range(0, i_size, tile):
                    n_r = min(tile, i_size - r0)
                    if tid < n_r:
                        h_tile[tid] = h[b, i, r0 + tid]
                    cuda.syncthreads()
                    if active:
                        for r in range(n_r):
                            acc += h_tile[r] * W[in_block, out_block, r0 + r, k]
                    cuda.syncthreads()  # everyone is done with h_tile before it is refilled
            if active:
                o[b, j, k] = acc

    return gemv_tiled


@launch.kernel
def _set_bias(o, bias, output_idx):
    """``o[b, j] = bias[output_idx[b, j]]``; thread ``t`` alone writes ``o[b, j, k]``."""
    o_win, o_size = o.shape[1], o.shape[2]
    for t in range(cuda.grid(1), o.size, cuda.gridsize(1)):
        b, j, k = t // (o_win * o_size), (t // o_size) % o_win, t % o_size
        o[b, j, k] = bias[output_idx[b, j], k]


@launch.kernel
def _outer_atomic(o, x, y, x_idx, y_idx, alpha):
    """``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``, a thread per term.

    Thread ``t`` computes one ``(b, i, j, r, k)`` term (``k`` fastest). Repeated
    block pairs send several threads to the same ``o`` element, so every update is
    a ``cuda.atomic.add``.
    """
    x_win, x_size = x.shape[1], x.shape[2]
    y_win, y_size = y.shape[1], y.shape[2]
    n = x.shape[0] * x_win * y_win * x_size * y_size
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        k = t % y_size
        q = t // y_size
        r = q % x_size
        q //= x_size
        j = q % y_win
        q //= y_win
        i, b = q % x_win, q // x_win
        cuda.atomic.add(o, (x_idx[b, i], y_idx[b, j], r, k), alpha * x[b, i, r] * y[b, j, k])


@launch.kernel
def _outer_segments(o, x, y, x_idx, y_idx, alpha, order, starts):
    """``outer`` without atomics: one thread per (segment, r, k).

    ``order`` lists the flat ``(b, i, j)`` triples sorted by the block they update;
    segment ``s`` is ``order[starts[s]:starts[s + 1]]``, all of one block. Thread
    ``t`` alone writes ``o[block, r, k]`` and adds the segment's terms in sorted
    order, so the result is bit-identical run to run.
    """
    x_win, x_size = x.shape[1], x.shape[2]
    y_win, y_size = y.shape[1], y.shape[2]
    pairs = x_win * y_win
    n = (starts.shape[0] - 1) * x_size * y_size
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        k = t % y_size
        r = (t // y_size) % x_size
        s = t // (x_size * y_size)
        first = order[starts[s]]
        b0 = first // pairs
        x_block = x_idx[b0, (first // y_win) % x_win]
        y_block = y_idx[b0, first % y_win]
        acc = o[x_block, y_block, r, k]
        for p in range(starts[s], starts[s + 1]):
            q = order[p]
            b, i, j = q // pairs, (q // y_win) % x_win, q % y_win
            acc += alpha * x[b, i, r] * y[b, j, k]
        o[x_block, y_block, r, k] = acc


@functools.cache
def _grad_h(threads):
    """The ``grad_h`` kernel for blocks of at most ``threads`` threads (its launch bounds)."""

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_PRODUCTS)
    def grad_h(dh, W, g, input_idx, output_idx):
        """``dh[b, i] += sum_j W[input_idx[b, i], output_idx[b, j]] @ g[b, j]``, one thread per element.

        Thread ``t`` alone writes ``dh[b, i, r]`` (``r`` fastest), so no atomics are
        needed. Each thread reads a row of a ``W`` block along ``k``; ``g[b, j, k]`` is
        one address for all threads of a row.
        """
        i_win, i_size = dh.shape[1], dh.shape[2]
        o_win, o_size = g.shape[1], g.shape[2]
        zero = dh.dtype.type(0)
        for t in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
            b, i, r = t // (i_win * i_size), (t // i_size) % i_win, t % i_size
            in_block = input_idx[b, i]
            acc = dh[b, i, r]
            for j in range(o_win):
                out_block = output_idx[b, j]
                part = zero  # one partial sum per output block, as the CPU kernel does
                for k in range(o_size):
                    part += W[in_block, out_block, r, k] * g[b, j, k]
                acc += part
            dh[b, i, r] = acc

    return grad_h


@launch.kernel
def _bias_grad_atomic(db, g, output_idx):
    """``db[output_idx[b, j]] += g[b, j]``, one thread per ``g`` element.

    Rows ``b`` that select the same block update the same ``db`` element, so every
    update is a ``cuda.atomic.add``.
    """
    o_win, o_size = g.shape[1], g.shape[2]
    for t in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        b, j, k = t // (o_win * o_size), (t // o_size) % o_win, t % o_size
        cuda.atomic.add(db, (output_idx[b, j], k), g[b, j, k])


@launch.kernel
def _bias_grad_segments(db, g, output_idx, order, starts):
    """``bias_grad`` without atomics: one thread per (segment, k).

    ``order`` lists the flat ``(b, j)`` pairs sorted (stably) by ``output_idx``;
    thread ``t`` alone writes ``db[block, k]`` and adds its segment's rows in that
    fixed order, so the result is bit-identical run to run.
    """
    o_win, o_size = g.shape[1], g.shape[2]
    n = (starts.shape[0] - 1) * o_size
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        s, k = t // o_size, t % o_size
        first = order[starts[s]]
        block = output_idx[first // o_win, first % o_win]
        acc = db[block, k]
        for p in range(starts[s], starts[s + 1]):
            q = order[p]
            acc += g[q // o_win, q % o_win, k]
        db[block, k] = acc


def _segments(keys, stream):
    """Device arrays ``order`` (stable argsort of ``keys``) and ``starts`` (run starts, then n)."""
    order = np.argsort(keys, kind="stable").astype(np.intp)
    sorted_keys = keys[order]
    starts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate(([0], starts, [keys.size])).astype(np.intp)
    return cuda.to_device(order, stream=stream), cuda.to_device(starts, stream=stream)


def gemv(o, W, h, input_idx, output_idx, *, stream=0):
    """Same contract as ``_cpu.products.gemv``; all arguments are device arrays."""
    if o.size == 0:  # launching zero blocks is an error; an empty output is not
        return
    threads = launch.threads()
    batch, o_win, o_size = o.shape
    if 2 * o_size >= threads:
        k_tiles = -(-o_size // threads)
        kernel = _gemv_tiled(threads, min(launch.TILE, threads))
        grid = launch.blocks_for(batch * o_win * k_tiles, per_block=1)
    else:
        kernel, grid = _gemv_flat, launch.blocks_for(o.size)
    kernel[grid, threads, stream](o, W, h, input_idx, output_idx)


def set_bias(o, bias, output_idx, *, stream=0):
    """Same contract as ``_cpu.products.set_bias``; all arguments are device arrays."""
    if o.size == 0:
        return
    _set_bias[launch.blocks_for(o.size), launch.threads(), stream](o, bias, output_idx)


def outer(o, x, y, x_idx, y_idx, alpha, clear=False, *, stream=0, deterministic=False):
    """Same contract as ``_cpu.outer.outer``; all arrays are device arrays.

    ``clear`` zeroes ``o`` first. ``deterministic=True`` trades the atomics for a
    host-side sort of the block pairs (one copy of the indices to the host and a
    synchronisation), giving bit-identical results run to run.
    """
    if clear:
        arrays.fill(o, 0, stream=stream)
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    if batch * x_win * y_win * x_size * y_size == 0:
        return
    threads = launch.threads()
    if not deterministic:
        n = batch * x_win * y_win * x_size * y_size
        _outer_atomic[launch.blocks_for(n), threads, stream](o, x, y, x_idx, y_idx, alpha)
        return
    x_host = x_idx.copy_to_host(stream=stream).astype(np.int64)
    y_host = y_idx.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    keys = (x_host[:, :, None] * o.shape[1] + y_host[:, None, :]).ravel()
    order, starts = _segments(keys, stream)
    n = (starts.shape[0] - 1) * x_size * y_size
    _outer_segments[launch.blocks_for(n), threads, stream](
        o, x, y, x_idx, y_idx, alpha, order, starts
    )


def grad_h(dh, W, g, input_idx, output_idx, *, stream=0):
    """Same contract as ``_cpu.grads.grad_h``; all arguments are device arrays."""
    if dh.size == 0:
        return
    threads = launch.threads()
    _grad_h(threads)[launch.blocks_for(dh.size), threads, stream](dh, W, g, input_idx, output_idx)


def bias_grad(db, g, output_idx, *, stream=0, deterministic=False):
    """Same contract as ``_cpu.grads.bias_grad``; all arguments are device arrays.

    ``deterministic=True`` as for :func:`outer`.
    """
    if g.size == 0:
        return
    threads = launch.threads()
    if not deterministic:
        _bias_grad_atomic[launch.blocks_for(g.size), threads, stream](db, g, output_idx)
        return
    keys = output_idx.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    order, starts = _segments(keys.ravel(), stream)
    n = (starts.shape[0] - 1) * g.shape[2]
    _bias_grad_segments[launch.blocks_for(n), threads, stream](db, g, output_idx, order, starts)
