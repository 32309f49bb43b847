"""CUDA kernels of inference through the hierarchy: candidate log-probabilities and sampling.

The twins of ``nbsparse._cpu.inference``, with its launchers' names and
positional arguments. Both take the class activations ``a_class`` ``(batch,
n_classes)`` and compute the slot activations ``x[n] @ W2[c] + b2[c]`` only of
the classes a row needs. ``logprob`` runs a thread per (row, candidate),
``sample`` a thread per row; each thread alone writes its output element.
"""

import math

import numpy as np
from numba import cuda

from . import launch

# SplitMix64 (Steele, Lea, Flood 2014), as in ``nbsparse._cpu.inference``: the same
# uniforms for (seed, row, counter), so the same draws as the CPU up to the rounding
# of the activations.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ROW = np.uint64(0xD1B54A32D192ED03)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@launch.kernel
def _logprob(a_class, x, W2, b2, candidates, K, out):
    """``out[n, j] = log P(candidates[n, j] | x[n])``; thread ``t`` alone writes ``out.flat[t]``.

    Each level as ``-((max(a) - a[t]) + log(sum(exp(a - max(a)))))``, as on the
    CPU; the slot level in one pass over the class's ``K`` activations (a
    running maximum, the sum rescaled when it rises), so a thread holds no
    array. A thread reads its candidate's class block once: ``n_in * K``
    multiply-adds, plus ``n_classes`` exponentials for the class level.
    """
    m = candidates.shape[1]
    n_classes, n_in = a_class.shape[1], x.shape[1]
    zero, one = out.dtype.type(0), out.dtype.type(1)
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, j = t // m, t % m
        c = candidates[n, j] // K
        slot = candidates[n, j] - c * K
        peak = a_class[n, 0]
        for i in range(n_classes):
            peak = max(peak, a_class[n, i])
        total = zero
        for i in range(n_classes):
            total += math.exp(a_class[n, i] - peak)
        slot_peak = out.dtype.type(-math.inf)
        slot_total = zero
        target = zero
        for s in range(K):
            act = b2[c, s]
            for d in range(n_in):
                act += x[n, d] * W2[c, d, s]
            if s == slot:
                target = act
            if act > slot_peak:
                slot_total = slot_total * math.exp(slot_peak - act) + one
                slot_peak = act
            else:
                slot_total += math.exp(act - slot_peak)
        out[n, j] = -(((peak - a_class[n, c]) + math.log(total))
                      + ((slot_peak - target) + math.log(slot_total)))


def logprob(a_class, x, W2, b2, candidates, K, out, *, stream=0):
    """Same contract as ``_cpu.inference.logprob``; all arrays are device arrays."""
    if out.size:
        _logprob[launch.blocks_for(out.size), launch.threads(), stream](a_class, x, W2, b2, candidates, K, out)


@launch.device
def _splitmix_uniform(seed, row, counter):
    """A float64 in [0, 1) from the top 53 bits of SplitMix64 of ``(seed, row, counter)``."""
    z = seed * _GOLDEN + np.uint64(row) * _ROW + np.uint64(counter) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * _TO_UNIT


if launch.SIM:
    # The simulator runs kernels as Python on NumPy scalars, which warn when uint64
    # arithmetic wraps around; on a GPU, as on the CPU, wrapping is the intent.
    def _uniform(seed, row, counter):
        with np.errstate(over="ignore"):
            return _splitmix_uniform(seed, row, counter)
else:
    _uniform = _splitmix_uniform


@launch.device
def _row_peak(values, n, count):
    """``max(values[n, :count])`` as a float64, ``-inf`` for none."""
    peak = -math.inf
    for i in range(count):
        peak = max(peak, np.float64(values[n, i]))
    return peak


@launch.device
def _weight(values, n, i, peak, replaced, replaced_weight):
    """``exp(values[n, i] - peak)`` in float64, or ``replaced_weight`` for ``i == replaced``."""
    if i == replaced:
        return replaced_weight
    return math.exp(np.float64(values[n, i]) - peak)


@launch.device
def _draw(values, n, peak, count, u, replaced, replaced_weight):
    """Inverse CDF over the weights :func:`_weight` of ``i < count``, as ``_cpu.inference._draw``.

    The first ``i`` with ``u * total < cumsum[i]``; the last of positive weight
    when rounding leaves none; -1 when no weight is positive (or all are NaN).
    The weights are recomputed in the second pass, to the same bits.
    """
    total = 0.0
    last = -1
    for i in range(count):
        w = _weight(values, n, i, peak, replaced, replaced_weight)
        total += w
        if w > 0.0:
            last = i
    threshold = u * total
    running = 0.0
    for i in range(count):
        running += _weight(values, n, i, peak, replaced, replaced_weight)
        if threshold < running:
            return i
    return last


@launch.device
def _slot_activations(x, W2, b2, n, c, acts):
    """``acts[n, k] = b2[c, k] + sum_d x[n, d] * W2[c, d, k]`` in float64, summed in the CPU's order."""
    K = acts.shape[1]
    for k in range(K):
        acts[n, k] = b2[c, k]
    for d in range(x.shape[1]):
        xd = x[n, d]
        for k in range(K):
            acts[n, k] += xd * W2[c, d, k]


@launch.kernel
def _sample(a_class, x, W2, b2, K, n_outputs, seed, out, acts):
    """``out[n]`` drawn as ``_cpu.inference.sample`` draws it; thread ``n`` alone writes ``out[n]`` and ``acts[n]``.

    Float64 throughout, as on the CPU (the probabilities of the inverse CDF);
    the class weights are recomputed from ``a_class`` where the CPU keeps them,
    one class's slot activations live in the row's ``acts[n]`` (scratch). A row
    reads one class block of ``W2``, two after a rejection. The CPU's two
    attempts (uniforms 0, 1, then 2, 3 after a rejection) are one loop here: each
    inlined device function is then typed once per call site, half as often.
    """
    batch, n_classes = a_class.shape
    last_class = (n_outputs - 1) // K
    for n in range(cuda.grid(1), batch, cuda.gridsize(1)):
        out[n] = 0
        peak = _row_peak(a_class, n, n_classes)
        rejected, kept = -1, 0.0  # after a rejection: the truncated class and its accepted weight
        slot_peak = 0.0
        valid = K
        for attempt in range(2):
            c = _draw(a_class, n, peak, last_class + 1, _uniform(seed, n, 2 * attempt), rejected, kept)
            if c < 0:
                break
            if c != rejected:  # else its activations are at hand, and only its valid slots are drawn
                _slot_activations(x, W2, b2, n, c, acts)
                slot_peak = _row_peak(acts, n, K)
                valid = K
            k = _draw(acts, n, slot_peak, valid, _uniform(seed, n, 2 * attempt + 1), -1, 0.0)
            if k < 0:
                break
            if c * K + k < n_outputs:  # always after a rejection: c is then another class, or valid < K
                out[n] = c * K + k
                break
            # Rejected: c is the truncated last class; redraw from the accepted distribution.
            valid = n_outputs - c * K
            whole = 0.0
            part = 0.0
            for i in range(K):
                w = math.exp(acts[n, i] - slot_peak)
                whole += w
                if i < valid:
                    part += w
            rejected = c
            kept = math.exp(np.float64(a_class[n, c]) - peak) * (part / whole) if whole > 0.0 else 0.0


def sample(a_class, x, W2, b2, K, n_outputs, seed, out, *, stream=0):
    """Same contract as ``_cpu.inference.sample``; all arrays are device arrays, ``seed`` a ``np.uint64``.

    Allocates the ``(batch, K)`` float64 slot activations on ``stream``.
    """
    batch = out.shape[0]
    if batch == 0:
        return
    acts = cuda.device_array((batch, K), dtype=np.float64, stream=stream)
    _sample[launch.blocks_for(batch), launch.threads(), stream](a_class, x, W2, b2, K, n_outputs, seed, out, acts)
