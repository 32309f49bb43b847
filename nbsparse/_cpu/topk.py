"""The CPU kernel of ``h_softmax_topk``: each row's k likeliest outputs, reading only the classes that can hold one."""

import numpy as np
from numba import prange

from .hsoftmax import _max_and_sum_exp
from .jit import cached_jit
from .tuning import FASTMATH


@cached_jit(fastmath=FASTMATH)
def _log_softmax_into(row, out):
    """``out[:] = log_softmax(row)`` as ``(row - m) - log(sum(exp(row - m)))``: every value ``<= 0`` exactly."""
    peak, total = _max_and_sum_exp(row)
    shift = np.log(total)
    for k in range(row.shape[0]):
        out[k] = (row[k] - peak) - shift


@cached_jit(fastmath=FASTMATH)
def _before(lp_a, idx_a, lp_b, idx_b):
    """True when output ``a`` ranks before ``b``: more likely, or as likely with a lower index."""
    return lp_a > lp_b or (lp_a == lp_b and idx_a < idx_b)


@cached_jit(parallel=True, fastmath=FASTMATH)
def topk(a_class, x, W2, b2, n_outputs, indices, log_probs, classes_read):
    """For each row ``n``: ``indices[n]``, ``log_probs[n]`` the ``k = indices.shape[1]`` most likely outputs.

    ``a_class`` ``(batch, n_classes)`` holds the class logits ``x @ W1 + b1``. A
    row's classes are visited in decreasing class log-probability (ties by
    increasing class); a visited class's slot logits ``x[n] @ W2[c] + b2[c]`` are
    computed, and its outputs below ``n_outputs`` merged into the row's sorted
    top ``k``. Since ``log P(c, s) = log P(c) + log P(s | c) <= log P(c)`` (the
    slot term is ``<= 0`` exactly, see :func:`_log_softmax_into`), the visit
    stops at the first class less likely than the current k-th output: its
    outputs and every later class's cannot enter. A row's work is at most every
    class (a flat class distribution) and at least ``ceil(k / K)`` classes.
    ``classes_read[n]`` counts the class blocks of ``W2`` read. Rows are
    independent: one iteration writes row ``n`` only.
    """
    batch, n_classes = a_class.shape
    n_in, K = W2.shape[1], W2.shape[2]
    k = indices.shape[1]
    for n in prange(batch):
        lp_class = np.empty(n_classes, a_class.dtype)
        _log_softmax_into(a_class[n], lp_class)
        order = np.argsort(-lp_class, kind="mergesort")  # stable: ties by increasing class
        top_lp = np.full(k, -np.inf, a_class.dtype)
        top_idx = np.full(k, n_outputs, np.intp)
        new_lp = np.empty(k, a_class.dtype)
        new_idx = np.empty(k, np.intp)
        slot = np.empty(K, a_class.dtype)
        lp_slot = np.empty(K, a_class.dtype)
        count = 0
        read = 0
        for r in range(n_classes):
            c = order[r]
            width = min(K, n_outputs - c * K)
            if width <= 0:  # a class wholly past n_outputs holds no output
                continue
            if count == k and lp_class[c] < top_lp[k - 1]:
                break
            read += 1
            for s in range(K):
                slot[s] = b2[c, s]
            for i in range(n_in):
                xi = x[n, i]
                for s in range(K):
                    slot[s] += xi * W2[c, i, s]
            _log_softmax_into(slot, lp_slot)
            cand = np.empty(width, a_class.dtype)
            for s in range(width):
                cand[s] = lp_class[c] + lp_slot[s]
            cand_order = np.argsort(-cand, kind="mergesort")  # ties by increasing slot, i.e. output index
            # Merge the sorted top list and the sorted candidates, keeping the first k.
            a = 0
            b = 0
            m = 0
            while m < k and (a < count or b < width):
                if b >= width or (a < count and _before(top_lp[a], top_idx[a], cand[cand_order[b]],
                                                        c * K + cand_order[b])):
                    new_lp[m], new_idx[m] = top_lp[a], top_idx[a]
                    a += 1
                else:
                    new_lp[m], new_idx[m] = cand[cand_order[b]], c * K + cand_order[b]
                    b += 1
                m += 1
            count = m
            for j in range(count):
                top_lp[j], top_idx[j] = new_lp[j], new_idx[j]
        for j in range(k):
            indices[n, j] = top_idx[j]
            log_probs[n, j] = top_lp[j]
        classes_read[n] = read
