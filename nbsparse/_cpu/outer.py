"""CPU kernels of the outer update (the block-sparse product's weight gradient), and the choice among them.

``outer`` adds ``alpha * outer(x[b, i], y[b, j])`` into the weight blocks; it
runs one of three strategies, each its own function below: scattered
read-modify-writes bucketed by ``x`` block when there are few terms per block
(:func:`_outer_few_terms`), else work units of a ``y`` block's bucket and a
range of block rows, each unit either scattered (:func:`_unit_scattered`) or
run on register tiles per block pair (:func:`_unit_tiles`).
:func:`outer_scattered_new` builds a new, mostly-zero gradient of tiny blocks in
cache. :func:`weight_gradient` picks among them for a new gradient.
"""

import numpy as np
from numba import prange

from .codegen import num_threads, set_chunksize, thread_id
from .jit import cached_jit
from .scheduling import block_units, buckets, min_units, sub_groups_into
from .tiles import prefetch_blocks, stream_rows, tile_rows
from .tuning import (
    DEEP_TILE_DEPTH,
    FASTMATH,
    MIN_TERMS_PER_BLOCK,
    OUTER_MIN_SLICE_ROWS,
    OUTER_REUSE_TERMS,
    ROW_TILE_DEPTH,
    SCRATCH_BYTES,
    TILE_VECTORS,
)


def weight_gradient(o, x, y, x_idx, y_idx):
    """Fill ``o`` with ``sum outer(x[b, i], y[b, j])`` at block ``(x_idx[b, i], y_idx[b, j])``.

    ``o`` is a new, uninitialised, C-contiguous array of ``x.dtype``, shaped
    ``(x_blocks, y_blocks, x_size, y_size)``. The kernel writes every element
    itself, so no separate zeroing pass runs over the ``W``-sized array:
    :func:`outer` with ``clear``, or, when most blocks get no term at all (tiny
    blocks), :func:`outer_scattered_new`, which builds each block row in cache
    and streams it out. A memset first is the fallback for block rows too large
    for that.
    """
    x_blocks, y_blocks, x_size, y_size = o.shape
    one = x.dtype.type(1.0)
    if x_idx.size * y_idx.shape[1] >= MIN_TERMS_PER_BLOCK * x_blocks * y_blocks:
        outer(o, x, y, x_idx, y_idx, one, True, x_blocks, y_blocks)
    elif y_blocks * x_size * y_size * o.itemsize <= SCRATCH_BYTES:  # one block row o[p]
        outer_scattered_new(o, x, y, x_idx, y_idx, one)
    else:
        o[...] = 0
        outer(o, x, y, x_idx, y_idx, one, False, x_blocks, y_blocks)


def weight_gradient_blocks(x, y, x_idx, y_idx, x_blocks, y_blocks):
    """The weight gradient of :func:`weight_gradient` as the list of its touched blocks.

    Returns ``(index, values)``: the distinct block pairs ``(x_idx[b, i],
    y_idx[b, j])`` as an ``(n, 2)`` ``intp`` array in increasing (C) order, and
    ``values`` ``(n, x_size, y_size)``, ``values[k]`` the gradient of block
    ``index[k]``, the same bits as that block of :func:`weight_gradient`'s
    result for a ``(x_blocks, y_blocks)`` grid. Nothing of the grid's size is
    allocated, only arrays of the batch's terms and of the touched blocks:

    - With at least ``MIN_TERMS_PER_BLOCK`` terms per block of the grid,
      :func:`weight_gradient` runs :func:`outer` on the whole grid. Here
      :func:`outer` runs on the touched rows and columns of blocks only (the
      indices renumbered in the same order, so every block's terms keep their
      order) with the grid's counts for its choices; the touched pairs are then
      that array itself when every row meets every column (one x block: the
      hierarchical softmax), else gathered from it.
    - With fewer, it sums each block's terms in the order of
      :func:`_outer_few_terms` (and :func:`outer_scattered_new`), straight into
      the list (:func:`_pairs_few_terms`).
    """
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    pair_of_term = (x_idx.reshape(batch, x_win, 1) * y_blocks + y_idx.reshape(batch, 1, y_win)).ravel()
    pairs = np.unique(pair_of_term)
    index = np.empty((pairs.size, 2), np.intp)
    index[:, 0], index[:, 1] = np.divmod(pairs, y_blocks)
    one = x.dtype.type(1.0)
    if pair_of_term.size >= MIN_TERMS_PER_BLOCK * x_blocks * y_blocks:
        x_rows, x_rank = np.unique(x_idx, return_inverse=True)
        y_cols, y_rank = np.unique(y_idx, return_inverse=True)
        compact = np.empty((x_rows.size, y_cols.size, x_size, y_size), x.dtype)
        outer(compact, x, y, np.ascontiguousarray(x_rank.reshape(x_idx.shape), dtype=np.intp),
              np.ascontiguousarray(y_rank.reshape(y_idx.shape), dtype=np.intp), one, True, x_blocks, y_blocks)
        flat = compact.reshape(x_rows.size * y_cols.size, x_size, y_size)
        if flat.shape[0] == pairs.size:  # every touched row meets every touched column
            return index, flat
        at = np.searchsorted(x_rows, index[:, 0]) * y_cols.size + np.searchsorted(y_cols, index[:, 1])
        return index, flat[at]
    values = np.empty((pairs.size, x_size, y_size), x.dtype)
    first_pair = np.searchsorted(index[:, 0], np.arange(x_blocks + 1))
    _pairs_few_terms(values, first_pair, index[:, 1].copy(), x, y, x_idx, y_idx, y_blocks)
    return index, values


@cached_jit(parallel=True, fastmath=FASTMATH)
def _pairs_few_terms(values, first_pair, pair_y, x, y, x_idx, y_idx, y_blocks):
    """``values[k] = sum outer(x[b, i], y[b, j])`` over the terms of block pair ``k``, few terms per block.

    The pairs are sorted: x block ``p``'s are ``first_pair[p]`` to
    ``first_pair[p + 1]``, with y blocks ``pair_y``. Each pair's terms are
    summed in :func:`_outer_few_terms`'s order (terms bucketed by x block, rows
    ``(b, i)`` in order, ``j`` inner). A unit is a run of x blocks and owns
    their pairs: units never race.
    """
    x_win, x_size = x.shape[1], x.shape[2]
    y_win, y_size = y.shape[1], y.shape[2]
    x_blocks = first_pair.size - 1
    x_order, x_starts = buckets(x_idx, x_blocks)
    n_units, per_unit = block_units(x_blocks)
    zero = values.dtype.type(0)
    caller_chunksize = set_chunksize(1)
    for u in prange(n_units):
        pair_at = np.empty(y_blocks, np.intp)  # y block -> its pair of the current x block
        for p in range(u * per_unit, min((u + 1) * per_unit, x_blocks)):
            for n in range(first_pair[p], first_pair[p + 1]):
                pair_at[pair_y[n]] = n
                for r in range(x_size):
                    for k in range(y_size):
                        values[n, r, k] = zero
            for n in range(x_starts[p], x_starts[p + 1]):
                t = x_order[n]
                b, i = t // x_win, t % x_win
                for j in range(y_win):
                    s = pair_at[y_idx[b, j]]
                    for r in range(x_size):
                        a = x[b, i, r]
                        for k in range(y_size):
                            values[s, r, k] += a * y[b, j, k]
    set_chunksize(caller_chunksize)


@cached_jit()
def _clear_rows(o, p, q, r0, r1):
    """``o[p, q, r0:r1] = 0``."""
    zero = o.dtype.type(0)
    for r in range(r0, r1):
        for k in range(o.shape[3]):
            o[p, q, r, k] = zero


@cached_jit(parallel=True, fastmath=FASTMATH)
def outer(o, x, y, x_idx, y_idx, alpha, clear, grid_x_blocks, grid_y_blocks):
    """In place: ``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``.

    The strategy choices (few terms per block or not, per bucket scattered or
    tiles) count terms per block of a ``grid_x_blocks x grid_y_blocks`` grid:
    ``o``'s own for an update of the whole weight, the weight's when ``o`` holds
    only its touched rows and columns of blocks (:func:`weight_gradient_blocks`),
    so that both sum every block in the same order.

    With ``clear``, ``o``'s previous contents are ignored, as if it were zeros:
    the first pass over a block stores its sums instead of adding them, and the
    blocks no term reaches are zeroed, so a new weight gradient needs no
    zeroing pass of its own. (Buckets of few terms zero their rows first.)

    With few terms per block, see :func:`_outer_few_terms`. Otherwise rows
    ``(b, j)`` are bucketed by ``y`` block ``q``; a unit is a bucket and a range
    of block rows ``r``, and owns ``o[:, q, r0:r1]``: repeated block pairs never race.
    """
    batch, x_win, x_size = x.shape
    y_win = y.shape[1]
    x_blocks, y_blocks = o.shape[0], o.shape[1]
    if batch * x_win * y_win == 0 or x_size == 0:
        if clear:
            for u in prange(x_blocks * y_blocks):
                _clear_rows(o, u // y_blocks, u % y_blocks, 0, x_size)
        return
    if batch * x_win * y_win < MIN_TERMS_PER_BLOCK * grid_x_blocks * grid_y_blocks:
        _outer_few_terms(o, x, y, x_idx, y_idx, alpha, clear)
        return
    order, starts = buckets(y_idx, y_blocks)
    n_busy = 0
    for q in range(y_blocks):
        n_busy += starts[q + 1] > starts[q]
    n_slices = min(x_size, max(1, (min_units() + n_busy - 1) // n_busy))
    slice_rows = max((x_size + n_slices - 1) // n_slices, min(x_size, OUTER_MIN_SLICE_ROWS))
    n_slices = (x_size + slice_rows - 1) // slice_rows
    # The y blocks with units: those with rows, and with ``clear`` the idle ones too (zeroed only).
    n_columns = y_blocks if clear else n_busy
    columns = np.empty(n_columns, np.intp)
    n = 0
    for q in range(y_blocks):
        if clear or starts[q + 1] > starts[q]:
            columns[n] = q
            n += 1
    # Every buffer the units need is allocated here, before any of them writes
    # into ``o``: running out of memory then leaves an in-place ``o`` as it was.
    # One set per thread, sized for the largest unit on tiles (what the units
    # would hold at once if each allocated its own).
    most_terms = 0
    for q in range(y_blocks):
        terms = (starts[q + 1] - starts[q]) * x_win
        if terms >= MIN_TERMS_PER_BLOCK * grid_x_blocks:
            most_terms = max(most_terms, terms)
    n_threads = num_threads()
    int_scratch = np.empty((n_threads, _tiles_int_scratch(most_terms, x_blocks, slice_rows)), np.intp)
    float_scratch = np.empty((n_threads, most_terms * (slice_rows + y.shape[2])), o.dtype)
    caller_chunksize = set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(n_columns * n_slices):
        q = columns[u // n_slices]
        r0 = (u % n_slices) * slice_rows
        r1 = min(r0 + slice_rows, x_size)
        rows = order[starts[q]:starts[q + 1]]
        if rows.size * x_win < MIN_TERMS_PER_BLOCK * grid_x_blocks:
            _unit_scattered(o, x, y, x_idx, rows, q, r0, r1, alpha, clear)
        else:
            me = thread_id()
            _unit_tiles(o, x, y, x_idx, rows, q, r0, r1, alpha, clear, int_scratch[me], float_scratch[me])
    set_chunksize(caller_chunksize)


@cached_jit()
def _tiles_int_scratch(n_terms, x_blocks, width):
    """Elements of :func:`_unit_tiles`' ``intp`` scratch for ``n_terms`` terms and rows of ``width``."""
    return 2 * n_terms + (x_blocks + 1) + x_blocks + 2 * width


@cached_jit(parallel=True, fastmath=FASTMATH)
def _outer_few_terms(o, x, y, x_idx, y_idx, alpha, clear):
    """:func:`outer` with few terms per block (tiny_blocks): scattered read-modify-writes.

    Bucketed by x block, a unit's updates land in one contiguous o[p] (256 KB
    there) instead of all over o, and the next term's blocks are prefetched:
    12.9 -> 5.4 ms float32, 19.3 -> 11.4 ms float64 on tiny_blocks. A unit is a
    run of consecutive x blocks and owns their ``o[p]``: units never race.
    """
    x_win, x_size = x.shape[1], x.shape[2]
    y_win, y_size = y.shape[1], y.shape[2]
    x_blocks, y_blocks = o.shape[0], o.shape[1]
    x_order, x_starts = buckets(x_idx, x_blocks)
    n_units, per_unit = block_units(x_blocks)
    caller_chunksize = set_chunksize(1)
    for u in prange(n_units):
        for p in range(u * per_unit, min((u + 1) * per_unit, x_blocks)):
            if clear:
                for q in range(y_blocks):
                    _clear_rows(o, p, q, 0, x_size)
            s, e = x_starts[p], x_starts[p + 1]
            for n in range(s, e):
                if n + 1 < e:
                    prefetch_blocks(o, p, y_idx, x_order[n + 1] // x_win, True)
                t = x_order[n]
                b, i = t // x_win, t % x_win
                for j in range(y_win):
                    q = y_idx[b, j]
                    for r in range(x_size):
                        a = alpha * x[b, i, r]
                        for k in range(y_size):
                            o[p, q, r, k] += a * y[b, j, k]
    set_chunksize(caller_chunksize)


@cached_jit(fastmath=FASTMATH)
def _unit_scattered(o, x, y, x_idx, rows, q, r0, r1, alpha, clear):
    """One unit of :func:`outer` whose bucket has few terms per block: ``o[:, q, r0:r1]`` term by term.

    ``rows`` are the bucket's flat ``(b, j)`` positions, in order.
    """
    x_win, y_win, y_size = x.shape[1], y.shape[1], y.shape[2]
    if clear:
        for p in range(o.shape[0]):
            _clear_rows(o, p, q, r0, r1)
    # Scalar indexing only: a view per term costs two atomic reference-count updates.
    for t in rows:
        b, j = t // y_win, t % y_win
        for i in range(x_win):
            p = x_idx[b, i]
            for r in range(r0, r1):
                a = alpha * x[b, i, r]
                for k in range(y_size):
                    o[p, q, r, k] += a * y[b, j, k]


@cached_jit(fastmath=FASTMATH)
def _unit_tiles(o, x, y, x_idx, rows, q, r0, r1, alpha, clear, int_scratch, float_scratch):
    """One unit of :func:`outer`: ``o[:, q, r0:r1]`` by register tiles, one GEMM per block pair ``(p, q)``.

    ``rows`` are the bucket's flat ``(b, j)`` positions, in order; their terms
    are sub-grouped by ``x`` block ``p``. The unit allocates nothing: its
    buffers are cut from the scratch it is given, at least
    :func:`_tiles_int_scratch` ``intp`` and ``terms * (r1 - r0 + y_size)`` of
    ``o``'s dtype long.
    """
    x_size, x_win = x.shape[2], x.shape[1]
    y_win, y_size = y.shape[1], y.shape[2]
    x_blocks = o.shape[0]
    tile_cols = TILE_VECTORS * 32 // o.itemsize
    n_terms, width = rows.size * x_win, r1 - r0
    terms = int_scratch[:2 * n_terms].reshape((n_terms, 2))
    at = 2 * n_terms
    groups = int_scratch[at:at + x_blocks + 1]
    at += x_blocks + 1
    sub_groups_into(rows, x_idx, y_win, terms, groups, int_scratch[at:at + x_blocks])
    at += x_blocks
    o_offs = int_scratch[at:at + width]  # block row r0 + r: row r of o's block, column r of xs
    xs_offs = int_scratch[at + width:at + 2 * width]
    # The unit's terms, gathered in group order: xs[n] = x[b, i, r0:r1] and
    # ys[n] = alpha * y[b, j], so a group's update is xs[s:e].T @ ys[s:e].
    xs = float_scratch[:n_terms * width].reshape((n_terms, width))
    ys = float_scratch[n_terms * width:n_terms * (width + y_size)].reshape((n_terms, y_size))
    for n in range(n_terms):
        t = terms[n, 0]
        b, i = t // y_win, terms[n, 1]
        for r in range(width):
            xs[n, r] = x[b, i, r0 + r]
        for k in range(y_size):
            ys[n, k] = alpha * y[b, t % y_win, k]
    for p in range(x_blocks):
        s, e = groups[p], groups[p + 1]
        if s == e:
            if clear:
                _clear_rows(o, p, q, r0, r1)
            continue
        block = (p * o.shape[1] + q) * x_size * y_size
        for r in range(width):
            o_offs[r] = block + (r0 + r) * y_size
            xs_offs[r] = r + s * width
        if e - s >= OUTER_REUSE_TERMS:
            # Many terms (h_softmax's class level: 2048 on one block): the block
            # stays in cache, so the compute-bound 6-row tiles of the forward win.
            if clear:
                _clear_rows(o, p, q, r0, r1)
            tile_rows(o, o_offs, xs, xs_offs, width, ys, s * y_size, y_size, e - s, 0, y_size,
                      False, DEEP_TILE_DEPTH, False)
        else:
            tile_rows(o, o_offs, xs, xs_offs, width, ys, s * y_size, y_size, e - s, 0, y_size,
                      True, ROW_TILE_DEPTH, clear)
        for r in range(width):
            for k in range(y_size - y_size % tile_cols, y_size):
                acc = o.dtype.type(0)
                for n in range(s, e):
                    acc += xs[n, r] * ys[n, k]
                o[p, q, r0 + r, k] = acc if clear else o[p, q, r0 + r, k] + acc


@cached_jit(parallel=True, fastmath=FASTMATH)
def outer_scattered_new(o, x, y, x_idx, y_idx, alpha):
    """``o[:] = 0``, then ``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``, for few terms per block.

    A new weight gradient of tiny blocks (``tiny_blocks``: a quarter of its 1M
    blocks reached, once each) is mostly zeros, and its updates are scattered
    read-modify-writes. Here the terms are bucketed by ``x`` block ``p`` and a
    unit builds the whole of ``o[p]`` (contiguous) in a scratch buffer that stays
    in cache, then streams it out with non-temporal stores: ``o`` is written
    once and never read. ``o`` must be C-contiguous, and ``o[p]`` small enough
    for the scratch to stay in cache (the caller checks).
    """
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    x_blocks, y_blocks = o.shape[0], o.shape[1]
    row = y_blocks * x_size * y_size  # elements of o[p]
    block = x_size * y_size
    if row == 0:
        return
    order, starts = buckets(x_idx, x_blocks)
    n_units, per_unit = block_units(x_blocks)
    zero = o.dtype.type(0)
    caller_chunksize = set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(n_units):
        scratch = np.empty(row, o.dtype)
        for p in range(u * per_unit, min((u + 1) * per_unit, x_blocks)):
            for e in range(row):
                scratch[e] = zero
            for n in range(starts[p], starts[p + 1]):
                t = order[n]
                b, i = t // x_win, t % x_win
                for j in range(y_win):
                    at = y_idx[b, j] * block
                    for r in range(x_size):
                        a = alpha * x[b, i, r]
                        for k in range(y_size):
                            scratch[at + r * y_size + k] += a * y[b, j, k]
            stream_rows(o, p * row, scratch, row)
    set_chunksize(caller_chunksize)
