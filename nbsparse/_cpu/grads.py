"""CPU kernels of the block-sparse product's gradients with respect to its input and bias.

``grad_h(dh, W, g, ...)`` adds ``W @ g`` back into the input rows and
``bias_grad`` sums the output rows per block; both bucket their rows (see
:mod:`.scheduling`) so that each work unit owns the rows it writes. The weight
gradient is the outer update, in :mod:`.outer`.
"""

import numpy as np
from numba import prange

from .codegen import set_chunksize
from .jit import cached_jit
from .scheduling import block_units, buckets, min_units, sub_groups, work_units
from .tiles import dot_rows, prefetch_blocks
from .tuning import FASTMATH, MIN_TERMS_PER_BLOCK


@cached_jit(fastmath=FASTMATH)
def _grad_h_one(dv, block, gv):
    """``dv += block @ gv``: one reduction over ``k`` per row ``r`` (vectorised by ``reassoc``)."""
    zero = dv.dtype.type(0)  # a float64 literal would make float32 sums float64 (half the lanes)
    for r in range(block.shape[0]):
        acc = zero
        for k in range(block.shape[1]):
            acc += block[r, k] * gv[k]
        dv[r] += acc


@cached_jit(parallel=True, fastmath=FASTMATH)
def grad_h(dh, W, g, input_idx, output_idx):
    """In place: ``dh[b, i] += sum_j W[input_idx[b, i], output_idx[b, j]] @ g[b, j]``.

    Rows ``(b, i)`` are bucketed by input block (by output block when ``oWin == 1``:
    a row then meets one block); a unit owns its rows ``dh[b, i]``.
    """
    batch, i_win, i_size = dh.shape
    i_blocks, o_blocks, o_win, o_size = W.shape[0], W.shape[1], g.shape[1], g.shape[2]
    if batch * i_win == 0 or i_size == 0:
        return
    if batch * i_win * o_win < MIN_TERMS_PER_BLOCK * i_blocks * o_blocks:
        # Few terms per block (tiny_blocks): rows (b, i) bucketed by input block, so
        # a unit reads within one contiguous W[p], and the next row's blocks are
        # prefetched. Row t alone writes dh[b, i]. Scalar indexing only, as in
        # gemv's direct path.
        zero = dh.dtype.type(0)
        order, starts = buckets(input_idx, i_blocks)
        n_units, per_unit = block_units(i_blocks)
        caller_chunksize = set_chunksize(1)
        for u in prange(n_units):
            for p in range(u * per_unit, min((u + 1) * per_unit, i_blocks)):
                s, e = starts[p], starts[p + 1]
                for n in range(s, e):
                    if n + 1 < e:
                        prefetch_blocks(W, p, output_idx, order[n + 1] // i_win, False)
                    t = order[n]
                    b, i = t // i_win, t % i_win
                    for j in range(o_win):
                        q = output_idx[b, j]
                        for r in range(i_size):
                            acc = zero
                            for k in range(o_size):
                                acc += W[p, q, r, k] * g[b, j, k]
                            dh[b, i, r] += acc
        set_chunksize(caller_chunksize)
        return
    if o_win == 1:
        # Each row (b, i) meets one output block (h_softmax's slot level): bucket the
        # rows by it and sub-group by input block, so rows share W[p, q] loads.
        keys = np.empty((batch, i_win), np.intp)
        for b in range(batch):
            for i in range(i_win):  # not keys[b, :] = ...: that is a parallel region per row
                keys[b, i] = output_idx[b, 0]
        order, starts = buckets(keys, o_blocks)
        fixed = keys.ravel()
        varying, n_varying, key_of = input_idx.reshape(batch * i_win, 1), i_blocks, 1
    else:
        # Bucket rows by input block, sub-group their terms by output block.
        order, starts = buckets(input_idx, i_blocks)
        fixed = input_idx.ravel()
        varying, n_varying, key_of = output_idx, o_blocks, i_win
    units = work_units(starts, batch * i_win, i_size, 1, False)  # rows only: column 0 to i_size
    caller_chunksize = set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(units.shape[0]):
        rows = order[units[u, 0]:units[u, 1]]
        f = fixed[rows[0]]
        # On the whole bucket, as in gemv: the sum order must not depend on the thread count.
        if (starts[f + 1] - starts[f]) * varying.shape[1] < MIN_TERMS_PER_BLOCK * n_varying:
            for t in rows:
                b = t // i_win
                for j in range(o_win):
                    _grad_h_one(dh[b, t % i_win], W[input_idx[b, t % i_win], output_idx[b, j]], g[b, j])
            continue
        terms, groups = sub_groups(rows, varying, n_varying, key_of)
        dh_offs = terms[:, 0] * i_size  # dh[b, i] starts at (b * i_win + i) * i_size
        g_offs = ((terms[:, 0] // i_win) * o_win + terms[:, 1]) * o_size  # terms[:, 1] is j (0 if oWin is 1)
        for v in range(n_varying):
            s, e = groups[v], groups[v + 1]
            if s == e:
                continue
            block = (v * o_blocks + f) if o_win == 1 else (f * o_blocks + v)
            dot_rows(dh, dh_offs[s:e], W, block * i_size * o_size, o_size, i_size, g, g_offs[s:e], o_size)
    set_chunksize(caller_chunksize)


@cached_jit(parallel=True, fastmath=FASTMATH)
def bias_grad(db, g, output_idx):
    """In place: ``db[output_idx[b, j]] += g[b, j]`` for every ``b, j``.

    Rows are bucketed by output block; a unit is a bucket and a range of columns
    and owns ``db[q, k0:k1]``, adding its rows in bucket order.
    """
    batch, o_win, o_size = g.shape
    if batch * o_win == 0 or o_size == 0:
        return
    order, starts = buckets(output_idx, db.shape[0])
    n_blocks = db.shape[0]
    n_slices = min(o_size, max(1, min_units() // n_blocks))
    width = (o_size + n_slices - 1) // n_slices
    n_slices = (o_size + width - 1) // width
    caller_chunksize = set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(n_blocks * n_slices):
        q = u // n_slices
        k0 = (u % n_slices) * width
        k1 = min(k0 + width, o_size)
        row = db[q]
        for n in range(starts[q], starts[q + 1]):
            t = order[n]
            src = g[t // o_win, t % o_win]
            for k in range(k0, k1):
                row[k] += src[k]
    set_chunksize(caller_chunksize)


def bias_grad_blocks(g, output_idx):
    """:func:`bias_grad` of a new zero gradient as the list of its touched blocks.

    Returns ``(index, values)``: the distinct ``output_idx`` values as an
    ``(n, 1)`` ``intp`` array, increasing, and their gradients ``(n, oSize)``,
    the same bits as the dense gradient's rows: :func:`bias_grad` runs on the
    touched rows only, renumbered in the same order, so each row's terms keep
    their order.
    """
    blocks, rank = np.unique(output_idx, return_inverse=True)
    values = np.zeros((blocks.size, g.shape[2]), g.dtype)
    bias_grad(values, g, np.ascontiguousarray(rank.reshape(output_idx.shape), dtype=np.intp))
    return blocks.astype(np.intp).reshape(-1, 1), values
