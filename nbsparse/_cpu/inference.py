"""CPU kernels of inference through the hierarchy: candidate log-probabilities and sampling.

Both take the class activations ``a_class`` ``(batch, n_classes)`` (``x @ W1 + b1``)
and compute the slot activations ``x[n] @ W2[c] + b2[c]`` only of the classes a
row needs. Each batch row is owned by one parallel iteration and allocates its
own scratch, so writes never collide and no result depends on the number of
threads.
"""

import numpy as np
from numba import prange

from .hsoftmax import _max_and_sum_exp
from .jit import cached_jit
from .tuning import FASTMATH

# SplitMix64 (Steele, Lea, Flood 2014): the increment and the two finaliser multipliers.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ROW = np.uint64(0xD1B54A32D192ED03)  # odd: rows 0 .. 2**64 - 1 get distinct streams
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53
_ROW_PER_SEED = int(_ROW) * pow(int(_GOLDEN), -1, 2**64) % 2**64  # _GOLDEN is odd: invertible mod 2**64


def seed_for_rows(seed, first_row):
    """The seed under which row ``n`` draws what row ``first_row + n`` draws under ``seed``.

    Row ``n``'s uniforms hash ``seed * _GOLDEN + n * _ROW + counter`` (mod 2**64),
    so adding ``first_row * _ROW / _GOLDEN`` (mod 2**64) to the seed shifts the
    rows: a batch drawn in chunks, each with its shifted seed, gets the draws of
    the whole batch drawn at once.

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.
    first_row : int
        The index in the whole batch of the chunk's row 0.

    Returns
    -------
    int
        In ``[0, 2**64)``.
    """
    return (seed + first_row * _ROW_PER_SEED) % 2**64


@cached_jit(fastmath=FASTMATH)
def _slot_activations(x_row, W2, b2, c, out):
    """In place: ``out[k] = b2[c, k] + sum_d x_row[d] * W2[c, d, k]`` (``out``'s dtype)."""
    K = out.shape[0]
    for k in range(K):
        out[k] = b2[c, k]
    for d in range(x_row.shape[0]):
        xd = x_row[d]
        for k in range(K):
            out[k] += xd * W2[c, d, k]


@cached_jit(parallel=True, fastmath=FASTMATH)
def logprob(a_class, x, W2, b2, candidates, K, out):
    """In place: ``out[n, j] = log P(candidates[n, j] | x[n])``, in log space.

    ``x`` ``(batch, n_in)``, ``W2`` ``(n_classes, n_in, K)``, ``b2`` ``(n_classes, K)``,
    ``candidates`` ``(batch, m)`` in ``[0, n_outputs)``. Each level is
    ``-((max(a) - a[t]) + log(sum(exp(a - max(a)))))`` as in ``nll_forward``; a
    class's slot activations and their log-sum-exp are computed once per row,
    however many of the row's candidates share it.
    """
    batch, m = candidates.shape
    n_classes = a_class.shape[1]
    for n in prange(batch):
        peak, total = _max_and_sum_exp(a_class[n])
        log_total = np.log(total)
        where = np.full(n_classes, -1, np.intp)  # class -> its row of acts, or -1
        acts = np.empty((min(m, n_classes), K), out.dtype)
        peaks = np.empty(min(m, n_classes), np.float64)  # the types nll_forward's expression has
        log_totals = np.empty(min(m, n_classes), np.float64)
        used = 0
        for j in range(m):
            c = candidates[n, j] // K
            k = candidates[n, j] % K
            u = where[c]
            if u < 0:
                u = used
                used += 1
                where[c] = u
                _slot_activations(x[n], W2, b2, c, acts[u])
                slot_peak, slot_total = _max_and_sum_exp(acts[u])
                peaks[u] = slot_peak
                log_totals[u] = np.log(slot_total)
            out[n, j] = -(((peak - a_class[n, c]) + log_total) + ((peaks[u] - acts[u, k]) + log_totals[u]))


@cached_jit()
def _uniform(seed, row, counter):
    """A float64 in [0, 1) from the top 53 bits of SplitMix64 of ``(seed, row, counter)``."""
    z = seed * _GOLDEN + np.uint64(row) * _ROW + np.uint64(counter) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * _TO_UNIT


@cached_jit()
def _draw(weights, count, u):
    """Inverse CDF: the first ``i < count`` with ``u * sum(weights[:count]) < cumsum(weights)[i]``.

    Non-negative float64 weights; rounding that leaves no such ``i`` gives the
    last ``i`` of positive weight. -1 when no weight is positive (or all are NaN).
    """
    total = 0.0
    last = -1
    for i in range(count):
        total += weights[i]
        if weights[i] > 0.0:
            last = i
    threshold = u * total
    running = 0.0
    for i in range(count):
        running += weights[i]
        if threshold < running:
            return i
    return last


@cached_jit(parallel=True, fastmath=FASTMATH)
def sample(a_class, x, W2, b2, K, n_outputs, seed, out):
    """In place: ``out[n]`` drawn from ``h_softmax(x[n])`` renormalised over ``[0, n_outputs)``.

    A class by inverse CDF over ``exp(a_class[n] - max)``, then a slot over its
    slot softmax (float64 weights). A draw past ``n_outputs`` (the truncated last
    class) is rejected and the class and slot are redrawn from the distribution
    that rejection until acceptance gives: the last class's weight times the
    fraction of its slot mass on valid slots, and then its valid slots only
    (its slot weights are already at hand), so no row loops unboundedly.
    Row ``n``'s draws use uniforms ``(seed, n, 0..3)`` only. A row with no
    positive weight at either level (NaN activations) gets output 0.
    """
    batch, n_classes = a_class.shape
    last_class = (n_outputs - 1) // K
    for n in prange(batch):
        class_w = np.empty(n_classes, np.float64)
        peak, _ = _max_and_sum_exp(a_class[n])
        for c in range(n_classes):
            class_w[c] = np.exp(np.float64(a_class[n, c]) - np.float64(peak))
        acts = np.empty(K, np.float64)
        slot_w = np.empty(K, np.float64)
        c = _draw(class_w, last_class + 1, _uniform(seed, n, 0))
        out[n] = 0
        if c < 0:
            continue
        _slot_activations(x[n], W2, b2, c, acts)
        slot_peak, _ = _max_and_sum_exp(acts)
        for k in range(K):
            slot_w[k] = np.exp(acts[k] - slot_peak)
        k = _draw(slot_w, K, _uniform(seed, n, 1))
        if k < 0:
            continue
        if c * K + k < n_outputs:
            out[n] = c * K + k
            continue
        # Rejected: c is the truncated last class, and slot_w holds its weights.
        valid = n_outputs - c * K
        whole = 0.0
        part = 0.0
        for i in range(K):
            whole += slot_w[i]
            if i < valid:
                part += slot_w[i]
        class_w[c] = class_w[c] * (part / whole) if whole > 0.0 else 0.0
        c2 = _draw(class_w, last_class + 1, _uniform(seed, n, 2))
        if c2 < 0:
            continue
        if c2 != c:
            _slot_activations(x[n], W2, b2, c2, acts)
            slot_peak, _ = _max_and_sum_exp(acts)
            for i in range(K):
                slot_w[i] = np.exp(acts[i] - slot_peak)
            valid = K
        k = _draw(slot_w, valid, _uniform(seed, n, 3))
        if k >= 0:
            out[n] = c2 * K + k
