"""CPU kernels for the block-sparse products and their gradients.

Race freedom: ``gemv``, ``set_bias`` and ``grad_h`` parallelise over output
rows ``(b, j)`` or ``(b, i)``, each owned by one iteration. ``outer`` (also the
weight gradient) groups the ``(b, i, j)`` triples by the weight block they
update and gives each (block, row chunk) to one iteration, so repeated block
pairs never race and the sum order is fixed run to run. ``bias_grad`` is
serial: it is one pass over ``grad_output``, memory-bound and small.
"""

import numpy as np
from numba import njit, prange

# Every fast-math flag except nnan/ninf: with those, NaN and inf would stop
# propagating (Numba folds ``v != v`` away); "reassoc" lets the reductions vectorise.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Rows of a weight block handled by one parallel iteration of ``outer``: small
# enough to spread one block over both cores, large enough that each ``y`` row
# is re-read from cache only ``x_size / OUTER_ROW_CHUNK`` times.
OUTER_ROW_CHUNK = 16


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def gemv(o, W, h, input_idx, output_idx):
    """In place: ``o[b, j] += sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``."""
    batch, o_win, o_size = o.shape
    i_win, i_size = h.shape[1], h.shape[2]
    for t in prange(batch * o_win):  # iteration t alone writes o[b, j]
        b, j = t // o_win, t % o_win
        out = o[b, j]
        out_block = output_idx[b, j]
        for i in range(i_win):
            block = W[input_idx[b, i], out_block]
            for r in range(i_size):
                h_r = h[b, i, r]
                for k in range(o_size):  # k innermost: unit stride in o and W
                    out[k] += h_r * block[r, k]


@njit(parallel=True, cache=True)
def set_bias(o, bias, output_idx):
    """In place: ``o[b, j] = bias[output_idx[b, j]]``."""
    batch, o_win, o_size = o.shape
    for t in prange(batch * o_win):
        b, j = t // o_win, t % o_win
        row = bias[output_idx[b, j]]
        for k in range(o_size):
            o[b, j, k] = row[k]


@njit(cache=True)
def _group_pairs(x_idx, y_idx, y_blocks):
    """Sort the ``(b, i, j)`` triples (flattened) by the block ``(x_idx[b, i], y_idx[b, j])``.

    Returns the stable order and the start of each run of one block (plus the end).
    """
    batch, x_win = x_idx.shape
    y_win = y_idx.shape[1]
    n = batch * x_win * y_win
    keys = np.empty(n, np.int64)
    for t in range(n):
        b = t // (x_win * y_win)
        i = (t // y_win) % x_win
        keys[t] = np.int64(x_idx[b, i]) * y_blocks + y_idx[b, t % y_win]
    order = np.argsort(keys, kind="mergesort")
    starts = np.empty(n + 1, np.int64)
    n_groups = 0
    for p in range(n):
        if p == 0 or keys[order[p]] != keys[order[p - 1]]:
            starts[n_groups] = p
            n_groups += 1
    starts[n_groups] = n
    return order, starts[: n_groups + 1]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def outer(o, x, y, x_idx, y_idx, alpha):
    """In place: ``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``."""
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    if batch * x_win * y_win == 0 or x_size == 0:
        return
    order, starts = _group_pairs(x_idx, y_idx, o.shape[1])
    n_chunks = (x_size + OUTER_ROW_CHUNK - 1) // OUTER_ROW_CHUNK
    n_units = (len(starts) - 1) * n_chunks
    for u in prange(n_units):  # unit u alone writes rows [r0, r1) of one block
        group, chunk = u // n_chunks, u % n_chunks
        r0 = chunk * OUTER_ROW_CHUNK
        r1 = min(r0 + OUTER_ROW_CHUNK, x_size)
        first = order[starts[group]]
        b0, i0 = first // (x_win * y_win), (first // y_win) % x_win
        block = o[x_idx[b0, i0], y_idx[b0, first % y_win]]
        for p in range(starts[group], starts[group + 1]):
            t = order[p]
            b, i, j = t // (x_win * y_win), (t // y_win) % x_win, t % y_win
            for r in range(r0, r1):
                scale = alpha * x[b, i, r]
                for k in range(y_size):
                    block[r, k] += scale * y[b, j, k]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def grad_h(dh, W, g, input_idx, output_idx):
    """In place: ``dh[b, i] += sum_j W[input_idx[b, i], output_idx[b, j]] @ g[b, j]``."""
    batch, i_win, i_size = dh.shape
    o_win, o_size = g.shape[1], g.shape[2]
    for t in prange(batch * i_win):  # iteration t alone writes dh[b, i]
        b, i = t // i_win, t % i_win
        in_block = input_idx[b, i]
        for j in range(o_win):
            block = W[in_block, output_idx[b, j]]
            for r in range(i_size):
                acc = 0.0
                for k in range(o_size):
                    acc += block[r, k] * g[b, j, k]
                dh[b, i, r] += acc


@njit(cache=True)
def bias_grad(db, g, output_idx):
    """In place: ``db[output_idx[b, j]] += g[b, j]`` for every ``b, j``."""
    batch, o_win, o_size = g.shape
    for b in range(batch):
        for j in range(o_win):
            row = db[output_idx[b, j]]
            for k in range(o_size):
                row[k] += g[b, j, k]
