"""CUDA kernels that join the two levels of the hierarchical softmax.

``p_class`` is ``(batch, n_classes)``; ``p_slot`` is ``(batch, n_classes, K)`` in
full mode and ``(batch, K)`` (the target's class only) in target mode, as in
``nbsparse._cpu.hsoftmax``, whose arithmetic these kernels repeat. The forward
kernels and ``target_backward`` are element-wise (one thread per output element);
``full_backward`` needs a per-row sum over classes and uses a block per row, as do
the loss kernels ``nll_forward``/``nll_backward``, which reduce the activations of
both levels (log-sum-exp) side by side.
"""

import functools
import math

from numba import cuda

from . import launch
from .reductions import block_max2, block_sum, block_sum2


@launch.kernel
def _full_forward(p_class, p_slot, out):
    """``out[n, c * K + k] = p_class[n, c] * p_slot[n, c, k]``; one writer per ``out[n, m]``."""
    n_outputs, K = out.shape[1], p_slot.shape[2]
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, m = t // n_outputs, t % n_outputs
        c = m // K
        out[n, m] = p_class[n, c] * p_slot[n, c, m - c * K]


@launch.kernel
def _target_forward(p_class, p_slot, classes, slots, out):
    """``out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]``; one writer per ``out[n]``."""
    for n in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]


@functools.cache
def _full_backward(threads):
    """The full-mode backward kernel for blocks of ``threads`` (a power of two)."""

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_ROWS)
    def full_backward(g, p_class, p_slot, d_class, d_slot):
        """Softmax-input gradients of both levels, full mode; a block per batch row.

        Columns ``c * K + k >= n_outputs`` (Theano's truncation) get zero upstream
        gradient. Per row ``n``: (1) thread ``tid`` owns classes ``c = tid, tid +
        threads, ...``, alone writes the raw class gradient ``sum_k g * p_slot`` to
        ``d_class[n, c]`` and adds its share of ``class_dot``; (2) a block sum
        gives ``class_dot``, and its barriers publish (1)'s writes; (3)
        thread ``tid`` alone writes ``d_slot[n].flat[m]`` for ``m = tid, tid +
        threads, ...`` (coalesced), reading the raw class gradients; (4) after a
        barrier, class owners overwrite ``d_class[n, c]`` with the final value.
        """
        buf = cuda.shared.array(threads, dtype=p_class.dtype)
        tid = cuda.threadIdx.x
        batch, n_outputs = g.shape
        n_classes, K = p_slot.shape[1], p_slot.shape[2]
        zero = p_class.dtype.type(0)
        for n in range(cuda.blockIdx.x, batch, cuda.gridDim.x):  # block-uniform
            class_dot = zero
            for c in range(tid, n_classes, threads):
                width = max(0, min(K, n_outputs - c * K))
                g_class = zero
                for k in range(width):
                    g_class += g[n, c * K + k] * p_slot[n, c, k]
                for k in range(width, K):  # truncated: 0 * NaN is NaN, as in the reference
                    g_class += zero * p_slot[n, c, k]
                d_class[n, c] = g_class
                class_dot += g_class * p_class[n, c]
            class_dot = block_sum(buf, tid, threads, class_dot)

            for m in range(tid, n_classes * K, threads):
                c, k = m // K, m % K
                slot_dot = d_class[n, c] * p_class[n, c]  # sum_k (g * p_class) * p_slot
                upstream = g[n, m] * p_class[n, c] if m < n_outputs else zero
                d_slot[n, c, k] = p_slot[n, c, k] * (upstream - slot_dot)
            cuda.syncthreads()  # (3) has read every raw d_class[n, c]

            for c in range(tid, n_classes, threads):
                d_class[n, c] = p_class[n, c] * (d_class[n, c] - class_dot)

    return full_backward


@launch.device
def _target_level(g, p, targets, p_other, targets_other, d, start, stride):
    """``d``, the softmax-input gradient of one level ``p`` in target mode; the grid-stride loop of one thread.

    ``p_other``/``targets_other`` are the other level's: ``g[n] *
    p_other[n, targets_other[n]]`` is the upstream gradient of ``p[n, targets[n]]``.
    """
    width = p.shape[1]
    zero = p.dtype.type(0)
    for t in range(start, d.size, stride):
        n, c = t // width, t % width
        c_t = targets[n]
        g_target = g[n] * p_other[n, targets_other[n]]
        own = g_target if c == c_t else zero
        d[n, c] = p[n, c] * (own - g_target * p[n, c_t])


@launch.kernel
def _target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot):
    """Softmax-input gradients of both levels, target mode; one thread per output element.

    Only ``p_class[n, classes[n]]`` and ``p_slot[n, slots[n]]`` reach the output, so
    each upstream gradient has one non-zero entry per row. The grid covers
    ``d_class`` and then ``d_slot``; thread ``t`` alone writes each element it visits.
    """
    start, stride = cuda.grid(1), cuda.gridsize(1)
    _target_level(g, p_class, classes, p_slot, slots, d_class, start, stride)
    _target_level(g, p_slot, slots, p_class, classes, d_slot, start, stride)


@launch.kernel
def _split_target(target, K, classes, slots):
    """``classes = target // K``, ``slots = target % K``; thread ``n`` alone writes row ``n``."""
    for n in range(cuda.grid(1), target.shape[0], cuda.gridsize(1)):
        classes[n] = target[n] // K
        slots[n] = target[n] % K


def split_target(target, K, classes, slots, *, stream=0):
    """Same contract as ``_cpu.hsoftmax.split_target``; all arrays are device arrays."""
    if target.shape[0]:
        _split_target[launch.blocks_for(target.shape[0]), launch.threads(), stream](
            target, K, classes, slots
        )


def full_forward(p_class, p_slot, out, *, stream=0):
    """In place: ``out[n, c * K + k] = p_class[n, c] * p_slot[n, c, k]`` for the first ``out.shape[1]`` columns.

    Full mode on the device (the host joins the levels in ``_cpu.hsoftmax.full_dense``
    instead); all arguments are device arrays.
    """
    if out.size == 0:
        return
    _full_forward[launch.blocks_for(out.size), launch.threads(), stream](p_class, p_slot, out)


def target_forward(p_class, p_slot, classes, slots, out, *, stream=0):
    """Same contract as ``_cpu.hsoftmax.target_forward``; all arguments are device arrays."""
    if out.size == 0:
        return
    _target_forward[launch.blocks_for(out.size), launch.threads(), stream](
        p_class, p_slot, classes, slots, out
    )


def full_backward(g, p_class, p_slot, d_class, d_slot, *, stream=0):
    """In place: the softmax-input gradients of both levels, full mode, from ``g`` ``(batch, n_outputs)``.

    Writes ``d_class`` ``(batch, n_classes)`` and ``d_slot`` ``(batch, n_classes, K)``;
    columns past ``n_outputs`` (Theano's truncation) get zero upstream gradient. The
    host computes the same in ``_cpu.hsoftmax.full_dense_backward``; all arguments are
    device arrays.
    """
    if d_class.size == 0:
        return
    threads = launch.reduction_threads(p_slot.shape[1] * p_slot.shape[2])
    _full_backward(threads)[launch.blocks_for(g.shape[0], per_block=1), threads, stream](
        g, p_class, p_slot, d_class, d_slot
    )


def target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot, *, stream=0):
    """Same contract as ``_cpu.hsoftmax.target_backward``; all arguments are device arrays."""
    n = max(d_class.size, d_slot.size)
    if n == 0:
        return
    _target_backward[launch.blocks_for(n), launch.threads(), stream](
        g, p_class, p_slot, classes, slots, d_class, d_slot
    )


@launch.device
def _row_exp_sums(a_class, a_slot, n, buf_c, buf_s, tid, threads):
    """``(max_c, max_s, sum_c, sum_s)`` of row ``n`` of both levels, with ``sum = sum(exp(a - max))``.

    Called by every thread of the block (it holds barriers; see :mod:`.reductions`).
    One tree gives both maxima, a second both sums.
    """
    n_classes, K = a_class.shape[1], a_slot.shape[1]
    peak_c, peak_s = a_class[n, 0], a_slot[n, 0]  # members of the rows: safe identities
    for c in range(tid, n_classes, threads):
        peak_c = max(peak_c, a_class[n, c])
    for k in range(tid, K, threads):
        peak_s = max(peak_s, a_slot[n, k])
    peak_c, peak_s = block_max2(buf_c, buf_s, tid, threads, peak_c, peak_s)

    total_c, total_s = a_class.dtype.type(0), a_class.dtype.type(0)
    for c in range(tid, n_classes, threads):
        total_c += math.exp(a_class[n, c] - peak_c)
    for k in range(tid, K, threads):
        total_s += math.exp(a_slot[n, k] - peak_s)
    total_c, total_s = block_sum2(buf_c, buf_s, tid, threads, total_c, total_s)
    return peak_c, peak_s, total_c, total_s


@functools.cache
def _nll_kernels(threads):
    """``(nll_forward, nll_backward)`` kernels for blocks of ``threads`` (a power of two).

    A block per batch row (grid-stride over rows, so the row loop is block-uniform
    and every thread reaches every barrier). The two levels are reduced side by
    side (:func:`_row_exp_sums`): one tree pass gives both maxima, a second both
    sums of ``exp(a - max)``, so a row costs two reductions, not four.
    """

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_ROWS)
    def nll_forward(a_class, a_slot, classes, slots, out):
        """``out[n] = (lse(a_class[n]) - a_class[n, c_t]) + (lse(a_slot[n]) - a_slot[n, k_t])``.

        Each term as ``(max - a[t]) + log(sum(exp(a - max)))``, as on the CPU.

        Thread 0 alone writes ``out[n]``, after both reductions.
        """
        buf_c = cuda.shared.array(threads, dtype=a_class.dtype)
        buf_s = cuda.shared.array(threads, dtype=a_class.dtype)
        tid = cuda.threadIdx.x
        for n in range(cuda.blockIdx.x, out.shape[0], cuda.gridDim.x):
            peak_c, peak_s, total_c, total_s = _row_exp_sums(a_class, a_slot, n, buf_c, buf_s,
                                                             tid, threads)
            if tid == 0:  # max - a[t] first: nearby large activations cancel exactly
                out[n] = ((peak_c - a_class[n, classes[n]]) + math.log(total_c)
                          + ((peak_s - a_slot[n, slots[n]]) + math.log(total_s)))

    @launch.bounded(threads, launch.RESIDENT_BLOCKS_LOSS_BACKWARD)
    def nll_backward(g, a_class, a_slot, classes, slots, d_class, d_slot):
        """``d_class[n] = g[n] * (softmax(a_class[n]) - onehot(c_t))``, and the same for slots.

        Thread ``tid`` alone writes columns ``tid, tid + threads, ...`` of both rows.
        """
        buf_c = cuda.shared.array(threads, dtype=a_class.dtype)
        buf_s = cuda.shared.array(threads, dtype=a_class.dtype)
        tid = cuda.threadIdx.x
        n_classes, K = a_class.shape[1], a_slot.shape[1]
        zero = a_class.dtype.type(0)
        for n in range(cuda.blockIdx.x, g.shape[0], cuda.gridDim.x):
            peak_c, peak_s, total_c, total_s = _row_exp_sums(a_class, a_slot, n, buf_c, buf_s,
                                                             tid, threads)
            scale_c, scale_s = g[n] / total_c, g[n] / total_s
            c_t, k_t = classes[n], slots[n]
            for c in range(tid, n_classes, threads):
                d_class[n, c] = scale_c * math.exp(a_class[n, c] - peak_c) - (
                    g[n] if c == c_t else zero)
            for k in range(tid, K, threads):
                d_slot[n, k] = scale_s * math.exp(a_slot[n, k] - peak_s) - (
                    g[n] if k == k_t else zero)

    return nll_forward, nll_backward


def _nll_launch(which, rows, a_class, a_slot, args, stream):
    threads = launch.reduction_threads(max(a_class.shape[1], a_slot.shape[1]))
    kernel = _nll_kernels(threads)[which]
    kernel[launch.blocks_for(rows, per_block=1), threads, stream](*args)


def nll_forward(a_class, a_slot, classes, slots, out, *, stream=0):
    """Same contract as ``_cpu.hsoftmax.nll_forward``; all arguments are device arrays."""
    if out.size:
        _nll_launch(0, out.shape[0], a_class, a_slot, (a_class, a_slot, classes, slots, out),
                    stream)


def nll_backward(g, a_class, a_slot, classes, slots, d_class, d_slot, *, stream=0):
    """Same contract as ``_cpu.hsoftmax.nll_backward``; all arguments are device arrays."""
    if g.size:
        _nll_launch(1, g.shape[0], a_class, a_slot,
                    (g, a_class, a_slot, classes, slots, d_class, d_slot), stream)
