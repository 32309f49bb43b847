"""CPU kernels of the forward block-sparse product: ``gemv`` and ``set_bias``.

``gemv`` buckets its output rows by output block and runs each bucket's work
units on register tiles (see :mod:`.scheduling` for why units never race and
why the sums' order never depends on the thread count).
"""

import numpy as np
from numba import prange

from .codegen import set_chunksize
from .jit import cached_jit
from .scheduling import buckets, sub_groups, work_units
from .tiles import tile_rows
from .tuning import DEEP_ROWS, DEEP_TILE_DEPTH, FASTMATH, MIN_TERMS_PER_BLOCK, TILE_DEPTH, TILE_VECTORS


@cached_jit(parallel=True, fastmath=FASTMATH)
def gemv(o, W, h, input_idx, output_idx):
    """In place: ``o[b, j] += sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``.

    Rows ``(b, j)`` are bucketed by output block; a unit owns its rows ``o[b, j]``.
    """
    batch, o_win, o_size = o.shape
    i_blocks, i_win, i_size = W.shape[0], h.shape[1], h.shape[2]
    tile_cols = TILE_VECTORS * 32 // o.itemsize
    if batch * o_win == 0 or o_size == 0:
        return
    if batch * o_win * i_win < MIN_TERMS_PER_BLOCK * i_blocks * W.shape[1]:
        # Few terms per block (tiny_blocks): no block is reused, so skip the
        # bucketing; iteration t alone writes o[b, j] (1.3x faster there).
        # Scalar indexing only: a view per term costs two atomic reference-count
        # updates, which made this path 2x slower.
        for t in prange(batch * o_win):
            b, j = t // o_win, t % o_win
            q = output_idx[b, j]
            for i in range(i_win):
                p = input_idx[b, i]
                for r in range(i_size):
                    a = h[b, i, r]
                    for k in range(o_size):
                        o[b, j, k] += a * W[p, q, r, k]
        return
    order, starts = buckets(output_idx, W.shape[1])
    # Cut the weights by columns when they outweigh the inputs (big_blocks), the
    # rows otherwise (h_softmax's class level: 2048 rows on one 512 x 256 block).
    units = work_units(starts, batch * o_win, o_size, tile_cols, W.size >= h.size)
    caller_chunksize = set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(units.shape[0]):
        rows = order[units[u, 0]:units[u, 1]]
        k_begin, k_end = units[u, 2], units[u, 3]
        q = output_idx.ravel()[rows[0]]
        # Decided on the whole bucket, not the unit: a row's sum order must not
        # depend on how many threads cut the buckets.
        bucket_terms = (starts[q + 1] - starts[q]) * i_win
        slab = DEEP_TILE_DEPTH if bucket_terms >= DEEP_ROWS * i_blocks else TILE_DEPTH
        if bucket_terms < MIN_TERMS_PER_BLOCK * i_blocks:
            # About one term per block: no sharing to find, each term is its own tile row.
            terms = np.empty((rows.size * i_win, 2), np.intp)
            for n in range(terms.shape[0]):
                terms[n, 0], terms[n, 1] = rows[n // i_win], n % i_win
            groups = np.arange(terms.shape[0] + 1)
        else:
            terms, groups = sub_groups(rows, input_idx, i_blocks, o_win)
        o_offs = terms[:, 0] * o_size  # o[b, j] starts at (b * o_win + j) * o_size
        h_offs = ((terms[:, 0] // o_win) * i_win + terms[:, 1]) * i_size
        for g in range(groups.size - 1):
            s, e = groups[g], groups[g + 1]
            if s == e:
                continue
            t = terms[s, 0]
            p = input_idx[t // o_win, terms[s, 1]]
            tile_rows(o, o_offs[s:e], h, h_offs[s:e], 1, W, (p * W.shape[1] + q) * i_size * o_size,
                       o_size, i_size, k_begin, k_end, False, slab, False)
            for k in range(k_end - (k_end - k_begin) % tile_cols, k_end):
                for n in range(s, e):
                    t = terms[n, 0]
                    b, j, i = t // o_win, t % o_win, terms[n, 1]
                    acc = o.dtype.type(0)
                    for r in range(i_size):
                        acc += h[b, i, r] * W[p, q, r, k]
                    o[b, j, k] += acc
    set_chunksize(caller_chunksize)


@cached_jit(parallel=True)
def set_bias(o, bias, output_idx):
    """In place: ``o[b, j] = bias[output_idx[b, j]]``."""
    batch, o_win, o_size = o.shape
    for t in prange(batch * o_win):
        b, j = t // o_win, t % o_win
        row = bias[output_idx[b, j]]
        for k in range(o_size):
            o[b, j, k] = row[k]
