"""CPU kernels for the block-sparse products and their gradients.

Every accumulating kernel first buckets its rows by the block they write (a
counting sort, ``O(rows + blocks)``), then ``prange``s over work units that
partition the output: a unit is one bucket, or a slice of one (rows of the
output for ``gemv``/``grad_h``, rows of the weight block for ``outer``, columns
for ``bias_grad``). Two units never write the same element, so there are no
races and no atomics, and each unit sums its terms in a fixed order: results
are bit-identical run to run and for any thread count. Units are handed out
dynamically (chunk size 1): buckets are uneven, and on a shared 2-core machine a
static split waits for the core that another process took.

Within a unit, the terms that share a weight block are sub-grouped (a second
counting sort) when there are several per block, so 4 rows share each load of
the block (register blocking); with about one term per block the kernels go
row by row in bucket order instead.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# Every fast-math flag except nnan/ninf: with those, NaN and inf would stop
# propagating (Numba folds ``v != v`` away); "reassoc" lets the reductions vectorise.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Work units to aim for when buckets are few (one bucket in h_softmax's class
# level): enough for the dynamic schedule to even out up to ~16 cores. A
# constant, not numba.get_num_threads(): calling that makes a kernel uncachable.
MIN_UNITS = 64

# Sub-group a unit's terms by weight block only when there are at least this
# many per block on average; below it, the second counting sort (O(blocks) per
# unit) costs more than the shared loads save (tiny_blocks: ~0.25 per block).
MIN_TERMS_PER_BLOCK = 2


@intrinsic
def _set_chunksize(typingctx, n):
    """``numba.set_parallel_chunksize(n)`` for the next ``prange``, cacheable; returns the old size.

    Numba's own overload (and ``with parallel_chunksize``) calls through ctypes,
    which makes the calling kernel uncachable; this calls the same C symbol of the
    threading layer directly, as Numba's parfor lowering does.
    """
    def codegen(context, builder, signature, args):
        # Declared as Numba's parfor lowering declares them (one module may hold both).
        size_t = context.get_value_type(types.uintp)
        get = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(size_t, []), name="get_parallel_chunksize")
        put = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [size_t]), name="set_parallel_chunksize")
        old = builder.call(get, [])
        builder.call(put, [context.cast(builder, args[0], signature.args[0], types.uintp)])
        return old

    return types.uintp(n), codegen


@njit(cache=True)
def _buckets(idx, n_blocks):
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


@njit(cache=True)
def _row_units(starts, n_rows):
    """Work units ``(begin, end)`` into a bucket ``order``: each bucket, cut in slices when buckets are few.

    A slice holds at most ``ceil(n_rows / MIN_UNITS)`` rows, so a single bucket
    still spreads over every core.
    """
    size = max(1, (n_rows + MIN_UNITS - 1) // MIN_UNITS)
    n_units = 0
    for q in range(starts.size - 1):
        n_units += (starts[q + 1] - starts[q] + size - 1) // size
    units = np.empty((n_units, 2), np.intp)
    u = 0
    for q in range(starts.size - 1):
        for s in range(starts[q], starts[q + 1], size):
            units[u, 0] = s
            units[u, 1] = min(s + size, starts[q + 1])
            u += 1
    return units


@njit(cache=True)
def _sub_groups(rows, win_idx, n_blocks, key_of):
    """Terms ``(row, w)`` of ``rows`` (flat ``(b, .)`` positions) sorted by block ``win_idx[b, w]``.

    ``key_of`` is the window length of the bucketed index (``rows`` are
    ``b * key_of + j``). Returns ``(terms, starts)``: ``terms[:, 0]`` the position
    in ``rows``' index, ``terms[:, 1]`` the window ``w``; group ``p`` is
    ``terms[starts[p]:starts[p + 1]]``.
    """
    win = win_idx.shape[1]
    starts = np.zeros(n_blocks + 1, np.intp)
    for t in rows:
        b = t // key_of
        for w in range(win):
            starts[win_idx[b, w] + 1] += 1
    for p in range(n_blocks):
        starts[p + 1] += starts[p]
    fill = starts[:-1].copy()
    terms = np.empty((rows.size * win, 2), np.intp)
    for t in rows:
        b = t // key_of
        for w in range(win):
            p = win_idx[b, w]
            terms[fill[p], 0] = t
            terms[fill[p], 1] = w
            fill[p] += 1
    return terms, starts


# --------------------------------------------------------------------------- forward


@njit(cache=True, fastmath=FASTMATH)
def _gemv_one(out, hv, block):
    """``out += hv @ block``, 2 rows of ``block`` per pass: half the loads/stores of ``out``.

    ``k`` innermost (unit stride in ``out`` and ``block``). Not 4 rows: LLVM then
    gives up vectorising (too many runtime alias checks against ``out``).
    """
    i_size, o_size = block.shape
    if o_size < 32:
        # Short rows (tiny_blocks, 8): the unrolled loop ends in its scalar
        # remainder; the plain one is 1.9x faster there.
        for r in range(i_size):
            a0 = hv[r]
            for k in range(o_size):
                out[k] += a0 * block[r, k]
        return
    n2 = i_size - i_size % 2
    for r in range(0, n2, 2):
        w0, w1 = block[r], block[r + 1]
        a0, a1 = hv[r], hv[r + 1]
        for k in range(o_size):
            out[k] += a0 * w0[k] + a1 * w1[k]
    if n2 < i_size:
        a0, w0 = hv[n2], block[n2]
        for k in range(o_size):
            out[k] += a0 * w0[k]


@njit(cache=True, fastmath=FASTMATH)
def _gemv_four(acc, h0, h1, h2, h3, block):
    """``acc[t] = h_t @ block`` for 4 rows sharing ``block``.

    4 rows of ``block`` (4 KB at oSize 256, float32) are read for the 4 rows ``t``
    while they sit in L1, so each comes from memory once for 4 rows.
    """
    i_size, o_size = block.shape
    acc[:] = 0
    r = 0
    while r + 4 <= i_size:
        w0, w1, w2, w3 = block[r], block[r + 1], block[r + 2], block[r + 3]
        for t in range(4):
            hv = h0 if t == 0 else h1 if t == 1 else h2 if t == 2 else h3
            a0, a1, a2, a3 = hv[r], hv[r + 1], hv[r + 2], hv[r + 3]
            out = acc[t]
            for k in range(o_size):
                out[k] += a0 * w0[k] + a1 * w1[k] + a2 * w2[k] + a3 * w3[k]
        r += 4
    for r in range(r, i_size):
        w0 = block[r]
        for t in range(4):
            hv = h0 if t == 0 else h1 if t == 1 else h2 if t == 2 else h3
            a0, out = hv[r], acc[t]
            for k in range(o_size):
                out[k] += a0 * w0[k]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def gemv(o, W, h, input_idx, output_idx):
    """In place: ``o[b, j] += sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``.

    Rows ``(b, j)`` are bucketed by output block; a unit owns its rows ``o[b, j]``.
    """
    batch, o_win, o_size = o.shape
    i_blocks, i_win = W.shape[0], h.shape[1]
    if batch * o_win == 0 or o_size == 0:
        return
    if batch * o_win * i_win < MIN_TERMS_PER_BLOCK * i_blocks * W.shape[1]:
        # Few terms per block (tiny_blocks): no block is reused, so skip the
        # bucketing; iteration t alone writes o[b, j] (1.3x faster there).
        # Scalar indexing only: a view per term costs two atomic reference-count
        # updates, which made this path 2x slower.
        i_size = h.shape[2]
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
    order, starts = _buckets(output_idx, W.shape[1])
    units = _row_units(starts, batch * o_win)
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(units.shape[0]):
        rows = order[units[u, 0]:units[u, 1]]
        q = output_idx.ravel()[rows[0]]
        if rows.size * i_win < MIN_TERMS_PER_BLOCK * i_blocks:
            for t in rows:
                b = t // o_win
                for i in range(i_win):
                    _gemv_one(o[b, t % o_win], h[b, i], W[input_idx[b, i], q])
            continue
        terms, groups = _sub_groups(rows, input_idx, i_blocks, o_win)
        acc = np.empty((4, o_size), o.dtype)
        for p in range(i_blocks):
            block = W[p, q]
            s, e = groups[p], groups[p + 1]
            while e - s >= 4:
                _gemv_four(acc, h[terms[s, 0] // o_win, terms[s, 1]],
                           h[terms[s + 1, 0] // o_win, terms[s + 1, 1]],
                           h[terms[s + 2, 0] // o_win, terms[s + 2, 1]],
                           h[terms[s + 3, 0] // o_win, terms[s + 3, 1]], block)
                for m in range(4):  # rows may repeat within the 4: add one by one
                    t = terms[s + m, 0]
                    out = o[t // o_win, t % o_win]
                    for k in range(o_size):
                        out[k] += acc[m, k]
                s += 4
            for n in range(s, e):
                t = terms[n, 0]
                _gemv_one(o[t // o_win, t % o_win], h[t // o_win, terms[n, 1]], block)
    _set_chunksize(caller_chunksize)


@njit(parallel=True, cache=True)
def set_bias(o, bias, output_idx):
    """In place: ``o[b, j] = bias[output_idx[b, j]]``."""
    batch, o_win, o_size = o.shape
    for t in prange(batch * o_win):
        b, j = t // o_win, t % o_win
        row = bias[output_idx[b, j]]
        for k in range(o_size):
            o[b, j, k] = row[k]


# --------------------------------------------------------------------------- outer


@njit(cache=True, fastmath=FASTMATH)
def _outer_one(block, r0, r1, xv, yv, alpha):
    """``block[r0:r1] += alpha * outer(xv[r0:r1], yv)``."""
    for r in range(r0, r1):
        s = alpha * xv[r]
        for k in range(yv.size):
            block[r, k] += s * yv[k]


@njit(cache=True, fastmath=FASTMATH)
def _outer_four(block, r0, r1, x0, x1, x2, x3, y0, y1, y2, y3, alpha):
    """``block[r0:r1] += alpha * sum_t outer(x_t, y_t)`` for 4 terms: one load/store of ``block`` for 4."""
    for r in range(r0, r1):
        s0, s1, s2, s3 = alpha * x0[r], alpha * x1[r], alpha * x2[r], alpha * x3[r]
        row = block[r]
        for k in range(row.size):
            row[k] += s0 * y0[k] + s1 * y1[k] + s2 * y2[k] + s3 * y3[k]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def outer(o, x, y, x_idx, y_idx, alpha):
    """In place: ``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``.

    Rows ``(b, j)`` are bucketed by ``y`` block ``q``; a unit is a bucket and a range
    of block rows ``r``, and owns ``o[:, q, r0:r1]``: repeated block pairs never race.
    """
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    x_blocks = o.shape[0]
    if batch * x_win * y_win == 0 or x_size == 0:
        return
    order, starts = _buckets(y_idx, o.shape[1])
    n_busy = 0
    for q in range(o.shape[1]):
        n_busy += starts[q + 1] > starts[q]
    n_slices = min(x_size, max(1, (MIN_UNITS + n_busy - 1) // n_busy))
    slice_rows = (x_size + n_slices - 1) // n_slices
    n_slices = (x_size + slice_rows - 1) // slice_rows
    busy = np.empty(n_busy, np.intp)
    n = 0
    for q in range(o.shape[1]):
        if starts[q + 1] > starts[q]:
            busy[n] = q
            n += 1
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(n_busy * n_slices):
        q = busy[u // n_slices]
        r0 = (u % n_slices) * slice_rows
        r1 = min(r0 + slice_rows, x_size)
        rows = order[starts[q]:starts[q + 1]]
        if rows.size * x_win < MIN_TERMS_PER_BLOCK * x_blocks:
            # Scalar indexing only: a view per term costs two atomic reference-count updates.
            for t in rows:
                b, j = t // y_win, t % y_win
                for i in range(x_win):
                    p = x_idx[b, i]
                    for r in range(r0, r1):
                        a = alpha * x[b, i, r]
                        for k in range(y_size):
                            o[p, q, r, k] += a * y[b, j, k]
            continue
        terms, groups = _sub_groups(rows, x_idx, x_blocks, y_win)
        for p in range(x_blocks):
            block = o[p, q]
            s, e = groups[p], groups[p + 1]
            while e - s >= 4:
                t0, t1, t2, t3 = terms[s, 0], terms[s + 1, 0], terms[s + 2, 0], terms[s + 3, 0]
                _outer_four(block, r0, r1,
                            x[t0 // y_win, terms[s, 1]], x[t1 // y_win, terms[s + 1, 1]],
                            x[t2 // y_win, terms[s + 2, 1]], x[t3 // y_win, terms[s + 3, 1]],
                            y[t0 // y_win, t0 % y_win], y[t1 // y_win, t1 % y_win],
                            y[t2 // y_win, t2 % y_win], y[t3 // y_win, t3 % y_win], alpha)
                s += 4
            for m in range(s, e):
                t = terms[m, 0]
                _outer_one(block, r0, r1, x[t // y_win, terms[m, 1]], y[t // y_win, t % y_win], alpha)
    _set_chunksize(caller_chunksize)


# --------------------------------------------------------------------------- gradients


@njit(cache=True, fastmath=FASTMATH)
def _grad_h_one(dv, block, gv):
    """``dv += block @ gv``: one reduction over ``k`` per row ``r`` (vectorised by ``reassoc``)."""
    zero = dv.dtype.type(0)  # a float64 literal would make float32 sums float64 (half the lanes)
    for r in range(block.shape[0]):
        acc = zero
        for k in range(block.shape[1]):
            acc += block[r, k] * gv[k]
        dv[r] += acc


@njit(cache=True, fastmath=FASTMATH)
def _grad_h_four(acc, block, g0, g1, g2, g3):
    """``acc[t] = block @ g_t`` for 4 terms: each row of ``block`` is loaded once for 4 dot products."""
    zero = acc.dtype.type(0)
    for r in range(block.shape[0]):
        row = block[r]
        s0 = s1 = s2 = s3 = zero
        for k in range(row.size):
            w = row[k]
            s0 += w * g0[k]
            s1 += w * g1[k]
            s2 += w * g2[k]
            s3 += w * g3[k]
        acc[0, r], acc[1, r], acc[2, r], acc[3, r] = s0, s1, s2, s3


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def grad_h(dh, W, g, input_idx, output_idx):
    """In place: ``dh[b, i] += sum_j W[input_idx[b, i], output_idx[b, j]] @ g[b, j]``.

    Rows ``(b, i)`` are bucketed by input block (by output block when ``oWin == 1``:
    a row then meets one block); a unit owns its rows ``dh[b, i]``.
    """
    batch, i_win, i_size = dh.shape
    i_blocks, o_blocks, o_win = W.shape[0], W.shape[1], g.shape[1]
    if batch * i_win == 0 or i_size == 0:
        return
    if batch * i_win * o_win < MIN_TERMS_PER_BLOCK * i_blocks * o_blocks:
        # Few terms per block (tiny_blocks): skip the bucketing; t alone writes dh[b, i].
        # Scalar indexing only, as in gemv's direct path.
        o_size = g.shape[2]
        zero = dh.dtype.type(0)
        for t in prange(batch * i_win):
            b, i = t // i_win, t % i_win
            p = input_idx[b, i]
            for j in range(o_win):
                q = output_idx[b, j]
                for r in range(i_size):
                    acc = zero
                    for k in range(o_size):
                        acc += W[p, q, r, k] * g[b, j, k]
                    dh[b, i, r] += acc
        return
    if o_win == 1:
        # Each row (b, i) meets one output block (h_softmax's slot level): bucket the
        # rows by it and sub-group by input block, so rows share W[p, q] loads.
        keys = np.empty((batch, i_win), np.intp)
        for b in range(batch):
            keys[b, :] = output_idx[b, 0]
        order, starts = _buckets(keys, o_blocks)
        fixed = keys.ravel()
        varying, n_varying, key_of = input_idx.reshape(batch * i_win, 1), i_blocks, 1
    else:
        # Bucket rows by input block, sub-group their terms by output block.
        order, starts = _buckets(input_idx, i_blocks)
        fixed = input_idx.ravel()
        varying, n_varying, key_of = output_idx, o_blocks, i_win
    units = _row_units(starts, batch * i_win)
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(units.shape[0]):
        rows = order[units[u, 0]:units[u, 1]]
        f = fixed[rows[0]]
        if rows.size * varying.shape[1] < MIN_TERMS_PER_BLOCK * n_varying:
            for t in rows:
                b = t // i_win
                for j in range(o_win):
                    _grad_h_one(dh[b, t % i_win], W[input_idx[b, t % i_win], output_idx[b, j]], g[b, j])
            continue
        terms, groups = _sub_groups(rows, varying, n_varying, key_of)
        acc4 = np.empty((4, i_size), dh.dtype)
        for v in range(n_varying):
            block = W[v, f] if o_win == 1 else W[f, v]
            s, e = groups[v], groups[v + 1]
            while e - s >= 4:
                js = (0, 0, 0, 0) if o_win == 1 else (terms[s, 1], terms[s + 1, 1], terms[s + 2, 1], terms[s + 3, 1])
                _grad_h_four(acc4, block, g[terms[s, 0] // i_win, js[0]], g[terms[s + 1, 0] // i_win, js[1]],
                             g[terms[s + 2, 0] // i_win, js[2]], g[terms[s + 3, 0] // i_win, js[3]])
                for m in range(4):  # rows may repeat within the 4: add one by one
                    t = terms[s + m, 0]
                    out = dh[t // i_win, t % i_win]
                    for r in range(i_size):
                        out[r] += acc4[m, r]
                s += 4
            for n in range(s, e):
                t = terms[n, 0]
                j = 0 if o_win == 1 else terms[n, 1]
                _grad_h_one(dh[t // i_win, t % i_win], block, g[t // i_win, j])
    _set_chunksize(caller_chunksize)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def bias_grad(db, g, output_idx):
    """In place: ``db[output_idx[b, j]] += g[b, j]`` for every ``b, j``.

    Rows are bucketed by output block; a unit is a bucket and a range of columns
    and owns ``db[q, k0:k1]``, adding its rows in bucket order.
    """
    batch, o_win, o_size = g.shape
    if batch * o_win == 0 or o_size == 0:
        return
    order, starts = _buckets(output_idx, db.shape[0])
    n_blocks = db.shape[0]
    n_slices = min(o_size, max(1, MIN_UNITS // n_blocks))
    width = (o_size + n_slices - 1) // n_slices
    n_slices = (o_size + width - 1) // width
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
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
    _set_chunksize(caller_chunksize)
