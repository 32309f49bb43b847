"""The loops over the register tiles: the small GEMMs and dot products of the
grouped paths, the streamed copy of a scratch buffer, and the prefetch of the
next term's weight blocks on the few-terms paths.

Each loop drives the intrinsics of :mod:`.codegen` over the rows and columns of
one group of terms (terms that share a weight block). Offsets are in elements
of C-contiguous arrays and nothing is bounds-checked: the kernels keep every
access inside the arrays.
"""

from .codegen import (
    dots11,
    dots12,
    dots13,
    dots21,
    dots22,
    dots23,
    dots31,
    dots32,
    dots33,
    dots41,
    dots42,
    dots43,
    lead_to_alignment,
    prefetch_read,
    prefetch_write,
    row_tile,
    row_tile_store,
    sfence,
    stream_store,
    tile1,
    tile1_store,
    tile2,
    tile3,
    tile4,
    tile5,
    tile6,
)
from .jit import cached_jit
from .tuning import C_AHEAD, DOT_COLS, DOT_ROWS, ROW_TILE_VECTORS, TILE_ROWS, TILE_VECTORS


@cached_jit()
def tile_rows(c, c_offs, a, a_offs, a_step, b, b0, ldb, n, k_begin, k_end, stream_c, slab, overwrite):
    """``c`` rows at ``c_offs[t]`` += ``a`` rows at ``a_offs[t]`` (step ``a_step``) times ``b``, by register tiles.

    ``b`` is ``n`` rows of ``ldb`` from ``b0``. The product covers the whole
    tiles of columns ``[k_begin, k_end)``; the last ``(k_end - k_begin) % width``
    columns (``width`` of a tile) are the caller's. ``c_offs``/``a_offs`` are 1-D
    of any length: rows go ``TILE_ROWS`` at a time. ``stream_c`` picks the loop order for the
    operand that comes from memory: False reads ``b`` (the weights of the
    forward product) slab by slab with prefetch, True walks the rows of ``c``
    (the weight gradient of the outer update) from left to right. ``slab`` is the
    number of rows of ``b`` (terms) per pass. With ``overwrite`` (``stream_c``
    only) the first pass stores its sums instead of adding them: ``c``'s old
    values in the tiles are never read.
    """
    width = TILE_VECTORS * 32 // c.itemsize  # 16 float32 or 8 float64 columns
    m = c_offs.size
    n_strips = (k_end - k_begin) // width
    n_tiles = (m + TILE_ROWS - 1) // TILE_ROWS
    ahead = slab * ldb  # the same strip of the next slab: what the next pass reads
    if stream_c:
        # One row of c at a time, left to right, in wide tiles: 4-row tiles
        # interleave four write streams, which ran 1.9x slower from memory.
        wide = ROW_TILE_VECTORS * 32 // c.itemsize
        n_wide = (k_end - k_begin) // wide
        line = 64 // c.itemsize
        for l0 in range(0, n, slab):
            depth = min(slab, n - l0)
            a_at = l0 * a_step
            store = overwrite and l0 == 0
            for t in range(m):
                if t + C_AHEAD < m:  # the row C_AHEAD further down: a hint for the read-modify-write
                    for k in range(k_begin, k_end, line):
                        prefetch_write(c, c_offs[t + C_AHEAD] + k)
                for k0 in range(k_begin, k_begin + n_wide * wide, wide):
                    if store:
                        row_tile_store(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + k0, ldb, depth, 0)
                    else:
                        row_tile(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + l0 * ldb + k0, ldb, depth, 0)
                for k0 in range(k_begin + n_wide * wide, k_begin + n_strips * width, width):
                    if store:
                        tile1_store(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + k0, ldb, depth, 0)
                    else:
                        tile1(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + l0 * ldb + k0, ldb, depth, 0)
        return
    for l0 in range(0, n, slab):
        depth = min(slab, n - l0)
        a_at = l0 * a_step
        # One loop over (strip, row tile); a helper function per tile, even
        # inlined, made LLVM spill the tile's addresses (3x slower).
        for x in range(n_strips * n_tiles):
            s, k0 = TILE_ROWS * (x % n_tiles), k_begin + width * (x // n_tiles)
            b_at = b0 + l0 * ldb + k0
            left = m - s
            if left >= 6:
                tile6(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 5:
                tile5(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 4:
                tile4(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 3:
                tile3(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 2:
                tile2(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            else:
                tile1(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)


@cached_jit()
def dot_rows(c, c_offs, a, a0, lda, n_rows, b, b_offs, n):
    """``c.flat[c_offs[t] + r] += a[r] . b_t`` for ``r < n_rows``: rows ``a[r]`` are ``a.flat[a0 + r * lda:][:n]``
    and ``b_t`` is ``b.flat[b_offs[t]:][:n]``.

    Goes ``DOT_COLS`` rows of ``a`` at a time (each read once for all ``t``,
    while in L1), ``t`` ``DOT_ROWS`` at a time; the last ``n % lanes`` terms of
    each dot product are added after the vector part.
    """
    lanes = 32 // c.itemsize
    m = c_offs.size
    for r in range(0, n_rows, DOT_COLS):
        ar = a0 + r * lda
        cols = min(DOT_COLS, n_rows - r)
        for s in range(0, m, DOT_ROWS):
            left = min(DOT_ROWS, m - s)
            if cols == 3:
                if left == 4:
                    dots43(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 3:
                    dots33(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 2:
                    dots23(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                else:
                    dots13(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif cols == 2:
                if left == 4:
                    dots42(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 3:
                    dots32(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 2:
                    dots22(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                else:
                    dots12(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif left == 4:
                dots41(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif left == 3:
                dots31(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif left == 2:
                dots21(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            else:
                dots11(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
    c_flat, a_flat, b_flat = c.reshape(-1), a.reshape(-1), b.reshape(-1)
    for k0 in range(n - n % lanes, n):
        for t in range(m):
            for r in range(n_rows):
                c_flat[c_offs[t] + r] += a_flat[a0 + r * lda + k0] * b_flat[b_offs[t] + k0]


@cached_jit()
def stream_rows(o, at, scratch, n):
    """``o.flat[at:at + n] = scratch[:n]``: non-temporal stores between scalar ends, fenced."""
    o_flat = o.reshape(-1)
    lanes = 32 // o.itemsize
    lead = lead_to_alignment(o)
    head = min(n, (lead - at) % lanes) if lead >= 0 else n
    for k in range(head):
        o_flat[at + k] = scratch[k]
    n_vectors = (n - head) // lanes
    stream_store(o, at + head, scratch, head, n_vectors)
    for k in range(head + n_vectors * lanes, n):
        o_flat[at + k] = scratch[k]
    sfence()


# Inlined in Numba IR: the loop compiles as if written in the caller, whose
# constant ``for_write`` leaves one hint (a compiled call is unrolled differently).
@cached_jit(inline="always")
def prefetch_blocks(a, p, idx, b, for_write):
    """Prefetch the blocks ``a[p, idx[b, j]]`` for every ``j``, a cache line at a time (a hint: never faults).

    ``a`` is C-contiguous, ``(p_blocks, q_blocks, rows, cols)``. The few-terms
    paths call it for the next term while they work on the current one.
    ``for_write`` gives the write hint (the caller will update the blocks),
    otherwise the read hint.
    """
    rows, cols = a.shape[2], a.shape[3]
    for j in range(idx.shape[1]):
        at = ((p * a.shape[1] + idx[b, j]) * rows) * cols
        for k in range(0, rows * cols, 64 // a.itemsize):
            if for_write:
                prefetch_write(a, at + k)
            else:
                prefetch_read(a, at + k)
