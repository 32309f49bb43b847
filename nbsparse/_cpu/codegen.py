"""LLVM code generation for the CPU kernels: threading-layer calls, prefetches,
non-temporal stores and the register tiles of the small GEMMs.

Each ``@intrinsic`` here emits LLVM IR directly where Numba's own overloads
would make a kernel uncachable (the threading layer's ctypes calls) or where
LLVM does not produce the code written in Python (register tiles, prefetches,
streaming stores). Numba compiles them into the calling kernel; nothing is
bounds-checked, the callers keep every access inside their arrays.
"""

import platform

from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import pure
from .tuning import DOT_COLS, DOT_ROWS, ROW_TILE_VECTORS, TILE_VECTORS


def _python_twin(twin):
    """Under ``NUMBA_DISABLE_JIT=1`` the kernels run as Python, which cannot call an
    intrinsic: ``twin`` (from :mod:`.pure`) then stands in for the decorated one."""
    def decorate(intrinsic_function):
        return twin if config.DISABLE_JIT else intrinsic_function

    return decorate

# --------------------------------------------------------------------------- the threading layer
#
# The C symbols these call are registered with LLVM when Numba starts its
# threads: ``jit.KeyedFunctionCache`` starts them before any kernel is compiled
# or loaded.


@_python_twin(pure.set_chunksize)
@intrinsic
def set_chunksize(typingctx, n):
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


@_python_twin(pure.num_threads)
@intrinsic
def num_threads(typingctx):
    """``numba.get_num_threads()``, cacheable: calls the threading layer's C symbol as
    Numba's parfor lowering does (Numba's own overload goes through ctypes)."""
    def codegen(context, builder, signature, args):
        get = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(context.get_value_type(types.intp), []), name="get_num_threads")
        return builder.call(get, [])

    return types.intp(), codegen


@_python_twin(pure.thread_id)
@intrinsic
def thread_id(typingctx):
    """``numba.get_thread_id()``, cacheable: the calling thread's number in ``[0, num_threads())``
    inside a ``prange`` (0 outside one), from the threading layer's C symbol."""
    def codegen(context, builder, signature, args):
        # Declared as Numba's own ``get_thread_id`` declares it (one module may hold both).
        get = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(context.get_value_type(types.intp), []), name="get_thread_id")
        return builder.call(get, [])

    return types.intp(), codegen

# --------------------------------------------------------------------------- SIMD helpers and register tiles
#
# See ``tuning.TILE_VECTORS``: LLVM does not keep a GEMM tile's accumulators in
# registers when the kernel is written in Python, so the tiles are emitted here.


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

    return pure.make_tile(mr, vectors, accumulate) if config.DISABLE_JIT else tile


tile1, tile2, tile3, tile4, tile5, tile6 = (_make_tile(mr) for mr in (1, 2, 3, 4, 5, 6))
row_tile = _make_tile(1, ROW_TILE_VECTORS)
tile1_store = _make_tile(1, accumulate=False)
row_tile_store = _make_tile(1, ROW_TILE_VECTORS, accumulate=False)


# --------------------------------------------------------------------------- memory hints and streaming stores


def _make_prefetch(for_write):
    """An intrinsic ``prefetch(a, offset)``: hint the cache to load ``a.flat[offset]`` (never faults)."""
    @_python_twin(pure.prefetch)
    @intrinsic
    def prefetch(typingctx, a, offset):
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            at = builder.gep(data, [context.cast(builder, args[1], signature.args[1], types.intp)])
            _emit_prefetch(builder, at, for_write)
            return context.get_dummy_value()

        return types.void(a, offset), codegen

    return prefetch


prefetch_write = _make_prefetch(for_write=True)
prefetch_read = _make_prefetch(for_write=False)


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


@_python_twin(pure.lead_to_alignment)
@intrinsic
def lead_to_alignment(typingctx, a):
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


@_python_twin(pure.sfence)
@intrinsic
def sfence(typingctx):
    """Order the non-temporal stores before it (x86; nothing elsewhere)."""
    def codegen(context, builder, signature, args):
        if _X86:
            fence = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                   "llvm.x86.sse.sfence")
            builder.call(fence, [])
        return context.get_dummy_value()

    return types.void(), codegen


@_python_twin(pure.stream_store)
@intrinsic
def stream_store(typingctx, dst, at, src, start, n_vectors):
    """``dst.flat[at:][:m] = src.flat[start:][:m]``, ``m = n_vectors * lanes``, by non-temporal stores.

    The stores bypass the cache (no read for ownership: a W-sized result is
    written once, not read and written); the caller fences them (``sfence``).
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


# --------------------------------------------------------------------------- dot-product tiles (``tuning.DOT_ROWS``)


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

    return pure.make_dot_tile(mr, nr) if config.DISABLE_JIT else dots


_dots = {(mr, nr): _make_dot_tile(mr, nr) for mr in range(1, DOT_ROWS + 1) for nr in range(1, DOT_COLS + 1)}
dots11, dots21, dots31, dots41 = _dots[1, 1], _dots[2, 1], _dots[3, 1], _dots[4, 1]
dots12, dots22, dots32, dots42 = _dots[1, 2], _dots[2, 2], _dots[3, 2], _dots[4, 2]
dots13, dots23, dots33, dots43 = _dots[1, 3], _dots[2, 3], _dots[3, 3], _dots[4, 3]
