"""The CUDA kernel of ``h_softmax_topk``: a thread block per row, visiting the row's classes in decreasing probability.

Same contract as ``nbsparse._cpu.topk.topk``, by another schedule: the CPU batches
its (row, class) pairs into two block-sparse passes; here each row's block
visits one class at a time, the likeliest not yet visited, and stops at the
first class less likely than the row's k-th output so far (``log P(c, s) =
log P(c) + log P(s | c) <= log P(c)``, the slot term ``<= 0`` exactly). Every
row's state lives in global scratch arrays that the launcher allocates, so no
thread holds an array and ``k`` may be as large as ``n_outputs``.
"""

import functools
import math

from numba import cuda, types

from . import launch
from .reductions import block_argmax, block_max, block_sum, ranks_before


@launch.device
def _enters(lp, index, held, log_probs, indices, n):
    """True when output ``index`` of log-probability ``lp`` belongs in row ``n``'s top list of ``held`` entries."""
    k = indices.shape[1]
    return held < k or ranks_before(lp, index, log_probs[n, k - 1], indices[n, k - 1])


@launch.device
def _beyond(lp_class, kth):
    """True when no output of a class of log-probability ``lp_class`` can rank before a k-th output of
    log-probability ``kth`` (its outputs are ``<= lp_class``, or NaN, which ranks last)."""
    return not math.isnan(kth) and not lp_class >= kth


@launch.device
def _rank_in_list(lp, index, list_lp, list_idx, n, length):
    """How many of the sorted ``list_lp[n, :length]``, ``list_idx[n, :length]`` rank before ``(lp, index)``."""
    lo = 0
    hi = length
    while lo < hi:
        mid = (lo + hi) // 2
        if ranks_before(list_lp[n, mid], list_idx[n, mid], lp, index):
            lo = mid + 1
        else:
            hi = mid
    return lo


@launch.device
def _log_softmax_row(src, dst, n, count, partial_peak, buf, tid, threads):
    """``dst[n, i] = (src[n, i] - max) - log(sum(exp(src[n] - max)))`` over ``i < count``: every value ``<= 0``.

    ``partial_peak`` is the calling thread's maximum over its entries ``i = tid,
    tid + threads, ...`` (the only ones it reads and writes, so ``dst`` may be
    ``src``). Every thread of the block calls it (it holds barriers).
    """
    peak = block_max(buf, tid, threads, partial_peak)
    total = src.dtype.type(0)
    for i in range(tid, count, threads):
        total += math.exp(src[n, i] - peak)
    shift = math.log(block_sum(buf, tid, threads, total))
    for i in range(tid, count, threads):
        dst[n, i] = (src[n, i] - peak) - shift


@functools.cache
def _topk_kernel(threads):
    """The top-k kernel for blocks of ``threads`` (a power of two)."""

    @launch.kernel
    def topk(a_class, x, W2, b2, n_outputs, indices, log_probs, classes_read,
             lp_class, slot_lp, cand_lp, cand_idx, spare_lp, spare_idx):
        """Each row's ``k`` likeliest outputs into ``indices``, ``log_probs``; a block per row.

        Row ``n``'s block (grid-stride over rows: the row loop and every branch
        around a barrier are block-uniform, since they test reduced values):

        1. ``lp_class[n] = log_softmax(a_class[n])``; thread ``tid`` alone writes
           the classes ``c = tid, tid + threads, ...``, and reads only those later.
        2. Repeatedly the class that ranks first (most likely, then lowest index;
           NaN last, as NumPy sorts, so NaN rows give the reference's order)
           after the last one visited, among those with an output below
           ``n_outputs``, by a block arg-max: stop when none is left or the row
           holds ``k`` outputs and the class is less likely than the k-th.
        3. Its slot log-softmax into ``slot_lp[n]`` (thread ``tid`` alone computes
           slots ``tid, tid + threads, ...``: coalesced reads of ``W2[c, d]``).
        4. Its outputs that beat the k-th so far, each placed by its rank among
           them (a count over the class) into ``cand_lp[n]``, ``cand_idx[n]``.
        5. The two sorted lists merged into ``spare_*[n]``: an entry's place is its
           own position plus its rank in the other list (a binary search), and
           the order is strict (indices differ), so each place has one writer;
           then copied back to ``log_probs[n]``, ``indices[n]``. Barriers separate
           the phases that write what another thread reads.

        A row's work is one class log-softmax, plus per visited class ``n_in * K``
        multiply-adds, ``width * entered`` comparisons (``entered``: the outputs
        that beat the k-th) and ``(held + entered) * log k`` for the merge, over
        the block's threads. The visited classes are at most those at least as
        likely as the row's final k-th output, and the ones visited before the
        list held ``k`` outputs: on a trained model's peaked class
        distribution, a few; on a flat one, every class.
        """
        buf_v = cuda.shared.array(threads, dtype=a_class.dtype)
        buf_i = cuda.shared.array(threads, dtype=types.int64)
        tid = cuda.threadIdx.x
        batch, n_classes = a_class.shape
        n_in, K = W2.shape[1], W2.shape[2]
        k = indices.shape[1]
        cap = cand_lp.shape[1]  # min(K, k): an output of in-class rank >= k cannot enter
        inf = a_class.dtype.type(math.inf)
        nan = a_class.dtype.type(math.nan)
        for n in range(cuda.blockIdx.x, batch, cuda.gridDim.x):
            # 1. The class log-softmax.
            peak = a_class[n, 0]  # a member of the row: the identity for threads with no class
            for c in range(tid, n_classes, threads):
                peak = max(peak, a_class[n, c])
            _log_softmax_row(a_class, lp_class, n, n_classes, peak, buf_v, tid, threads)

            held = 0
            visits = 0
            last_lp, last_c = inf, -1  # ranks before every class
            while True:
                # 2. The next class.
                best_lp, best_c = nan, n_classes  # ranks after every class
                for c in range(tid, n_classes, threads):
                    lp = lp_class[n, c]
                    if (c * K < n_outputs and ranks_before(last_lp, last_c, lp, c)
                            and ranks_before(lp, c, best_lp, best_c)):
                        best_lp, best_c = lp, c
                best_lp, best_c = block_argmax(buf_v, buf_i, tid, threads, best_lp, best_c)
                if best_c == n_classes or (held == k and _beyond(best_lp, log_probs[n, k - 1])):
                    break
                c = best_c
                last_lp, last_c = best_lp, best_c
                visits += 1

                # 3. Its slot activations and their log-softmax (over all K slots, as h_softmax).
                slot_peak = -inf
                for s in range(tid, K, threads):
                    act = b2[c, s]
                    for d in range(n_in):
                        act += x[n, d] * W2[c, d, s]
                    slot_lp[n, s] = act
                    slot_peak = max(slot_peak, act)
                _log_softmax_row(slot_lp, slot_lp, n, K, slot_peak, buf_v, tid, threads)
                cuda.syncthreads()  # 4 reads every slot

                # 4. The class's outputs that enter the list, sorted by their rank among them.
                width = min(K, n_outputs - c * K)
                entering = 0
                for s in range(tid, width, threads):
                    lp = best_lp + slot_lp[n, s]
                    if _enters(lp, c * K + s, held, log_probs, indices, n):
                        entering += 1
                        rank = 0
                        for r in range(width):
                            lp_r = best_lp + slot_lp[n, r]
                            if (ranks_before(lp_r, c * K + r, lp, c * K + s)
                                    and _enters(lp_r, c * K + r, held, log_probs, indices, n)):
                                rank += 1
                        if rank < cap:
                            cand_lp[n, rank] = lp
                            cand_idx[n, rank] = c * K + s
                entered = min(cap, block_sum(buf_i, tid, threads, entering))  # its barriers publish 4

                # 5. Merge the two sorted lists; keep the first k.
                for i in range(tid, held, threads):
                    place = i + _rank_in_list(log_probs[n, i], indices[n, i], cand_lp, cand_idx, n, entered)
                    if place < k:
                        spare_lp[n, place] = log_probs[n, i]
                        spare_idx[n, place] = indices[n, i]
                for j in range(tid, entered, threads):
                    place = j + _rank_in_list(cand_lp[n, j], cand_idx[n, j], log_probs, indices, n, held)
                    if place < k:
                        spare_lp[n, place] = cand_lp[n, j]
                        spare_idx[n, place] = cand_idx[n, j]
                cuda.syncthreads()
                held = min(k, held + entered)
                for i in range(tid, held, threads):
                    log_probs[n, i] = spare_lp[n, i]
                    indices[n, i] = spare_idx[n, i]
                cuda.syncthreads()
            if tid == 0:
                classes_read[n] = visits

    return topk


def topk(a_class, x, W2, b2, n_outputs, indices, log_probs, classes_read, *, stream=0):
    """Same contract as ``_cpu.topk.topk``; all arrays are device arrays.

    Allocates the kernel's scratch on ``stream``: per row the class
    log-probabilities, one class's slot log-probabilities, its entering outputs
    (at most ``min(K, k)``) and a second top list (``k``).
    """
    batch, n_classes = a_class.shape
    if batch == 0:
        return
    K = W2.shape[2]
    k = indices.shape[1]
    dtype = a_class.dtype

    def scratch(width, of=dtype):
        return cuda.device_array((batch, width), dtype=of, stream=stream)

    cap = min(K, k)
    threads = launch.reduction_threads(max(n_classes, K, k))
    _topk_kernel(threads)[launch.blocks_for(batch, per_block=1), threads, stream](
        a_class, x, W2, b2, n_outputs, indices, log_probs, classes_read,
        scratch(n_classes), scratch(K), scratch(cap), scratch(cap, indices.dtype),
        scratch(k), scratch(k, indices.dtype))
