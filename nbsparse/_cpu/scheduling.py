"""Scheduling of the accumulating kernels: buckets of rows, work units, sub-groups.

Every accumulating kernel first buckets its rows by the block they write (a
counting sort, ``O(rows + blocks)``), then ``prange``s over work units that
partition the output: a unit is one bucket, or a slice of one (rows or columns
of the output for ``gemv``, rows for ``grad_h``, rows of the weight block for
``outer``, columns for ``bias_grad``), about ``UNITS_PER_THREAD`` per thread
when buckets are few. Two units never write the same element, so there are no
races and no atomics, and each unit sums its terms in a fixed order: results
are bit-identical run to run and for any thread count (every choice that sets a
sum's order is made per bucket, never per unit). Units are handed out
dynamically (chunk size 1, ``codegen.set_chunksize``): buckets are uneven, and
on a shared 2-core machine a static split waits for the core that another
process took.

Within a unit, the terms that share a weight block are sub-grouped (a second
counting sort, :func:`sub_groups`) when there are several per block, and each
group is one small GEMM run on register tiles (:mod:`.tiles`); with about one
term per block the kernels go row by row.
"""

import numpy as np

from .codegen import num_threads
from .jit import cached_jit
from .tuning import UNITS_PER_THREAD


@cached_jit()
def min_units():
    """Work units to cut the work into when buckets are few (see ``UNITS_PER_THREAD``)."""
    return UNITS_PER_THREAD * max(1, num_threads())


@cached_jit()
def buckets(idx, n_blocks):
    """Stable counting sort of the flat positions of ``idx`` by value.

    Returns ``(order, starts)``: bucket ``q`` is ``order[starts[q]:starts[q + 1]]``,
    the flat positions ``t`` (``idx.ravel()[t] == q``) in increasing order.
    """
    flat = idx.ravel()
    starts = np.zeros(n_blocks + 1, np.intp)
    for t in range(flat.size):
        starts[flat[t] + 1] += 1
    for q in range(n_blocks):
        starts[q + 1] += starts[q]
    fill = starts[:-1].copy()
    order = np.empty(flat.size, np.intp)
    for t in range(flat.size):
        q = flat[t]
        order[fill[q]] = t
        fill[q] += 1
    return order, starts


@cached_jit()
def block_units(n_blocks):
    """``(n_units, per_unit)``: ``n_blocks > 0`` blocks cut into at most ``min_units()`` runs of consecutive blocks."""
    n_units = min(n_blocks, min_units())
    per_unit = (n_blocks + n_units - 1) // n_units
    return (n_blocks + per_unit - 1) // per_unit, per_unit


@cached_jit()
def work_units(starts, n_rows, n_cols, width, cut_columns):
    """Work units ``(begin, end, k_begin, k_end)``: a bucket's rows ``order[begin:end]``, columns ``[k_begin, k_end)``.

    While there are fewer than ``min_units()`` units, buckets are cut by
    columns (whole tiles of ``width``) if ``cut_columns``, then by rows. Column
    slices of a bucket read disjoint parts of its weight blocks but each reads
    all its input rows; row slices the other way round: the caller cuts the
    larger operand into parts.
    """
    wanted = min_units()
    n_busy = 0
    for q in range(starts.size - 1):
        n_busy += starts[q + 1] > starts[q]
    tiles = max(1, n_cols // width)
    n_col = min(tiles, max(1, (wanted + n_busy - 1) // n_busy)) if cut_columns else 1
    per_slice = (tiles + n_col - 1) // n_col
    n_col = (tiles + per_slice - 1) // per_slice
    size = max(1, (n_rows * n_col + wanted - 1) // wanted)
    n_units = 0
    for q in range(starts.size - 1):
        n_units += n_col * ((starts[q + 1] - starts[q] + size - 1) // size)
    units = np.empty((n_units, 4), np.intp)
    u = 0
    for q in range(starts.size - 1):
        for s in range(starts[q], starts[q + 1], size):
            for c in range(n_col):
                units[u, 0] = s
                units[u, 1] = min(s + size, starts[q + 1])
                units[u, 2] = c * per_slice * width
                units[u, 3] = n_cols if c == n_col - 1 else (c + 1) * per_slice * width
                u += 1
    return units


@cached_jit()
def sub_groups(rows, win_idx, n_blocks, key_of):
    """Terms ``(row, w)`` of ``rows`` (flat ``(b, .)`` positions) sorted by block ``win_idx[b, w]``.

    ``key_of`` is the window length of the bucketed index (``rows`` are
    ``b * key_of + j``). Returns ``(terms, starts)``: ``terms[:, 0]`` the position
    in ``rows``' index, ``terms[:, 1]`` the window ``w``; group ``p`` is
    ``terms[starts[p]:starts[p + 1]]``.
    """
    terms = np.empty((rows.size * win_idx.shape[1], 2), np.intp)
    starts = np.empty(n_blocks + 1, np.intp)
    sub_groups_into(rows, win_idx, key_of, terms, starts, np.empty(n_blocks, np.intp))
    return terms, starts


@cached_jit()
def sub_groups_into(rows, win_idx, key_of, terms, starts, fill):
    """:func:`sub_groups` into the caller's buffers, allocating nothing.

    ``terms`` is ``(rows.size * win_idx.shape[1], 2)``, ``starts`` has
    ``n_blocks + 1`` elements, ``fill`` (scratch) ``n_blocks``.
    """
    win = win_idx.shape[1]
    n_blocks = fill.size
    starts[:] = 0
    for t in rows:
        b = t // key_of
        for w in range(win):
            starts[win_idx[b, w] + 1] += 1
    for p in range(n_blocks):
        starts[p + 1] += starts[p]
        fill[p] = starts[p]
    for t in rows:
        b = t // key_of
        for w in range(win):
            p = win_idx[b, w]
            terms[fill[p], 0] = t
            terms[fill[p], 1] = w
            fill[p] += 1
