"""CPU kernels for the block-sparse products and their gradients.

Every accumulating kernel first buckets its rows by the block they write (a
counting sort, ``O(rows + blocks)``), then ``prange``s over work units that
partition the output: a unit is one bucket, or a slice of one (rows or columns
of the output for ``gemv``, rows for ``grad_h``, rows of the weight block for
``outer``, columns for ``bias_grad``), about ``UNITS_PER_THREAD`` per thread
when buckets are few. Two units never write the same element, so there are no
races and no atomics, and each unit sums its terms in a fixed order: results
are bit-identical run to run and for any thread count (every choice that sets a
sum's order is made per bucket, never per unit). Units are handed out
dynamically (chunk size 1): buckets are uneven, and on a shared 2-core machine a
static split waits for the core that another process took.

Within a unit, the terms that share a weight block are sub-grouped (a second
counting sort) when there are several per block, and each group is one small
GEMM run on register tiles written as LLVM vector code (``_make_tile``,
``_make_dot_tile``); with about one term per block the kernels go row by row.
"""

import platform

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.ufunc.parallel import _launch_threads

# Every fast-math flag except nnan/ninf: with those, NaN and inf would stop
# propagating (Numba folds ``v != v`` away); "reassoc" lets the reductions vectorise.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Work units to aim for per thread when buckets are few (one bucket in
# h_softmax's class level): enough for the dynamic schedule to even out uneven
# units and a core taken by another process. More units cost reuse: two row
# slices of one bucket each read its weight blocks (big_blocks float32: 3.6 ms
# with 8 units a thread, 5.7 ms with 32).
UNITS_PER_THREAD = 8

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


# --------------------------------------------------------------------------- register tiles
#
# LLVM does not keep a GEMM tile's accumulators in registers when the kernel is
# written in Python (every form tried either re-loads and stores the output each
# step or stays scalar), so the inner product of the grouped paths is emitted
# directly: ``mr`` output rows of ``TILE_VECTORS`` SIMD vectors each, in vector
# registers for the whole sum. 6 x 16 float32 (6 x 8 float64) is 12 accumulators,
# 2 loads of ``b`` and 6 broadcasts of ``a`` per 12 FMAs: 135 / 63 GFLOP/s on one
# core here (4-row tiles: 113 / 45; the best loop form: 26).

TILE_VECTORS = 2  # SIMD vectors per tile row
TILE_ROWS = 6  # rows per tile: 12 accumulators, 2 loads and 6 broadcasts per 12 FMAs

# Row tiles for a ``c`` streamed from memory (the outer update): one row of
# ``ROW_TILE_VECTORS`` vectors (64 float32 / 32 float64 columns) per tile, the
# sum taken ``ROW_TILE_DEPTH`` terms at a time.
ROW_TILE_VECTORS = 8
ROW_TILE_DEPTH = 64
# The outer update prefetches (for writing) the row of ``c`` this many rows ahead:
# outer hsm_target float64 12.2 -> 9.8 ms, big_blocks 8.8 -> 7.1 ms (float32
# hsm_target 4.7 -> 5.0 ms, the others faster).
C_AHEAD = 8
# A block pair with this many terms or more (h_softmax's class level: 2048 rows on
# one block) keeps its gradient block in cache: the outer update then runs the
# forward's 6-row tiles, DEEP_TILE_DEPTH terms a slab (3.1 against 6.4 ms float32,
# 7.5 against 15.7 ms float64, for 2048 x 512 x 256; BLAS: 2.2 / 4.6 ms).
OUTER_REUSE_TERMS = 64
# Each outer unit gathers all the y rows of its bucket: slices of fewer block rows
# repeat that gather more often than the compute pays for.
OUTER_MIN_SLICE_ROWS = 128
# outer_scattered_new builds a whole x block row ``o[p]`` of a new weight gradient
# in a scratch buffer: up to this size it stays in the (512 KiB) L2 cache.
SCRATCH_BYTES = 512 << 10


def _simd_lanes(dtype):
    """Lanes of a 256-bit vector: the widest this kernel family targets (AVX2)."""
    return 32 // (dtype.bitwidth // 8)


def _vector_ops(context, builder, dtype):
    """``(lanes, vector type, alignment, fma)`` for the SIMD code of ``dtype`` (codegen helper)."""
    lanes = _simd_lanes(dtype)
    vector = ir.VectorType(context.get_value_type(dtype), lanes)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{lanes}f{dtype.bitwidth}")
    return lanes, vector, dtype.bitwidth // 8, fma


def _emit_prefetch(builder, pointer, for_write):
    """Emit a prefetch of ``pointer`` into every cache level (codegen helper; never faults)."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(pointer, i8p), ir.Constant(i32, int(for_write)), ir.Constant(i32, 3),
                      ir.Constant(i32, 1)])


def _make_tile(mr, vectors=TILE_VECTORS, accumulate=True):
    """An intrinsic that adds (or with ``accumulate=False`` stores) an ``mr``-row register tile of a product into ``c``.

    ``tile(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b0, ldb, n, ahead)`` does,
    for ``t < mr`` and ``k`` below the tile width, with ``c_t = c_offs[s + t] + k0``
    and ``a_t = a_offs[s + t] + a_at``::

        c.flat[c_t + k] += sum(a.flat[a_t + l * a_step] * b.flat[b0 + l * ldb + k] for l < n)

    and prefetches ``b.flat[b0 + l * ldb + ahead]`` at each step (a hint: it never
    faults, wherever it points).

    Offsets are in elements of the C-contiguous arrays; ``c_offs``/``a_offs`` are
    ``intp`` arrays. Nothing is bounds-checked: the caller keeps every access
    inside the arrays. The sum runs over ``l`` in order (fused multiply-adds), and
    each row is added to ``c`` after the previous one, so repeated ``c_t`` add up.
    Without ``accumulate`` the sums replace ``c`` (``c``'s old values are not read).
    """
    @intrinsic
    def tile(typingctx, c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b0, ldb, n, ahead):
        sig = types.void(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b0, ldb, n, ahead)

        def codegen(context, builder, signature, args):
            lanes, vector, align, fma = _vector_ops(context, builder, signature.args[0].dtype)
            i64 = ir.IntType(64)
            c_ptr, c_offs_ptr, a_ptr, a_offs_ptr, b_ptr = (
                context.make_array(signature.args[k])(context, builder, args[k]).data for k in (0, 1, 2, 3, 8))
            first, k0, a_at0, a_step, b0, ldb, n, ahead = (
                context.cast(builder, args[k], signature.args[k], types.intp) for k in (4, 5, 6, 7, 9, 10, 11, 12))

            def offset(ptr, t, plus):
                return builder.add(builder.load(builder.gep(ptr, [builder.add(first, ir.Constant(i64, t))])), plus)

            c_offs = [offset(c_offs_ptr, t, k0) for t in range(mr)]
            a_offs = [offset(a_offs_ptr, t, a_at0) for t in range(mr)]
            # Accumulators live in allocas of the entry block: LLVM promotes them to registers.
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * lanes))
                    for _ in range(vectors)] for _ in range(mr)]
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            undef = ir.Constant(vector, ir.Undefined)
            with cgutils.for_range(builder, n) as loop:
                step = loop.index
                b_row = builder.gep(b_ptr, [builder.add(b0, builder.mul(step, ldb))])
                _emit_prefetch(builder, builder.gep(b_row, [ahead]), for_write=False)
                b_vecs = []
                for v in range(vectors):
                    ptr = builder.bitcast(builder.gep(b_row, [ir.Constant(i64, v * lanes)]), vector.as_pointer())
                    b_vecs.append(builder.load(ptr, align=align))
                a_at = builder.mul(step, a_step)
                for t in range(mr):
                    s = builder.load(builder.gep(a_ptr, [builder.add(a_offs[t], a_at)]))
                    s = builder.shuffle_vector(builder.insert_element(undef, s, ir.Constant(ir.IntType(32), 0)),
                                               undef, splat)
                    for v in range(vectors):
                        builder.store(builder.call(fma, [s, b_vecs[v], builder.load(acc[t][v])]), acc[t][v])
            for t in range(mr):
                c_row = builder.gep(c_ptr, [c_offs[t]])
                for v in range(vectors):
                    ptr = builder.bitcast(builder.gep(c_row, [ir.Constant(i64, v * lanes)]), vector.as_pointer())
                    total = builder.load(acc[t][v])
                    if accumulate:
                        total = builder.fadd(builder.load(ptr, align=align), total)
                    builder.store(total, ptr, align=align)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile1, _tile2, _tile3, _tile4, _tile5, _tile6 = (_make_tile(mr) for mr in (1, 2, 3, 4, 5, 6))
_row_tile = _make_tile(1, ROW_TILE_VECTORS)
_tile1_store = _make_tile(1, accumulate=False)
_row_tile_store = _make_tile(1, ROW_TILE_VECTORS, accumulate=False)


def _make_prefetch(for_write):
    """An intrinsic ``prefetch(a, offset)``: hint the cache to load ``a.flat[offset]`` (never faults)."""
    @intrinsic
    def prefetch(typingctx, a, offset):
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            at = builder.gep(data, [context.cast(builder, args[1], signature.args[1], types.intp)])
            _emit_prefetch(builder, at, for_write)
            return context.get_dummy_value()

        return types.void(a, offset), codegen

    return prefetch


_prefetch = _make_prefetch(for_write=True)
_prefetch_read = _make_prefetch(for_write=False)


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@intrinsic
def _lead(typingctx, a):
    """Elements from the start of the array ``a`` to its first 32-byte boundary (an ``intp``).

    -1 when no element is on one (``a``'s address not a multiple of its item size).
    """
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        itemsize = ir.Constant(i64, signature.args[0].dtype.bitwidth // 8)
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        gap = builder.and_(builder.neg(builder.ptrtoint(data, i64)), ir.Constant(i64, 31))
        whole = builder.icmp_unsigned("==", builder.urem(gap, itemsize), ir.Constant(i64, 0))
        return builder.select(whole, builder.udiv(gap, itemsize), ir.Constant(i64, -1))

    return types.intp(a), codegen


@intrinsic
def _sfence(typingctx):
    """Order the non-temporal stores before it (x86; nothing elsewhere)."""
    def codegen(context, builder, signature, args):
        if _X86:
            fence = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                   "llvm.x86.sse.sfence")
            builder.call(fence, [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _stream_store(typingctx, dst, at, src, start, n_vectors):
    """``dst.flat[at:][:m] = src.flat[start:][:m]``, ``m = n_vectors * lanes``, by non-temporal stores.

    The stores bypass the cache (no read for ownership: a W-sized result is
    written once, not read and written); the caller fences them (``_sfence``).
    ``dst.flat[at]`` must be 32-byte aligned; nothing is bounds-checked.
    """
    def codegen(context, builder, signature, args):
        lanes, vector, align, _ = _vector_ops(context, builder, signature.args[0].dtype)
        dst_ptr, src_ptr = (context.make_array(signature.args[k])(context, builder, args[k]).data for k in (0, 2))
        at, start, n = (context.cast(builder, args[k], signature.args[k], types.intp) for k in (1, 3, 4))
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        with cgutils.for_range(builder, n) as loop:
            k = builder.mul(loop.index, ir.Constant(n.type, lanes))
            value = builder.load(builder.bitcast(builder.gep(src_ptr, [builder.add(start, k)]), vector.as_pointer()),
                                 align=align)
            store = builder.store(value, builder.bitcast(builder.gep(dst_ptr, [builder.add(at, k)]),
                                                         vector.as_pointer()), align=32)
            if _X86:  # elsewhere plain stores: no fence to order them is needed
                store.set_metadata("nontemporal", nontemporal)
        return context.get_dummy_value()

    return types.void(dst, at, src, start, n_vectors), codegen


# Rows of ``b`` per pass of the register tiles: a pass reads a contiguous
# ``TILE_DEPTH``-row slab of ``b`` strip by strip (1.4x faster than whole-height
# strips for float64 256 x 256 blocks streamed from memory).
TILE_DEPTH = 16
# With many rows per block the weights come from cache instead (h_softmax's class
# level: 2048 rows on one block): deeper slabs store the tiles' sums less often.
# Chosen per bucket, never per unit: the slab depth sets the rounding of a sum,
# which must not depend on how many threads cut the buckets.
DEEP_ROWS = 32
DEEP_TILE_DEPTH = 256


@njit(cache=True)
def _tile_rows(c, c_offs, a, a_offs, a_step, b, b0, ldb, n, k_begin, k_end, stream_c, slab, overwrite):
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
                        _prefetch(c, c_offs[t + C_AHEAD] + k)
                for k0 in range(k_begin, k_begin + n_wide * wide, wide):
                    if store:
                        _row_tile_store(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + k0, ldb, depth, 0)
                    else:
                        _row_tile(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + l0 * ldb + k0, ldb, depth, 0)
                for k0 in range(k_begin + n_wide * wide, k_begin + n_strips * width, width):
                    if store:
                        _tile1_store(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + k0, ldb, depth, 0)
                    else:
                        _tile1(c, c_offs, a, a_offs, t, k0, a_at, a_step, b, b0 + l0 * ldb + k0, ldb, depth, 0)
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
                _tile6(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 5:
                _tile5(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 4:
                _tile4(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 3:
                _tile3(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            elif left == 2:
                _tile2(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)
            else:
                _tile1(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b_at, ldb, depth, ahead)


# The threading layer's C symbols (``get_num_threads``, the chunk-size pair) are
# registered with LLVM when Numba starts its threads; a cached non-parallel
# helper that calls them can be linked before any parallel kernel has run.
_launch_threads()


# grad_h's dot-product tiles: DOT_ROWS rows of g against DOT_COLS rows of a weight
# block, mr * nr + nr + 1 = 16 vector registers, 7 loads per 12 fused multiply-adds
# (4 x 2 had 6 per 8), the next DOT_COLS weight rows prefetched: grad_h float64
# hsm_target 12.2 -> 6.8 ms, big_blocks 12.6 -> 5.5 ms; float32 4.6 -> 3.5, 4.5 -> 3.2.
DOT_ROWS = 4
DOT_COLS = 3


def _make_dot_tile(mr, nr):
    """An intrinsic that adds an ``mr x nr`` tile of dot products into ``c``.

    ``dots(c, c_offs, s, r, a, a0, lda, b, b_offs, n)`` does, for ``t < mr`` and
    ``v < nr``, with ``c_t = c_offs[s + t] + r`` and ``b_t = b_offs[s + t]``::

        c.flat[c_t + v] += sum(a.flat[a0 + v * lda + k] * b.flat[b_t + k] for k < n - n % lanes)

    (``lanes`` of a SIMD vector; the last ``n % lanes`` terms are the caller's),
    and prefetches the ``nr`` rows of ``a`` after its own (a hint: it never faults).
    Each dot product is summed in one vector register, then across its lanes in
    a fixed tree: the order never depends on the data or the thread count. Rows
    ``c_t`` are added one after the other, so repeated offsets add up. Nothing is
    bounds-checked.
    """
    @intrinsic
    def dots(typingctx, c, c_offs, s, r, a, a0, lda, b, b_offs, n):
        sig = types.void(c, c_offs, s, r, a, a0, lda, b, b_offs, n)

        def codegen(context, builder, signature, args):
            lanes, vector, align, fma = _vector_ops(context, builder, signature.args[0].dtype)

            def intp(k):
                return context.cast(builder, args[k], signature.args[k], types.intp)

            c_ptr, c_offs_ptr, a_ptr, b_ptr, b_offs_ptr = (
                context.make_array(signature.args[k])(context, builder, args[k]).data for k in (0, 1, 4, 7, 8))
            first, r, a0, lda, n = intp(2), intp(3), intp(5), intp(6), intp(9)

            def offset(ptr, t):
                return builder.load(builder.gep(ptr, [builder.add(first, ir.Constant(first.type, t))]))

            c_offs = [builder.add(offset(c_offs_ptr, t), r) for t in range(mr)]
            b_offs = [offset(b_offs_ptr, t) for t in range(mr)]
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vector, [0.0] * lanes))
                    for _ in range(nr)] for _ in range(mr)]
            n_vectors = builder.sdiv(n, ir.Constant(n.type, lanes))

            def load(ptr, at):
                return builder.load(builder.bitcast(builder.gep(ptr, [at]), vector.as_pointer()), align=align)

            with cgutils.for_range(builder, n_vectors) as loop:
                k = builder.mul(loop.index, ir.Constant(n.type, lanes))
                a_vecs = [load(a_ptr, builder.add(builder.add(a0, builder.mul(ir.Constant(n.type, v), lda)), k))
                          for v in range(nr)]
                for v in range(nr):  # the rows of the next tile: W streams from memory (hsm_target)
                    _emit_prefetch(builder, builder.gep(a_ptr, [builder.add(builder.add(
                        a0, builder.mul(ir.Constant(n.type, v + nr), lda)), k)]), for_write=False)
                for t in range(mr):
                    b_vec = load(b_ptr, builder.add(b_offs[t], k))
                    for v in range(nr):
                        builder.store(builder.call(fma, [a_vecs[v], b_vec, builder.load(acc[t][v])]), acc[t][v])
            i32 = ir.IntType(32)
            for t in range(mr):
                for v in range(nr):
                    total = builder.load(acc[t][v])
                    width = lanes
                    while width > 1:  # fixed tree: halves, quarters, ...
                        width //= 2
                        low = builder.shuffle_vector(total, total, ir.Constant(ir.VectorType(i32, width),
                                                                             list(range(width))))
                        high = builder.shuffle_vector(total, total, ir.Constant(ir.VectorType(i32, width),
                                                                              list(range(width, 2 * width))))
                        total = builder.fadd(low, high)
                    total = builder.extract_element(total, ir.Constant(i32, 0))
                    at = builder.gep(c_ptr, [builder.add(c_offs[t], ir.Constant(n.type, v))])
                    builder.store(builder.fadd(builder.load(at), total), at)
            return context.get_dummy_value()

        return sig, codegen

    return dots


_dots = {(mr, nr): _make_dot_tile(mr, nr) for mr in range(1, DOT_ROWS + 1) for nr in range(1, DOT_COLS + 1)}
_dots11, _dots21, _dots31, _dots41 = _dots[1, 1], _dots[2, 1], _dots[3, 1], _dots[4, 1]
_dots12, _dots22, _dots32, _dots42 = _dots[1, 2], _dots[2, 2], _dots[3, 2], _dots[4, 2]
_dots13, _dots23, _dots33, _dots43 = _dots[1, 3], _dots[2, 3], _dots[3, 3], _dots[4, 3]


@njit(cache=True)
def _dot_rows(c, c_offs, a, a0, lda, n_rows, b, b_offs, n):
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
                    _dots43(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 3:
                    _dots33(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 2:
                    _dots23(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                else:
                    _dots13(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif cols == 2:
                if left == 4:
                    _dots42(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 3:
                    _dots32(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                elif left == 2:
                    _dots22(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
                else:
                    _dots12(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif left == 4:
                _dots41(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif left == 3:
                _dots31(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            elif left == 2:
                _dots21(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
            else:
                _dots11(c, c_offs, s, r, a, ar, lda, b, b_offs, n)
    c_flat, a_flat, b_flat = c.reshape(-1), a.reshape(-1), b.reshape(-1)
    for k0 in range(n - n % lanes, n):
        for t in range(m):
            for r in range(n_rows):
                c_flat[c_offs[t] + r] += a_flat[a0 + r * lda + k0] * b_flat[b_offs[t] + k0]


@intrinsic
def _num_threads(typingctx):
    """``numba.get_num_threads()``, cacheable: calls the threading layer's C symbol as
    Numba's parfor lowering does (Numba's own overload goes through ctypes)."""
    def codegen(context, builder, signature, args):
        get = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(context.get_value_type(types.intp), []), name="get_num_threads")
        return builder.call(get, [])

    return types.intp(), codegen


@njit(cache=True)
def _min_units():
    """Work units to cut the work into when buckets are few (see ``UNITS_PER_THREAD``)."""
    return UNITS_PER_THREAD * max(1, _num_threads())


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
def _block_units(n_blocks):
    """``(n_units, per_unit)``: ``n_blocks > 0`` blocks cut into at most ``_min_units()`` runs of consecutive blocks."""
    n_units = min(n_blocks, _min_units())
    per_unit = (n_blocks + n_units - 1) // n_units
    return (n_blocks + per_unit - 1) // per_unit, per_unit


@njit(cache=True)
def _units(starts, n_rows, n_cols, width, cut_columns):
    """Work units ``(begin, end, k_begin, k_end)``: a bucket's rows ``order[begin:end]``, columns ``[k_begin, k_end)``.

    While there are fewer than ``_min_units()`` units, buckets are cut by
    columns (whole tiles of ``width``) if ``cut_columns``, then by rows. Column
    slices of a bucket read disjoint parts of its weight blocks but each reads
    all its input rows; row slices the other way round: the caller cuts the
    larger operand into parts.
    """
    min_units = _min_units()
    n_busy = 0
    for q in range(starts.size - 1):
        n_busy += starts[q + 1] > starts[q]
    tiles = max(1, n_cols // width)
    n_col = min(tiles, max(1, (min_units + n_busy - 1) // n_busy)) if cut_columns else 1
    per_slice = (tiles + n_col - 1) // n_col
    n_col = (tiles + per_slice - 1) // per_slice
    size = max(1, (n_rows * n_col + min_units - 1) // min_units)
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


@njit(parallel=True, cache=True, fastmath=FASTMATH)
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
    order, starts = _buckets(output_idx, W.shape[1])
    # Cut the weights by columns when they outweigh the inputs (big_blocks), the
    # rows otherwise (h_softmax's class level: 2048 rows on one 512 x 256 block).
    units = _units(starts, batch * o_win, o_size, tile_cols, W.size >= h.size)
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
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
            terms, groups = _sub_groups(rows, input_idx, i_blocks, o_win)
        o_offs = terms[:, 0] * o_size  # o[b, j] starts at (b * o_win + j) * o_size
        h_offs = ((terms[:, 0] // o_win) * i_win + terms[:, 1]) * i_size
        for g in range(groups.size - 1):
            s, e = groups[g], groups[g + 1]
            if s == e:
                continue
            t = terms[s, 0]
            p = input_idx[t // o_win, terms[s, 1]]
            _tile_rows(o, o_offs[s:e], h, h_offs[s:e], 1, W, (p * W.shape[1] + q) * i_size * o_size,
                       o_size, i_size, k_begin, k_end, False, slab, False)
            for k in range(k_end - (k_end - k_begin) % tile_cols, k_end):
                for n in range(s, e):
                    t = terms[n, 0]
                    b, j, i = t // o_win, t % o_win, terms[n, 1]
                    acc = o.dtype.type(0)
                    for r in range(i_size):
                        acc += h[b, i, r] * W[p, q, r, k]
                    o[b, j, k] += acc
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


@njit(cache=True)
def _clear_rows(o, p, q, r0, r1):
    """``o[p, q, r0:r1] = 0``."""
    zero = o.dtype.type(0)
    for r in range(r0, r1):
        for k in range(o.shape[3]):
            o[p, q, r, k] = zero


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def outer(o, x, y, x_idx, y_idx, alpha, clear):
    """In place: ``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``.

    With ``clear``, ``o``'s previous contents are ignored, as if it were zeros:
    the first pass over a block stores its sums instead of adding them, and the
    blocks no term reaches are zeroed, so a new weight gradient needs no
    zeroing pass of its own. (Buckets of few terms zero their rows first.)

    Rows ``(b, j)`` are bucketed by ``y`` block ``q``; a unit is a bucket and a range
    of block rows ``r``, and owns ``o[:, q, r0:r1]``: repeated block pairs never race.
    """
    batch, x_win, x_size = x.shape
    y_win, y_size = y.shape[1], y.shape[2]
    x_blocks, y_blocks = o.shape[0], o.shape[1]
    tile_cols = TILE_VECTORS * 32 // o.itemsize
    if batch * x_win * y_win == 0 or x_size == 0:
        if clear:
            for u in prange(x_blocks * y_blocks):
                _clear_rows(o, u // y_blocks, u % y_blocks, 0, x_size)
        return
    if batch * x_win * y_win < MIN_TERMS_PER_BLOCK * x_blocks * y_blocks:
        # Few terms per block (tiny_blocks): scattered read-modify-writes. Bucketed
        # by x block, a unit's updates land in one contiguous o[p] (256 KB there)
        # instead of all over o, and the next term's blocks are prefetched:
        # 12.9 -> 5.4 ms float32, 19.3 -> 11.4 ms float64 on tiny_blocks.
        x_order, x_starts = _buckets(x_idx, x_blocks)
        n_units, per_unit = _block_units(x_blocks)
        caller_chunksize = _set_chunksize(1)
        for u in prange(n_units):
            for p in range(u * per_unit, min((u + 1) * per_unit, x_blocks)):
                if clear:
                    for q in range(y_blocks):
                        _clear_rows(o, p, q, 0, x_size)
                s, e = x_starts[p], x_starts[p + 1]
                for n in range(s, e):
                    if n + 1 < e:
                        b_next = x_order[n + 1] // x_win
                        for j in range(y_win):
                            at = ((p * y_blocks + y_idx[b_next, j]) * x_size) * y_size
                            for k in range(0, x_size * y_size, 64 // o.itemsize):
                                _prefetch(o, at + k)
                    t = x_order[n]
                    b, i = t // x_win, t % x_win
                    for j in range(y_win):
                        q = y_idx[b, j]
                        for r in range(x_size):
                            a = alpha * x[b, i, r]
                            for k in range(y_size):
                                o[p, q, r, k] += a * y[b, j, k]
        _set_chunksize(caller_chunksize)
        return
    order, starts = _buckets(y_idx, y_blocks)
    n_busy = 0
    for q in range(y_blocks):
        n_busy += starts[q + 1] > starts[q]
    n_slices = min(x_size, max(1, (_min_units() + n_busy - 1) // n_busy))
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
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
    for u in prange(n_columns * n_slices):
        q = columns[u // n_slices]
        r0 = (u % n_slices) * slice_rows
        r1 = min(r0 + slice_rows, x_size)
        rows = order[starts[q]:starts[q + 1]]
        if rows.size * x_win < MIN_TERMS_PER_BLOCK * x_blocks:
            if clear:
                for p in range(x_blocks):
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
            continue
        terms, groups = _sub_groups(rows, x_idx, x_blocks, y_win)
        # The unit's terms, gathered in group order: xs[n] = x[b, i, r0:r1] and
        # ys[n] = alpha * y[b, j], so a group's update is xs[s:e].T @ ys[s:e].
        width = r1 - r0
        xs = np.empty((terms.shape[0], width), o.dtype)
        ys = np.empty((terms.shape[0], y_size), o.dtype)
        for n in range(terms.shape[0]):
            t = terms[n, 0]
            b, i = t // y_win, terms[n, 1]
            for r in range(width):
                xs[n, r] = x[b, i, r0 + r]
            for k in range(y_size):
                ys[n, k] = alpha * y[b, t % y_win, k]
        x_cols = np.arange(width)  # row r of a block is column r - r0 of xs
        for p in range(x_blocks):
            s, e = groups[p], groups[p + 1]
            if s == e:
                if clear:
                    _clear_rows(o, p, q, r0, r1)
                continue
            block = (p * o.shape[1] + q) * x_size * y_size
            o_offs = block + (r0 + x_cols) * y_size
            if e - s >= OUTER_REUSE_TERMS:
                # Many terms (h_softmax's class level: 2048 on one block): the block
                # stays in cache, so the compute-bound 6-row tiles of the forward win.
                if clear:
                    _clear_rows(o, p, q, r0, r1)
                _tile_rows(o, o_offs, xs, x_cols + s * width, width, ys, s * y_size, y_size, e - s, 0, y_size,
                           False, DEEP_TILE_DEPTH, False)
            else:
                _tile_rows(o, o_offs, xs, x_cols + s * width, width, ys, s * y_size, y_size, e - s, 0, y_size,
                           True, ROW_TILE_DEPTH, clear)
            for r in range(width):
                for k in range(y_size - y_size % tile_cols, y_size):
                    acc = o.dtype.type(0)
                    for n in range(s, e):
                        acc += xs[n, r] * ys[n, k]
                    o[p, q, r0 + r, k] = acc if clear else o[p, q, r0 + r, k] + acc
    _set_chunksize(caller_chunksize)


@njit(cache=True)
def _stream_rows(o, at, scratch, n):
    """``o.flat[at:at + n] = scratch[:n]``: non-temporal stores between scalar ends, fenced."""
    o_flat = o.reshape(-1)
    lanes = 32 // o.itemsize
    lead = _lead(o)
    head = min(n, (lead - at) % lanes) if lead >= 0 else n
    for k in range(head):
        o_flat[at + k] = scratch[k]
    n_vectors = (n - head) // lanes
    _stream_store(o, at + head, scratch, head, n_vectors)
    for k in range(head + n_vectors * lanes, n):
        o_flat[at + k] = scratch[k]
    _sfence()


@njit(parallel=True, cache=True, fastmath=FASTMATH)
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
    order, starts = _buckets(x_idx, x_blocks)
    n_units, per_unit = _block_units(x_blocks)
    zero = o.dtype.type(0)
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
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
            _stream_rows(o, p * row, scratch, row)
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


@njit(parallel=True, cache=True, fastmath=FASTMATH)
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
        order, starts = _buckets(input_idx, i_blocks)
        n_units, per_unit = _block_units(i_blocks)
        line = 64 // W.itemsize
        caller_chunksize = _set_chunksize(1)
        for u in prange(n_units):
            for p in range(u * per_unit, min((u + 1) * per_unit, i_blocks)):
                s, e = starts[p], starts[p + 1]
                for n in range(s, e):
                    if n + 1 < e:
                        b_next = order[n + 1] // i_win
                        for j in range(o_win):
                            at = (p * o_blocks + output_idx[b_next, j]) * i_size * o_size
                            for k in range(0, i_size * o_size, line):
                                _prefetch_read(W, at + k)
                    t = order[n]
                    b, i = t // i_win, t % i_win
                    for j in range(o_win):
                        q = output_idx[b, j]
                        for r in range(i_size):
                            acc = zero
                            for k in range(o_size):
                                acc += W[p, q, r, k] * g[b, j, k]
                            dh[b, i, r] += acc
        _set_chunksize(caller_chunksize)
        return
    if o_win == 1:
        # Each row (b, i) meets one output block (h_softmax's slot level): bucket the
        # rows by it and sub-group by input block, so rows share W[p, q] loads.
        keys = np.empty((batch, i_win), np.intp)
        for b in range(batch):
            for i in range(i_win):  # not keys[b, :] = ...: that is a parallel region per row
                keys[b, i] = output_idx[b, 0]
        order, starts = _buckets(keys, o_blocks)
        fixed = keys.ravel()
        varying, n_varying, key_of = input_idx.reshape(batch * i_win, 1), i_blocks, 1
    else:
        # Bucket rows by input block, sub-group their terms by output block.
        order, starts = _buckets(input_idx, i_blocks)
        fixed = input_idx.ravel()
        varying, n_varying, key_of = output_idx, o_blocks, i_win
    units = _units(starts, batch * i_win, i_size, 1, False)  # rows only: column 0 to i_size
    caller_chunksize = _set_chunksize(1)  # dynamic schedule: uneven units, shared cores
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
        terms, groups = _sub_groups(rows, varying, n_varying, key_of)
        dh_offs = terms[:, 0] * i_size  # dh[b, i] starts at (b * i_win + i) * i_size
        g_offs = ((terms[:, 0] // i_win) * o_win + terms[:, 1]) * o_size  # terms[:, 1] is j (0 if oWin is 1)
        for v in range(n_varying):
            s, e = groups[v], groups[v + 1]
            if s == e:
                continue
            block = (v * o_blocks + f) if o_win == 1 else (f * o_blocks + v)
            _dot_rows(dh, dh_offs[s:e], W, block * i_size * o_size, o_size, i_size, g, g_offs[s:e], o_size)
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
    n_slices = min(o_size, max(1, _min_units() // n_blocks))
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
