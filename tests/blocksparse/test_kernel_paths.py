"""Each code path of the CPU block-sparse kernels against the oracle, and their determinism.

The kernels choose a path by the number of terms per weight block: a direct
per-row loop when blocks are rarely reused, buckets of rows sub-grouped by block
when they are, a bucketing by output block when ``oWin == 1`` (``grad_h``), and
column then row slices when there are few buckets. The grouped paths run on
register tiles (6 rows x 16 float32 / 8 float64 columns, 16-row slabs of the
weights; for the outer update of a block pair with fewer than 64 terms,
one-row tiles of 64 / 32 columns; 4 x 3 dot products for ``grad_h``) with
scalar remainders. These cases
are sized to land on each path and on every remainder of the tiles.
"""

import numba
import numpy as np
import pytest

import nbsparse as nbs
from nbsparse import _cpu, _reference, _team
from tests.support.assertions import FLOAT_DTYPES, assert_matches
from tests.support.cases import ProductCase

PATH_CASES = [
    # many terms per block, sizes that leave remainders (33 rows: r tail; 40 >= 32: unrolled loops)
    ProductCase("reused_blocks", batch=64, i_blocks=2, o_blocks=3, i_size=33, o_size=40, i_win=3, o_win=2,
                seed=31),
    # the same block twice in a row: one output row twice within a group of 4
    ProductCase("reused_duplicates", batch=48, i_blocks=2, o_blocks=2, i_size=9, o_size=35, i_win=3,
                o_win=3, indices="duplicates", seed=32),
    # oWin == 1: grad_h buckets rows by output block
    ProductCase("owin_1_reused", batch=80, i_blocks=3, o_blocks=4, i_size=17, o_size=33, i_win=2, o_win=1,
                seed=33),
    # a single bucket, cut into row slices (and outer into block-row slices)
    ProductCase("one_bucket", batch=200, i_blocks=1, o_blocks=1, i_size=5, o_size=6, i_win=1, o_win=1,
                seed=34),
    # wide rows, 16/8-column tiles then scalar columns (150 = 9 * 16 + 6 = 18 * 8 + 6);
    # 37 rows = 2 slabs + 5, odd for grad_h; ~90 terms per block pair: the outer
    # update's 6-row tiles
    ProductCase("tile_remainders", batch=90, i_blocks=2, o_blocks=2, i_size=37, o_size=150, i_win=2,
                o_win=2, seed=36),
    # ~40 terms per block pair: the outer update's one-row tiles of 64/32 columns,
    # then 16/8-column tiles, then scalar columns (150 = 2 * 64 + 16 + 6 = 4 * 32 + 2 * 8 + 6)
    ProductCase("row_tile_remainders", batch=40, i_blocks=2, o_blocks=2, i_size=37, o_size=150, i_win=2,
                o_win=2, seed=39),
    # one block pair, 151 terms: 6-row tiles and their 1-5 row remainders, 256-row
    # slabs, row slices of the only bucket
    ProductCase("deep_groups", batch=151, i_blocks=1, o_blocks=1, i_size=20, o_size=70, i_win=1,
                o_win=1, seed=37),
    # blocks rarely reused: the direct per-row loops
    ProductCase("rarely_reused", batch=16, i_blocks=40, o_blocks=50, i_size=8, o_size=8, i_win=4, o_win=4,
                seed=35),
]

# Some y blocks without a single row: with ``clear`` the outer update still zeroes them.
IDLE_CASE = ProductCase("idle_blocks", batch=12, i_blocks=3, o_blocks=9, i_size=21, o_size=140, i_win=2,
                        o_win=1, seed=38)


# Block rows of 3 * 5 * 7 = 105 elements: no multiple of a SIMD vector, so the
# streamed rows of outer_scattered_new start and end off 32-byte boundaries.
ODD_ROWS_CASE = ProductCase("odd_rows", batch=9, i_blocks=11, o_blocks=7, i_size=3, o_size=5, i_win=2,
                            o_win=3, seed=40)



@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", [*PATH_CASES, IDLE_CASE, ODD_ROWS_CASE], ids=str)
def test_every_op_matches_reference(case, dtype):
    a = case.make(dtype)
    assert_matches(nbs.sparse_block_gemv(*a.gemv()), _reference.sparse_block_gemv(*a.gemv()), dtype)
    assert_matches(nbs.sparse_block_dot(*a.dot()), _reference.sparse_block_dot(*a.dot()), dtype)
    assert_matches(nbs.sparse_block_outer(*a.outer(), alpha=0.75),
                   _reference.sparse_block_outer(*a.outer(), alpha=0.75), dtype)
    got, want = nbs.sparse_block_dot_grad(*a.dot_grad()), _reference.sparse_block_dot_grad(*a.dot_grad())
    for name in got._fields:
        assert_matches(getattr(got, name), getattr(want, name), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", [*PATH_CASES, IDLE_CASE], ids=str)
def test_outer_with_clear_ignores_what_the_output_held(case, dtype):
    # The weight gradients are written into recycled memory: with ``clear`` nothing
    # of the old contents (NaN here) may survive, in touched or untouched blocks.
    a = case.make(dtype)
    _, x, y, x_idx, y_idx = a.outer()
    out = np.full(a.W.shape, np.nan, dtype)
    _cpu.outer.outer(out, x, y, x_idx.astype(np.intp), y_idx.astype(np.intp), dtype(0.75), True, *out.shape[:2])
    want = _reference.sparse_block_outer(np.zeros(a.W.shape, dtype), x, y, x_idx, y_idx, alpha=0.75)
    assert_matches(out, want, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", [*PATH_CASES, IDLE_CASE, ODD_ROWS_CASE], ids=str)
def test_outer_scattered_new_ignores_what_the_output_held(case, dtype):
    a = case.make(dtype)
    _, x, y, x_idx, y_idx = a.outer()
    out = np.full(a.W.size + 1, np.nan, dtype)[1:].reshape(a.W.shape)  # one element off the allocation
    _cpu.outer.outer_scattered_new(out, x, y, x_idx.astype(np.intp), y_idx.astype(np.intp), dtype(0.75))
    want = _reference.sparse_block_outer(np.zeros(a.W.shape, dtype), x, y, x_idx, y_idx, alpha=0.75)
    assert_matches(out, want, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scattered_gradient_with_block_rows_too_large_for_the_scratch(dtype):
    # Few terms per block, but a block row o[p] above SCRATCH_BYTES: the memset fallback.
    case = ProductCase("wide_rows", batch=3, i_blocks=3, o_blocks=300, i_size=24, o_size=24, i_win=1,
                       o_win=2, seed=41)
    a = case.make(dtype)
    assert a.W[0].nbytes > _cpu.tuning.SCRATCH_BYTES
    got, want = nbs.sparse_block_dot_grad(*a.dot_grad()), _reference.sparse_block_dot_grad(*a.dot_grad())
    for name in got._fields:
        assert_matches(getattr(got, name), getattr(want, name), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_outer_with_clear_and_no_terms_zeroes_everything(dtype):
    out = np.full((2, 3, 4, 5), np.nan, dtype)
    x, y = np.zeros((0, 1, 4), dtype), np.zeros((0, 2, 5), dtype)
    _cpu.outer.outer(out, x, y, np.zeros((0, 1), np.intp), np.zeros((0, 2), np.intp), dtype(1), True, 2, 3)
    np.testing.assert_array_equal(out, 0)


def _all_results(a):
    grads = nbs.sparse_block_dot_grad(*a.dot_grad())
    return [nbs.sparse_block_dot(*a.dot()), nbs.sparse_block_outer(*a.outer()), *grads]


@pytest.mark.parametrize("case", [*PATH_CASES, IDLE_CASE, ODD_ROWS_CASE], ids=str)
def test_results_are_bitwise_identical_run_to_run_and_for_any_thread_count(case, monkeypatch):
    monkeypatch.setattr(_team, "ADAPTIVE", False)  # every launch on the caller's count, however small
    a = case.make(np.float32)
    first = _all_results(a)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = _all_results(a)
    finally:
        numba.set_num_threads(threads)
    for run in (_all_results(a), single):
        for x, y in zip(first, run):
            np.testing.assert_array_equal(x, y)


def test_the_callers_parallel_chunksize_is_restored():
    a = PATH_CASES[0].make(np.float64)
    old = numba.set_parallel_chunksize(7)
    try:
        nbs.sparse_block_dot_grad(*a.dot_grad())
        assert numba.get_parallel_chunksize() == 7
    finally:
        numba.set_parallel_chunksize(old)
