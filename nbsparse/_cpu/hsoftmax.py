"""CPU kernels that join the two levels of the hierarchical softmax, and its log-loss.

``p_class`` is ``(batch, n_classes)``, the class probabilities; ``p_slot``
``(batch, K)`` holds the within-class probabilities of the target's class
(target mode). The loss kernels (``nll_*``) take the activations (softmax
inputs) ``a_class`` and ``a_slot`` of the same shapes instead. Each batch row is
owned by one parallel iteration, so writes never collide. Full mode (every
class of every row) runs on dense products: ``full_dense`` and
``full_dense_backward`` below.
"""

import numpy as np
from numba import prange, types
from numba.extending import overload

from .jit import cached_jit
from .tuning import FASTMATH


@cached_jit(parallel=True)
def target_forward(p_class, p_slot, classes, slots, out):
    """In place: ``out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]``."""
    for n in prange(out.shape[0]):
        out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]


@cached_jit(parallel=True)
def target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot):
    """In place: the softmax-input gradients of both levels, target mode.

    Only ``p_class[n, classes[n]]`` and ``p_slot[n, slots[n]]`` reach the output,
    so each upstream gradient has one non-zero entry per row.
    """
    batch, n_classes = p_class.shape
    K = p_slot.shape[1]
    for n in prange(batch):
        c_t, k_t = classes[n], slots[n]
        g_class = g[n] * p_slot[n, k_t]  # upstream gradient of p_class[n, c_t]
        g_slot = g[n] * p_class[n, c_t]  # upstream gradient of p_slot[n, k_t]
        for c in range(n_classes):
            d_class[n, c] = p_class[n, c] * ((g_class if c == c_t else 0.0) - g_class * p_class[n, c_t])
        for k in range(K):
            d_slot[n, k] = p_slot[n, k] * ((g_slot if k == k_t else 0.0) - g_slot * p_slot[n, k_t])


@cached_jit(fastmath=FASTMATH)
def _max_and_sum_exp(row):
    """``(m, sum(exp(row - m)))`` with ``m = max(row)``: no exp overflows, the sum is in [1, n]."""
    peak = -np.inf
    for k in range(row.shape[0]):
        peak = max(peak, row[k])
    total = 0.0
    for k in range(row.shape[0]):
        total += np.exp(row[k] - peak)
    return peak, total


@cached_jit(fastmath=FASTMATH)
def _neg_log_softmax(row, t):
    """``logsumexp(row) - row[t]``, as ``(m - row[t]) + log(sum(exp(row - m)))``.

    ``m - row[t]`` first: two nearby large activations cancel exactly, where
    ``(m + log(sum)) - row[t]`` would round ``m + log(sum)`` to the activations' scale.
    """
    peak, total = _max_and_sum_exp(row)
    return (peak - row[t]) + np.log(total)


@cached_jit(parallel=True, fastmath=FASTMATH)
def nll_forward(a_class, a_slot, classes, slots, out):
    """In place: ``out[n] = -log_softmax(a_class[n])[classes[n]] - log_softmax(a_slot[n])[slots[n]]``.

    ``a_class`` ``(batch, n_classes)`` and ``a_slot`` ``(batch, K)`` are the
    activations (softmax inputs) of the two levels, the target's class only for
    the second. Each level is ``logsumexp(a) - a[t]``: no probability is formed,
    so a target probability below the float range still gives a finite loss.
    """
    for n in prange(out.shape[0]):
        out[n] = _neg_log_softmax(a_class[n], classes[n]) + _neg_log_softmax(a_slot[n], slots[n])


@cached_jit(parallel=True, fastmath=FASTMATH)
def nll_backward(g, a_class, a_slot, classes, slots, d_class, d_slot):
    """In place: the activation gradients of ``sum(g * nll)``, both levels.

    ``d_class[n] = g[n] * (softmax(a_class[n]) - onehot(classes[n]))`` and the same
    for ``d_slot`` with ``slots``; shapes as in :func:`nll_forward`.
    """
    for n in prange(g.shape[0]):
        peak, total = _max_and_sum_exp(a_class[n])
        scale = g[n] / total
        for c in range(a_class.shape[1]):
            d_class[n, c] = scale * np.exp(a_class[n, c] - peak)
        d_class[n, classes[n]] -= g[n]
        peak, total = _max_and_sum_exp(a_slot[n])
        scale = g[n] / total
        for k in range(a_slot.shape[1]):
            d_slot[n, k] = scale * np.exp(a_slot[n, k] - peak)
        d_slot[n, slots[n]] -= g[n]


@cached_jit()
def split_target(target, K, classes, slots):
    """In place: ``classes = target // K`` and ``slots = target % K`` (targets are non-negative)."""
    for n in range(target.shape[0]):
        classes[n] = target[n] // K
        slots[n] = target[n] % K


# --------------------------------------------------------------------------- dense full mode
#
# In full mode every class block is used by every row: the two products are
# dense GEMMs, which the public layer leaves to NumPy's BLAS (about 5x the
# hand-written loops here). What follows BLAS is serial on purpose: OpenBLAS
# threads spin after a call, and a parallel region started then waits at its
# closing barrier for a worker that cannot get a core (measured: 10-24 ms
# stalls on a 0.1 ms kernel).

# No "reassoc": it would let LLVM undo the two-part (Cody-Waite) reduction.
_ELEMENTWISE = {"nsz", "arcp", "contract", "afn"}


def _exp_scratch(a):
    """``(int buffer, mantissa bits, exponent bias)`` for building ``2**n`` of ``a``'s float type."""
    # Compiled kernels get the overload below; this body runs when they run as Python (NUMBA_DISABLE_JIT=1).
    if a.dtype == np.float32:
        return np.empty(a.size, np.int32), 23, 127
    return np.empty(a.size, np.int64), 52, 1023


@overload(_exp_scratch)
def _exp_scratch_overload(a):
    if a.dtype == types.float32:
        return lambda a: (np.empty(a.size, np.int32), 23, 127)
    return lambda a: (np.empty(a.size, np.int64), 52, 1023)


@cached_jit(fastmath=_ELEMENTWISE)
def _exp_shifted(x, shift, out, bits, mantissa, bias):
    """``out[k] = exp(x[k] - shift)`` for ``x[k] <= shift``, vectorised.

    Numba's ``np.exp`` is a scalar libm call per element; this is ``2**n * exp(r)``
    with ``n = round(v / ln 2)``, ``r`` from a two-part ``ln 2`` and a degree-13
    Taylor polynomial: max relative error 7e-8 (float32) and 2.2e-16 (float64),
    0.3 and 1.0 ns an element against NumPy's 0.9 and 9.3 ns. Arguments below the
    smallest normal exponent give 0 (no subnormal results; ``exp(-inf)`` is 0, so
    ``0 * inf`` downstream is NaN as in the reference); NaN stays NaN.
    """
    t = x.dtype.type
    log2e, ln2_hi, ln2_lo = t(1.4426950408889634), t(0.693145751953125), t(1.4286068203094173e-06)
    lowest = t((1 - bias) * 0.6931471805599453)
    c2, c3, c4, c5, c6, c7 = t(1 / 2), t(1 / 6), t(1 / 24), t(1 / 120), t(1 / 720), t(1 / 5040)
    c8, c9, c10 = t(1 / 40320), t(1 / 362880), t(1 / 3628800)
    c11, c12, c13 = t(1 / 39916800), t(1 / 479001600), t(1 / 6227020800)
    half, one = t(0.5), t(1)
    for k in range(x.size):
        v = x[k] - shift
        v = lowest if v < lowest else v  # NaN compares false and stays NaN
        n = np.floor(v * log2e + half)
        r = (v - n * ln2_hi) - n * ln2_lo
        p = c13 * r + c12
        p = p * r + c11
        p = p * r + c10
        p = p * r + c9
        p = p * r + c8
        p = p * r + c7
        p = p * r + c6
        p = p * r + c5
        p = p * r + c4
        p = p * r + c3
        p = p * r + c2
        p = p * r + one
        out[k] = p * r + one
        bits[k] = (np.int64(n) + bias) << mantissa
    scale = bits.view(out.dtype)
    zero = t(0)
    for k in range(x.size):
        # Below ``lowest`` the scale is clamped, not the value: 0 there (NaN compares false).
        out[k] = zero if x[k] - shift < lowest else out[k] * scale[k]


@cached_jit(fastmath=FASTMATH)
def _softmax_into(x, shift_row, out, bits, mantissa, bias):
    """``out = softmax(x + shift_row)`` (``x`` is overwritten with ``x + shift_row``)."""
    peak = -np.inf
    for k in range(x.size):
        x[k] += shift_row[k]
        peak = max(peak, x[k])
    _exp_shifted(x, peak, out, bits, mantissa, bias)
    total = out.dtype.type(0)
    for k in range(out.size):
        total += out[k]
    scale = 1 / total
    for k in range(out.size):
        out[k] *= scale


@cached_jit(fastmath=FASTMATH)
def full_dense(a_class, b1, a_slot, b2, out):
    """In place: the full-mode ``h_softmax`` from the two products, one pass.

    ``a_class = x @ W1`` is ``(batch, n_classes)``, ``a_slot = x @ W2`` is
    ``(n_classes, batch, K)`` (as ``np.matmul(x, W2)`` gives it); ``a_class`` and
    ``a_slot`` are overwritten. Writes ``out[n, c * K + k] = softmax(a_class[n] +
    b1)[c] * softmax(a_slot[c, n] + b2[c])[k]`` for the first ``out.shape[1]``
    columns. Serial (see above); rows are independent.
    """
    batch, n_outputs = out.shape
    n_classes, K = b2.shape
    p_class = np.empty(n_classes, out.dtype)
    p_slot = np.empty(K, out.dtype)
    class_bits, mantissa, bias = _exp_scratch(p_class)
    slot_bits, mantissa, bias = _exp_scratch(p_slot)
    for n in range(batch):
        _softmax_into(a_class[n], b1, p_class, class_bits, mantissa, bias)
        for c in range(n_classes):
            width = min(K, n_outputs - c * K)
            if width <= 0:
                break
            _softmax_into(a_slot[c, n], b2[c], p_slot, slot_bits, mantissa, bias)
            scale = p_class[c]
            row = out[n, c * K:c * K + width]
            for k in range(width):
                row[k] = scale * p_slot[k]


@cached_jit(fastmath=FASTMATH)
def full_dense_backward(g, a_class, b1, a_slot, b2, d_class, d_slot):
    """In place: the softmax-input gradients of both levels, full mode, from the products.

    ``a_class``/``a_slot`` as for ``full_dense`` (overwritten); ``g`` is
    ``(batch, n_outputs)``. Writes ``d_class`` ``(batch, n_classes)`` and ``d_slot``
    ``(n_classes, batch, K)`` (the layout of ``a_slot``, so the weight gradients
    are ``np.matmul(x.T, d_slot)``). Serial, as ``full_dense``.
    """
    batch, n_outputs = g.shape
    n_classes, K = b2.shape
    p_class = np.empty(n_classes, g.dtype)
    class_bits, mantissa, bias = _exp_scratch(p_class)
    slot_bits, mantissa, bias = _exp_scratch(np.empty(K, g.dtype))
    zero = g.dtype.type(0)
    for n in range(batch):
        _softmax_into(a_class[n], b1, p_class, class_bits, mantissa, bias)
        class_dot = zero
        for c in range(n_classes):
            p_slot = d_slot[c, n]  # the slot probabilities first, then their gradient
            _softmax_into(a_slot[c, n], b2[c], p_slot, slot_bits, mantissa, bias)
            width = max(0, min(K, n_outputs - c * K))
            upstream = g[n, c * K:c * K + width]
            g_class = zero  # d out / d p_class[c] = sum_k g * p_slot
            for k in range(width):
                g_class += upstream[k] * p_slot[k]
            for k in range(width, K):  # truncated: zero upstream, but 0 * NaN is NaN as in the reference
                g_class += zero * p_slot[k]
            d_class[n, c] = g_class
            class_dot += g_class * p_class[c]
            slot_dot = g_class * p_class[c]  # sum_k (g * p_class) * p_slot
            for k in range(width):
                p_slot[k] = p_slot[k] * (upstream[k] * p_class[c] - slot_dot)
            for k in range(width, K):  # truncated columns: no upstream gradient
                p_slot[k] = -p_slot[k] * slot_dot
        for c in range(n_classes):
            d_class[n, c] = p_class[c] * (d_class[n, c] - class_dot)
