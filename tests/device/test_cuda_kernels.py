"""The CUDA launchers against the CPU kernels (the tested oracle), on the same inputs.

Runs under the CUDA simulator by default (tests/conftest.py), with
``launch.THREADS_PER_BLOCK`` shrunk so that tiny inputs still span several
blocks with a ragged last one. Sizes stay small: the simulator runs each CUDA
thread as a Python thread and each barrier costs milliseconds.
"""


import numpy as np
import pytest
from numba import cuda

from nbsparse import _cpu
from nbsparse._cuda import blocksparse, hsoftmax, launch, softmax
from nbsparse._optable import tolerance

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("small_blocks")]  # 8 threads per block

DTYPES = [np.float32, np.float64]


def close(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **tolerance(dtype, "kernels"))


def dev(*arrays):
    return [cuda.to_device(a) for a in arrays]


# (batch, iWin, iSize, oWin, oSize, iBlocks, oBlocks, threads per block)
GEMV_CASES = {
    "flat": (3, 2, 5, 2, 3, 3, 2, 8),  # oSize < threads / 2: one thread per element
    "tiled_ragged": (3, 2, 5, 2, 9, 3, 4, 8),  # 2 k-tiles, the second with 1 of 8 threads busy
    "tiled_two_h_tiles": (2, 2, 40, 2, 33, 2, 3, 32),  # iSize 40 > TILE 32: two staged chunks
}


def product_args(rng, dtype, batch, i_win, i_size, o_win, o_size, i_blocks, o_blocks):
    W = rng.standard_normal((i_blocks, o_blocks, i_size, o_size)).astype(dtype)
    h = rng.standard_normal((batch, i_win, i_size)).astype(dtype)
    input_idx = rng.integers(0, i_blocks, (batch, i_win)).astype(np.intp)
    input_idx[:, -1] = input_idx[:, 0]  # a repeated input block in every row
    output_idx = rng.integers(0, o_blocks, (batch, o_win)).astype(np.intp)
    output_idx[-1] = output_idx[0]  # two rows with the same output blocks
    return W, h, input_idx, output_idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEMV_CASES, ids=str)
def test_gemv_matches_cpu(rng, small_blocks, case, dtype):
    batch, i_win, i_size, o_win, o_size, i_blocks, o_blocks, threads = GEMV_CASES[case]
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", threads)
    W, h, input_idx, output_idx = product_args(rng, dtype, batch, i_win, i_size, o_win, o_size,
                                               i_blocks, o_blocks)
    o = rng.standard_normal((batch, o_win, o_size)).astype(dtype)  # gemv adds into o
    d_o = cuda.to_device(o)
    blocksparse.gemv(d_o, *dev(W, h, input_idx, output_idx))
    _cpu.products.gemv(o, W, h, input_idx, output_idx)
    close(d_o.copy_to_host(), o, dtype)


@pytest.mark.parametrize("o_size", [3, 9], ids=["flat", "tiled"])
def test_gemv_grid_stride_covers_every_element(rng, small_blocks, o_size):
    small_blocks.setattr(launch, "MAX_BLOCKS", 2)  # far fewer blocks than work units
    W, h, input_idx, output_idx = product_args(rng, np.float64, 4, 2, 3, 2, o_size, 2, 3)
    o = np.zeros((4, 2, o_size))
    d_o = cuda.to_device(o)
    blocksparse.gemv(d_o, *dev(W, h, input_idx, output_idx))
    _cpu.products.gemv(o, W, h, input_idx, output_idx)
    close(d_o.copy_to_host(), o, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_set_bias_matches_cpu(rng, dtype):
    bias = rng.standard_normal((4, 9)).astype(dtype)
    output_idx = np.array([[3, 0], [3, 3], [1, 2]], dtype=np.intp)
    o = np.full((3, 2, 9), np.nan, dtype)  # set_bias assigns: no NaN may survive
    d_o = cuda.to_device(o)
    blocksparse.set_bias(d_o, *dev(bias, output_idx))
    _cpu.products.set_bias(o, bias, output_idx)
    np.testing.assert_array_equal(d_o.copy_to_host(), o)


def outer_args(rng, dtype):
    """3 rows of 2 x 2 windows into 2 x 3 blocks of 5 x 9, with many repeated block pairs."""
    x = rng.standard_normal((3, 2, 5)).astype(dtype)
    y = rng.standard_normal((3, 2, 9)).astype(dtype)
    x_idx = np.array([[1, 1], [0, 1], [1, 0]], dtype=np.intp)
    y_idx = np.array([[2, 0], [2, 2], [0, 2]], dtype=np.intp)
    o = rng.standard_normal((2, 3, 5, 9)).astype(dtype)
    return o, x, y, x_idx, y_idx, dtype(0.5)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_matches_cpu(rng, dtype, deterministic):
    o, x, y, x_idx, y_idx, alpha = outer_args(rng, dtype)
    d_o = cuda.to_device(o)
    blocksparse.outer(d_o, *dev(x, y, x_idx, y_idx), alpha, deterministic=deterministic)
    _cpu.outer.outer(o, x, y, x_idx, y_idx, alpha, False, *o.shape[:2])
    close(d_o.copy_to_host(), o, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_deterministic_is_bitwise_reproducible(rng, dtype):
    o, x, y, x_idx, y_idx, alpha = outer_args(rng, dtype)
    args = dev(x, y, x_idx, y_idx)
    results = []
    for _ in range(3):
        d_o = cuda.to_device(o)
        blocksparse.outer(d_o, *args, alpha, deterministic=True)
        results.append(d_o.copy_to_host())
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    d_o = cuda.to_device(o)
    blocksparse.outer(d_o, *args, alpha)
    close(d_o.copy_to_host(), results[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_h_matches_cpu(rng, dtype):
    W, h, input_idx, output_idx = product_args(rng, dtype, 3, 2, 9, 2, 5, 3, 2)
    g = rng.standard_normal((3, 2, 5)).astype(dtype)
    dh = rng.standard_normal(h.shape).astype(dtype)  # grad_h adds into dh
    d_dh = cuda.to_device(dh)
    blocksparse.grad_h(d_dh, *dev(W, g, input_idx, output_idx))
    _cpu.grads.grad_h(dh, W, g, input_idx, output_idx)
    close(d_dh.copy_to_host(), dh, dtype)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_matches_cpu(rng, dtype, deterministic):
    g = rng.standard_normal((4, 3, 9)).astype(dtype)
    output_idx = np.array([[2, 0, 2], [2, 2, 2], [0, 1, 2], [1, 1, 0]], dtype=np.intp)
    db = rng.standard_normal((4, 9)).astype(dtype)  # block 3 is never selected
    d_db = cuda.to_device(db)
    blocksparse.bias_grad(d_db, *dev(g, output_idx), deterministic=deterministic)
    _cpu.grads.bias_grad(db, g, output_idx)
    close(d_db.copy_to_host(), db, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_grad_deterministic_is_bitwise_reproducible(rng, dtype):
    g = rng.standard_normal((5, 2, 9)).astype(dtype)
    output_idx = np.zeros((5, 2), dtype=np.intp)  # every update hits block 0
    args = dev(g, output_idx)
    db = np.zeros((2, 9), dtype)
    results = []
    for _ in range(3):
        d_db = cuda.to_device(db)
        blocksparse.bias_grad(d_db, *args, deterministic=True)
        results.append(d_db.copy_to_host())
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    d_db = cuda.to_device(db)
    blocksparse.bias_grad(d_db, *args)
    close(d_db.copy_to_host(), results[0], dtype)


@pytest.mark.parametrize("o_size", [3, 9], ids=["flat", "tiled"])
def test_empty_batch_launches_nothing(o_size):
    W = np.ones((2, 2, 4, o_size))
    h, g = np.empty((0, 2, 4)), np.empty((0, 1, o_size))
    in_idx, out_idx = np.empty((0, 2), np.intp), np.empty((0, 1), np.intp)
    d_W, d_h, d_g, d_in, d_out = dev(W, h, g, in_idx, out_idx)
    d_o = cuda.to_device(np.empty((0, 1, o_size)))
    blocksparse.gemv(d_o, d_W, d_h, d_in, d_out)
    blocksparse.set_bias(d_o, cuda.to_device(np.ones((2, o_size))), d_out)
    blocksparse.grad_h(cuda.to_device(np.empty((0, 2, 4))), d_W, d_g, d_in, d_out)
    for deterministic in (False, True):
        dW = cuda.to_device(np.ones(W.shape))
        blocksparse.outer(dW, d_h, d_g, d_in, d_out, 1.0, deterministic=deterministic)
        np.testing.assert_array_equal(dW.copy_to_host(), 1.0)
        db = cuda.to_device(np.ones((2, o_size)))
        blocksparse.bias_grad(db, d_g, d_out, deterministic=deterministic)
        np.testing.assert_array_equal(db.copy_to_host(), 1.0)
    softmax.softmax_rows(*dev(np.empty((0, 5)), np.empty((0, 5))))
    softmax.softmax_grad_rows(*dev(np.empty((0, 5)), np.empty((0, 5)), np.empty((0, 5))))
    p_class, p_slot = np.empty((0, 2)), np.empty((0, 2, 3))
    hsoftmax.full_forward(*dev(p_class, p_slot, np.empty((0, 5))))
    hsoftmax.full_backward(*dev(np.empty((0, 5)), p_class, p_slot, p_class, p_slot))
    idx = np.empty(0, np.intp)
    hsoftmax.target_forward(*dev(p_class, np.empty((0, 3)), idx, idx, np.empty(0)))
    hsoftmax.target_backward(*dev(np.empty(0), p_class, np.empty((0, 3)), idx, idx,
                                  p_class, np.empty((0, 3))))
    hsoftmax.nll_forward(*dev(p_class, np.empty((0, 3)), idx, idx, np.empty(0)))
    hsoftmax.nll_backward(*dev(np.empty(0), p_class, np.empty((0, 3)), idx, idx,
                               p_class, np.empty((0, 3))))


def test_launchers_take_a_stream(rng):
    stream = cuda.stream()
    o, x, y, x_idx, y_idx, alpha = outer_args(rng, np.float64)
    d_o = cuda.to_device(o)
    blocksparse.outer(d_o, *dev(x, y, x_idx, y_idx), alpha, stream=stream, deterministic=True)
    stream.synchronize()
    _cpu.outer.outer(o, x, y, x_idx, y_idx, alpha, False, *o.shape[:2])
    close(d_o.copy_to_host(), o, np.float64)
    rows = rng.standard_normal((2, 5))
    d_out = cuda.device_array_like(rows)
    softmax.softmax_rows(cuda.to_device(rows), d_out, stream=stream)
    stream.synchronize()
    np.testing.assert_allclose(d_out.copy_to_host().sum(axis=1), 1.0)


def softmax_input(rng, dtype, n_rows, n):
    x = (rng.standard_normal((n_rows, n)) * 3).astype(dtype)
    x[0] += 1000  # the max is subtracted first, so nothing overflows
    x[-1, 1] = -np.inf  # probability exactly 0
    return x


# (rows, row length, threads per block): a block per row, 8 threads; 32 threads for a short row
SOFTMAX_CASES = [(5, 19, 8), (3, 5, 32), (2, 1, 8)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=str)
def test_softmax_rows_matches_cpu(rng, small_blocks, case, dtype):
    n_rows, n, threads = case
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", threads)
    x = softmax_input(rng, dtype, n_rows, max(n, 2))[:, :n].copy()
    out = np.empty_like(x)
    d_x, d_out = dev(x, out)
    softmax.softmax_rows(d_x, d_out)
    _cpu.softmax.softmax_rows(x, out)
    close(d_out.copy_to_host(), out, dtype)
    np.testing.assert_array_equal(d_x.copy_to_host(), x)  # input untouched


def test_softmax_rows_grid_stride(rng, small_blocks):
    small_blocks.setattr(launch, "MAX_BLOCKS", 2)  # 2 blocks for 5 rows
    x = softmax_input(rng, np.float64, 5, 11)
    out = np.empty_like(x)
    d_out = cuda.to_device(out)
    softmax.softmax_rows(cuda.to_device(x), d_out)
    _cpu.softmax.softmax_rows(x, out)
    close(d_out.copy_to_host(), out, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SOFTMAX_CASES[:2], ids=str)
def test_softmax_grad_rows_matches_cpu(rng, small_blocks, case, dtype):
    n_rows, n, threads = case
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", threads)
    g = rng.standard_normal((n_rows, n)).astype(dtype)
    y = rng.dirichlet(np.ones(n), n_rows).astype(dtype)
    out = np.empty_like(y)
    d_out = cuda.to_device(out)
    softmax.softmax_grad_rows(*dev(g, y), d_out)
    _cpu.softmax.softmax_grad_rows(g, y, out)
    close(d_out.copy_to_host(), out, dtype)


def probabilities(rng, dtype, *shape):
    return rng.dirichlet(np.ones(shape[-1]), shape[:-1]).astype(dtype)


def full_backward(g, p_class, p_slot):
    """The softmax-input gradients of both levels of ``out = p_class[:, c] * p_slot[:, c, k]`` (full mode),
    ``out`` truncated to ``g.shape[1]`` columns."""
    batch, n_classes, K = p_slot.shape
    upstream = np.zeros((batch, n_classes * K), g.dtype)
    upstream[:, :g.shape[1]] = g
    upstream = upstream.reshape(batch, n_classes, K)
    g_class = (upstream * p_slot).sum(axis=2)
    d_class = p_class * (g_class - (g_class * p_class).sum(axis=1, keepdims=True))
    g_slot = upstream * p_class[:, :, None]
    d_slot = p_slot * (g_slot - (g_slot * p_slot).sum(axis=2, keepdims=True))
    return d_class, d_slot


# (batch, n_classes, K, n_outputs): exact fit, and a truncated last class
HSOFTMAX_CASES = [(3, 3, 4, 12), (3, 3, 4, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_full_forward_matches_numpy(rng, case, dtype):
    batch, n_classes, K, n_outputs = case
    p_class = probabilities(rng, dtype, batch, n_classes)
    p_slot = probabilities(rng, dtype, batch, n_classes, K)
    out = np.full((batch, n_outputs), np.nan, dtype)
    d_out = cuda.to_device(out)
    hsoftmax.full_forward(*dev(p_class, p_slot), d_out)
    out[...] = (p_class[:, :, None] * p_slot).reshape(batch, -1)[:, :n_outputs]
    close(d_out.copy_to_host(), out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", HSOFTMAX_CASES, ids=str)
def test_full_backward_matches_numpy(rng, case, dtype):
    batch, n_classes, K, n_outputs = case
    g = rng.standard_normal((batch, n_outputs)).astype(dtype)
    p_class = probabilities(rng, dtype, batch, n_classes)
    p_slot = probabilities(rng, dtype, batch, n_classes, K)
    d_class, d_slot = np.empty_like(p_class), np.empty_like(p_slot)
    d_d_class, d_d_slot = dev(d_class, d_slot)
    hsoftmax.full_backward(*dev(g, p_class, p_slot), d_d_class, d_d_slot)
    d_class, d_slot = full_backward(g, p_class, p_slot)
    close(d_d_class.copy_to_host(), d_class, dtype)
    close(d_d_slot.copy_to_host(), d_slot, dtype)


def test_full_backward_grid_stride(rng, small_blocks):
    small_blocks.setattr(launch, "MAX_BLOCKS", 2)  # 2 blocks for 5 rows
    batch, n_classes, K, n_outputs = 5, 3, 4, 11
    g = rng.standard_normal((batch, n_outputs))
    p_class = probabilities(rng, np.float64, batch, n_classes)
    p_slot = probabilities(rng, np.float64, batch, n_classes, K)
    d_class, d_slot = np.empty_like(p_class), np.empty_like(p_slot)
    d_d_class, d_d_slot = dev(d_class, d_slot)
    hsoftmax.full_backward(*dev(g, p_class, p_slot), d_d_class, d_d_slot)
    d_class, d_slot = full_backward(g, p_class, p_slot)
    close(d_d_class.copy_to_host(), d_class, np.float64)
    close(d_d_slot.copy_to_host(), d_slot, np.float64)


def target_args(rng, dtype, batch=10, n_classes=3, K=4):
    p_class = probabilities(rng, dtype, batch, n_classes)
    p_slot = probabilities(rng, dtype, batch, K)
    classes = rng.integers(0, n_classes, batch).astype(np.intp)
    slots = rng.integers(0, K, batch).astype(np.intp)
    return p_class, p_slot, classes, slots


@pytest.mark.parametrize("dtype", DTYPES)
def test_target_forward_matches_cpu(rng, dtype):
    args = target_args(rng, dtype)
    out = np.full(10, np.nan, dtype)
    d_out = cuda.to_device(out)
    hsoftmax.target_forward(*dev(*args), d_out)
    _cpu.hsoftmax.target_forward(*args, out)
    close(d_out.copy_to_host(), out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_target_backward_matches_cpu(rng, dtype):
    p_class, p_slot, classes, slots = target_args(rng, dtype)
    g = rng.standard_normal(10).astype(dtype)
    d_class, d_slot = np.empty_like(p_class), np.empty_like(p_slot)
    d_d_class, d_d_slot = dev(d_class, d_slot)
    hsoftmax.target_backward(*dev(g, p_class, p_slot, classes, slots), d_d_class, d_d_slot)
    _cpu.hsoftmax.target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot)
    close(d_d_class.copy_to_host(), d_class, dtype)
    close(d_d_slot.copy_to_host(), d_slot, dtype)


def nll_args(rng, dtype, batch, n_classes, K):
    """Activations of both levels (one row shifted by 1e4: the max must be subtracted) and targets."""
    a_class = (3 * rng.standard_normal((batch, n_classes))).astype(dtype)
    a_slot = (3 * rng.standard_normal((batch, K))).astype(dtype)
    a_class[0] += 1e4
    a_slot[-1] -= 1e4
    classes = rng.integers(0, n_classes, batch).astype(np.intp)
    slots = rng.integers(0, K, batch).astype(np.intp)
    return a_class, a_slot, classes, slots


# (batch, n_classes, K, threads per block): rows longer than a block, ragged, one-column rows
NLL_CASES = [(4, 19, 5, 8), (3, 3, 11, 8), (2, 1, 1, 8), (3, 7, 40, 32)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NLL_CASES, ids=str)
def test_nll_forward_matches_cpu(rng, small_blocks, case, dtype):
    batch, n_classes, K, threads = case
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", threads)
    args = nll_args(rng, dtype, batch, n_classes, K)
    out = np.full(batch, np.nan, dtype)
    d_out = cuda.to_device(out)
    hsoftmax.nll_forward(*dev(*args), d_out)
    _cpu.hsoftmax.nll_forward(*args, out)
    assert np.isfinite(out).all()
    close(d_out.copy_to_host(), out, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NLL_CASES, ids=str)
def test_nll_backward_matches_cpu(rng, small_blocks, case, dtype):
    batch, n_classes, K, threads = case
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", threads)
    args = nll_args(rng, dtype, batch, n_classes, K)
    g = rng.standard_normal(batch).astype(dtype)
    d_class, d_slot = np.full_like(args[0], np.nan), np.full_like(args[1], np.nan)
    d_d_class, d_d_slot = dev(d_class, d_slot)
    hsoftmax.nll_backward(*dev(g, *args), d_d_class, d_d_slot)
    _cpu.hsoftmax.nll_backward(g, *args, d_class, d_slot)
    close(d_d_class.copy_to_host(), d_class, dtype)
    close(d_d_slot.copy_to_host(), d_slot, dtype)


def test_nll_grid_stride(rng, small_blocks):
    small_blocks.setattr(launch, "MAX_BLOCKS", 2)  # 2 blocks for 5 rows
    args = nll_args(rng, np.float64, 5, 9, 6)
    g = rng.standard_normal(5)
    out, d_class, d_slot = np.empty(5), np.empty_like(args[0]), np.empty_like(args[1])
    d_out, d_d_class, d_d_slot = dev(out, d_class, d_slot)
    hsoftmax.nll_forward(*dev(*args), d_out)
    hsoftmax.nll_backward(*dev(g, *args), d_d_class, d_d_slot)
    _cpu.hsoftmax.nll_forward(*args, out)
    _cpu.hsoftmax.nll_backward(g, *args, d_class, d_slot)
    close(d_out.copy_to_host(), out, np.float64)
    close(d_d_class.copy_to_host(), d_class, np.float64)
    close(d_d_slot.copy_to_host(), d_slot, np.float64)


def test_grid_arithmetic(small_blocks):
    assert launch.blocks_for(0) == 1
    assert [launch.blocks_for(n) for n in (1, 8, 9, 17)] == [1, 1, 2, 3]
    assert launch.blocks_for(10, per_block=1) == 10
    small_blocks.setattr(launch, "MAX_BLOCKS", 4)
    assert launch.blocks_for(1000) == 4
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", 128)
    assert [launch.reduction_threads(n) for n in (1, 5, 33, 64, 65, 10_000)] == [32, 32, 64, 64,
                                                                              128, 128]
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", 100)  # not a power of two
    assert launch.reduction_threads(10_000) == 64
