"""Every tuning constant of the CPU kernels, with the measurement that chose it.

The timings are of ``python -m nbsparse.bench`` workloads (``tiny_blocks``,
``big_blocks``, ``hsm_target``, h_softmax's class level) on the 2-core AVX2
machine the kernels were tuned on. The constants that pick a path or a slab
depth set the order of some sums (so a change may move results in the last
bits); every such choice is made per bucket, so no result depends on the
number of threads.
"""

# --------------------------------------------------------------------------- arithmetic

# Every fast-math flag except nnan/ninf: with those, NaN and inf would stop
# propagating (Numba folds ``v != v`` away); "reassoc" lets the reductions vectorise.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# --------------------------------------------------------------------------- scheduling

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

# grad_h's dot-product tiles: DOT_ROWS rows of g against DOT_COLS rows of a weight
# block, mr * nr + nr + 1 = 16 vector registers, 7 loads per 12 fused multiply-adds
# (4 x 2 had 6 per 8), the next DOT_COLS weight rows prefetched: grad_h float64
# hsm_target 12.2 -> 6.8 ms, big_blocks 12.6 -> 5.5 ms; float32 4.6 -> 3.5, 4.5 -> 3.2.
DOT_ROWS = 4
DOT_COLS = 3

# --------------------------------------------------------------------------- the outer update

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

# --------------------------------------------------------------------------- optimizer steps

# Elements per parallel iteration of the dense optimizer kernels (``optim.sgd_dense``,
# ``optim.adam_dense``): 16 / 32 KiB of each array, long enough for the loop to
# vectorise and for the dynamic schedule's per-chunk cost to vanish. Not measured;
# the results do not depend on it (every element is updated on its own).
OPTIM_CHUNK = 4096

# --------------------------------------------------------------------------- team size

# A launch runs on one more thread for each of these items of work it holds
# (``nbsparse._team``), so a second thread joins at twice the entry. The unit is
# the launch's ``items`` in ``nbsparse._host``: multiply-adds for the products
# (``weight_gradient`` adds the elements of the new gradient), elements of the
# arrays read or written for the others, rows for ``target_forward``.
# ``tools/team_thresholds.py`` chose each entry: half the smallest launch at which
# one thread took at least 20 µs and two threads at most 0.8 of that, as they did
# at most larger launches; the smaller over float32/float64 and over 24 x 40 and
# 8 x 8 blocks. Below 20 µs a second thread would save a few microseconds while a
# sleeping worker takes 50-150 µs to wake and a team of two keeps the second core
# spinning for 5 ms after each launch.
MIN_ITEMS_PER_THREAD = {
    "gemv": 32768,
    "grad_h": 16384,
    "outer": 16384,
    "weight_gradient": 84480,
    "weight_gradient_blocks": 84480,  # as weight_gradient: the same kernels on the touched blocks
    "set_bias": 12288,
    "bias_grad": 8288,
    "bias_grad_blocks": 8288,  # items: 2 x the elements of g, as bias_grad's g + db
    "softmax_rows": 1536,
    "softmax_grad_rows": 32000,
    "target_forward": 4096,  # never 20 µs in the sweep (2048 rows: 9 µs): extrapolated
    "target_backward": 14336,
    "nll_forward": 1792,
    "nll_backward": 896,
    # items: slot-level multiply-adds if every class were read. The launch is the whole top-k (its
    # class-level softmax, two batched products and merges, with Python between them): below about
    # 300k items it takes 100-240 µs on one thread, mostly fixed costs that a second thread cannot share.
    "topk": 294912,
    # The optimizer steps, in elements updated: memory-bound elementwise loops like
    # softmax_grad_rows, given its entry (Adam, which reads and writes three arrays and
    # takes a square root and two divisions per element, half of it). Not yet measured
    # with tools/team_thresholds.py.
    "sgd_dense": 32000,
    "sgd_blocks": 32000,
    "adam_dense": 16000,
    "adam_blocks": 16000,
    # Inference through the hierarchy, in slot-level multiply-adds (rows x n_in x K, times the
    # classes a row reads), measured by tools/team_thresholds.py like the entries above (the same
    # value for both dtypes and block shapes).
    "logprob": 30720,
    "sample": 24576,
}
