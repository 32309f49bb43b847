"""The CPU kernel of ``h_softmax_topk``: each row's k likeliest outputs, reading only the classes that can hold one."""

import numpy as np
from numba import prange

from . import products
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
    """True when output ``a`` ranks before ``b``: more likely, or as likely with a lower index.

    A NaN log-probability ranks after every number (as NumPy's sorts place NaN);
    NaNs among themselves by index.
    """
    if lp_a != lp_a or lp_b != lp_b:
        return lp_b != lp_b and (lp_a == lp_a or idx_a < idx_b)
    return lp_a > lp_b or (lp_a == lp_b and idx_a < idx_b)


def topk(a_class, x, W2, b2, n_outputs, indices, log_probs, classes_read):
    """For each row ``n``: ``indices[n]``, ``log_probs[n]`` the ``k = indices.shape[1]`` most likely outputs.

    ``a_class`` ``(batch, n_classes)`` holds the class logits ``x @ W1 + b1``;
    ``classes_read[n]`` gets the number of class blocks of ``W2`` read for row
    ``n``. Since ``log P(c, s) = log P(c) + log P(s | c) <= log P(c)`` (the slot
    term is ``<= 0`` exactly, see :func:`_log_softmax_into`), a class less
    likely than a row's k-th output so far cannot hold one of its top ``k``.
    Two batched passes, each one block-sparse product over (row, class) pairs
    (``products.gemv``: the pairs are bucketed by class, so a class block is read
    once per pass for all the rows that need it, as a dense layer reads it):

    1. each row's likeliest classes, in decreasing probability, until they hold
       ``k`` outputs (one class when ``K >= k``): the row's k-th output so far
       is a lower bound ``t`` of its final k-th output;
    2. every further class of the row at least as likely as ``t``.

    A row's work is at most every class (a flat class distribution) and at
    least ``ceil(k / K)``; on a trained model's peaked distribution, a few.
    NaN log-probabilities rank after every number, ties by index, as in the
    reference's sort; a row whose k-th so far is NaN reads every class.
    """
    batch, n_classes = a_class.shape
    K = W2.shape[2]
    k = indices.shape[1]
    lp_class = np.empty_like(a_class)
    _log_softmax_rows(a_class, lp_class)
    order = np.argsort(-lp_class, axis=1, kind="stable")  # ties by increasing class
    widths = np.minimum(K, n_outputs - np.arange(n_classes) * K)  # <= 0: a class wholly past n_outputs
    held = np.maximum(widths, 0)[order]  # outputs each ranked class holds
    ranked_lp = np.take_along_axis(lp_class, order, axis=1)
    first = np.minimum((np.cumsum(held, axis=1) < k).sum(axis=1) + 1, n_classes)  # pass 1: ranks [0, first)
    top_lp = np.full((batch, k), -np.inf, a_class.dtype)
    top_idx = np.full((batch, k), n_outputs, np.intp)
    count = np.zeros(batch, np.intp)
    rank = np.arange(n_classes)
    in_pass1 = (rank < first[:, None]) & (held > 0)
    _visit(in_pass1, order, x, W2, b2, lp_class, n_outputs, top_lp, top_idx, count)
    bound = top_lp[:, k - 1]
    # "Not less likely than the bound": with a NaN bound (NaN outputs rank last) every class is read.
    in_pass2 = (rank >= first[:, None]) & (held > 0) & ~(ranked_lp < bound[:, None])
    _visit(in_pass2, order, x, W2, b2, lp_class, n_outputs, top_lp, top_idx, count)
    indices[...] = top_idx
    log_probs[...] = top_lp
    classes_read[...] = in_pass1.sum(axis=1) + in_pass2.sum(axis=1)


def _visit(ranks, order, x, W2, b2, lp_class, n_outputs, top_lp, top_idx, count):
    """Merge the outputs of the ranked classes ``ranks`` (a ``(batch, n_classes)`` mask) into each row's top k."""
    rows, at = np.nonzero(ranks)  # row-major: each row's pairs together, in rank order
    if rows.size == 0:
        return
    classes = np.ascontiguousarray(order[rows, at]).reshape(-1, 1)
    n_pairs, (n_classes, n_in, K) = rows.size, W2.shape
    h = np.ascontiguousarray(x[rows]).reshape(n_pairs, 1, n_in)
    slots = np.empty((n_pairs, 1, K), x.dtype)
    products.set_bias(slots, b2, classes)
    products.gemv(slots, W2.reshape(1, n_classes, n_in, K), h, np.zeros((n_pairs, 1), np.intp), classes)
    starts = np.searchsorted(rows, np.arange(lp_class.shape[0] + 1))
    _merge(starts, classes.reshape(-1), slots.reshape(n_pairs, K), lp_class, n_outputs, top_lp, top_idx, count)


@cached_jit(parallel=True, fastmath=FASTMATH)
def _log_softmax_rows(a, out):
    """``out[n] = log_softmax(a[n])`` for every row (see :func:`_log_softmax_into`)."""
    for n in prange(a.shape[0]):
        _log_softmax_into(a[n], out[n])


@cached_jit(parallel=True, fastmath=FASTMATH)
def _merge(starts, classes, slots, lp_class, n_outputs, top_lp, top_idx, count):
    """Row ``n``'s pairs ``starts[n]:starts[n + 1]``: class ``classes[p]`` with slot logits ``slots[p]``.

    Each pair's outputs below ``n_outputs`` (``log P(c) + log_softmax(slots[p])``)
    are sorted and merged into the row's sorted top list (``count[n]`` entries
    so far, at most ``k``). One iteration writes row ``n`` only.
    """
    batch, k = top_lp.shape
    K = slots.shape[1]
    for n in prange(batch):
        lp_slot = np.empty(K, slots.dtype)
        new_lp = np.empty(k, top_lp.dtype)
        new_idx = np.empty(k, np.intp)
        for p in range(starts[n], starts[n + 1]):
            c = classes[p]
            width = min(K, n_outputs - c * K)
            _log_softmax_into(slots[p], lp_slot)
            held = count[n]
            # Only the outputs that beat the row's k-th so far can enter: sort those alone.
            cand = np.empty(width, top_lp.dtype)
            cand_idx = np.empty(width, np.intp)
            kept = 0
            for s in range(width):
                lp = lp_class[n, c] + lp_slot[s]
                if held < k or _before(lp, c * K + s, top_lp[n, k - 1], top_idx[n, k - 1]):
                    cand[kept], cand_idx[kept] = lp, c * K + s
                    kept += 1
            if kept == 0:
                continue
            cand_order = np.argsort(-cand[:kept], kind="mergesort")  # ties by increasing output index
            a = 0
            b = 0
            m = 0
            while m < k and (a < held or b < kept):
                if b >= kept or (a < held and _before(top_lp[n, a], top_idx[n, a], cand[cand_order[b]],
                                                      cand_idx[cand_order[b]])):
                    new_lp[m], new_idx[m] = top_lp[n, a], top_idx[n, a]
                    a += 1
                else:
                    new_lp[m], new_idx[m] = cand[cand_order[b]], cand_idx[cand_order[b]]
                    b += 1
                m += 1
            count[n] = m
            for j in range(m):
                top_lp[n, j], top_idx[n, j] = new_lp[j], new_idx[j]
