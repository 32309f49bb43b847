"""CPU kernels that join the two levels of the hierarchical softmax, and its log-loss.

``p_class`` is ``(batch, n_classes)``, the class probabilities; ``p_slot`` holds the
within-class probabilities: ``(batch, n_classes, K)`` in full mode, ``(batch, K)``
(the target's class only) in target mode. The loss kernels (``nll_*``) take the
activations (softmax inputs) ``a_class`` and ``a_slot`` of the same shapes, target
mode, instead. Each batch row is owned by one parallel iteration, so writes never
collide.
"""

import numpy as np
from numba import njit, prange

from .blocksparse import FASTMATH


@njit(parallel=True, cache=True)
def full_forward(p_class, p_slot, out):
    """In place: ``out[n, c * K + k] = p_class[n, c] * p_slot[n, c, k]`` for the first ``out.shape[1]`` columns."""
    batch, n_outputs = out.shape
    n_classes, K = p_slot.shape[1], p_slot.shape[2]
    for n in prange(batch):
        for c in range(n_classes):
            for k in range(min(K, n_outputs - c * K)):
                out[n, c * K + k] = p_class[n, c] * p_slot[n, c, k]


@njit(parallel=True, cache=True)
def target_forward(p_class, p_slot, classes, slots, out):
    """In place: ``out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]``."""
    for n in prange(out.shape[0]):
        out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def full_backward(g, p_class, p_slot, d_class, d_slot):
    """In place: the softmax-input gradients of both levels, full mode.

    ``g`` is ``(batch, n_outputs)``; columns past ``n_outputs`` (Theano's
    truncation) get zero gradient. Writes ``d_class`` ``(batch, n_classes)`` and
    ``d_slot`` ``(batch, n_classes, K)``.
    """
    batch, n_outputs = g.shape
    n_classes, K = p_slot.shape[1], p_slot.shape[2]
    for n in prange(batch):
        class_dot = 0.0
        for c in range(n_classes):
            width = max(0, min(K, n_outputs - c * K))
            # d out / d p_class[c] = sum_k g * p_slot;  d out / d p_slot[c, k] = g * p_class[c]
            g_class = 0.0
            for k in range(width):
                g_class += g[n, c * K + k] * p_slot[n, c, k]
            d_class[n, c] = g_class  # raw upstream gradient, turned into softmax grad below
            class_dot += g_class * p_class[n, c]
            slot_dot = g_class * p_class[n, c]  # sum_k (g * p_class) * p_slot
            for k in range(K):
                upstream = g[n, c * K + k] * p_class[n, c] if k < width else 0.0
                d_slot[n, c, k] = p_slot[n, c, k] * (upstream - slot_dot)
        for c in range(n_classes):
            d_class[n, c] = p_class[n, c] * (d_class[n, c] - class_dot)


@njit(parallel=True, cache=True)
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


@njit(cache=True, fastmath=FASTMATH)
def _max_and_sum_exp(row):
    """``(m, sum(exp(row - m)))`` with ``m = max(row)``: no exp overflows, the sum is in [1, n]."""
    peak = -np.inf
    for k in range(row.shape[0]):
        peak = max(peak, row[k])
    total = 0.0
    for k in range(row.shape[0]):
        total += np.exp(row[k] - peak)
    return peak, total


@njit(cache=True, fastmath=FASTMATH)
def _neg_log_softmax(row, t):
    """``logsumexp(row) - row[t]``, as ``(m - row[t]) + log(sum(exp(row - m)))``.

    ``m - row[t]`` first: two nearby large activations cancel exactly, where
    ``(m + log(sum)) - row[t]`` would round ``m + log(sum)`` to the activations' scale.
    """
    peak, total = _max_and_sum_exp(row)
    return (peak - row[t]) + np.log(total)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def nll_forward(a_class, a_slot, classes, slots, out):
    """In place: ``out[n] = -log_softmax(a_class[n])[classes[n]] - log_softmax(a_slot[n])[slots[n]]``.

    ``a_class`` ``(batch, n_classes)`` and ``a_slot`` ``(batch, K)`` are the
    activations (softmax inputs) of the two levels, the target's class only for
    the second. Each level is ``logsumexp(a) - a[t]``: no probability is formed,
    so a target probability below the float range still gives a finite loss.
    """
    for n in prange(out.shape[0]):
        out[n] = _neg_log_softmax(a_class[n], classes[n]) + _neg_log_softmax(a_slot[n], slots[n])


@njit(parallel=True, cache=True, fastmath=FASTMATH)
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


@njit(cache=True)
def split_target(target, K, classes, slots):
    """In place: ``classes = target // K`` and ``slots = target % K`` (targets are non-negative)."""
    for n in range(target.shape[0]):
        classes[n] = target[n] // K
        slots[n] = target[n] % K
