"""nbsparse.optim on GPU arrays (the CUDA simulator, or a GPU): the same steps as on the CPU, in place.

Every problem is tiny (at most 60 elements) and runs over blocks of 8 threads, so
grids have several blocks and a ragged last one. Device arrays are strict (only
the real ``DeviceNDArray`` API, no hidden host copies: tests/support/device.py).
Each step is compared with the same step through nbsparse.optim on NumPy copies.
"""


import numpy as np
import pytest
from numba import cuda

from nbsparse import BlockGrad, optim
from nbsparse.optim import AdamState
from tests.support.assertions import FLOAT_DTYPES
from tests.support.device import SIM, is_device_array, record_launches

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("strict_device_arrays", "small_blocks")]

needs_simulator = pytest.mark.skipif(not SIM, reason="host memory behind a CUDA array interface: simulator only")

TOL = {np.dtype(np.float32): {"rtol": 1e-6, "atol": 1e-6}, np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-12}}
HYPER = {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6}
SHAPE = (4, 5, 3)  # a (4, 5) grid of blocks of 3 elements
TOUCHED = [[(0, 1), (2, 3), (3, 4)], [(0, 1), (1, 0)], [(1, 0), (2, 3), (3, 0), (3, 4)]]
"""The blocks each of three steps lists: lazy Adam sees blocks touched once, twice, three times, never."""


def host(a):
    return a.copy_to_host()


def assert_close(device, expected):
    got = host(device)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOL[got.dtype])


def gradients(dtype, dense, seed=0):
    """Three steps' gradients (host): BlockGrads over ``TOUCHED``, or their dense forms."""
    rng = np.random.default_rng(seed)
    grads = []
    for touched in TOUCHED:
        index = np.array(touched, dtype=np.int32)  # any integer dtype; the ids are intp
        grad = BlockGrad(index, rng.standard_normal((len(touched), SHAPE[2])).astype(dtype))
        grads.append(grad.to_dense(SHAPE) if dense else grad)
    return grads


def to_device(grad):
    if isinstance(grad, BlockGrad):
        return BlockGrad(cuda.to_device(grad.index), cuda.to_device(grad.values))
    return cuda.to_device(grad)


# --------------------------------------------------------------------------- against the CPU

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dense", [False, True], ids=["blocks", "dense"])
def test_sgd_matches_the_cpu_step(dtype, dense):
    expected = np.random.default_rng(1).standard_normal(SHAPE).astype(dtype)
    param = cuda.to_device(expected)
    for grad in gradients(dtype, dense)[:2]:
        result = optim.sgd(param, to_device(grad), 0.3)
        optim.sgd(expected, grad, 0.3)
        assert result is param
        assert_close(param, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("dense", [False, True], ids=["blocks", "dense"])
def test_adam_matches_the_cpu_step_over_three_steps(dtype, dense):
    expected = np.random.default_rng(2).standard_normal(SHAPE).astype(dtype)
    ref = AdamState.zeros_like(expected)
    param = cuda.to_device(expected)
    state = AdamState.zeros_like(param)
    m, v = state.m, state.v
    assert is_device_array(m) and is_device_array(v) and m.dtype == dtype and tuple(m.shape) == SHAPE
    for step, grad in enumerate(gradients(dtype, dense), start=1):
        result = optim.adam(param, to_device(grad), state, **HYPER)
        optim.adam(expected, grad, ref, **HYPER)
        assert result is param
        assert state.m is m and state.v is v and state.step == ref.step == step
        for got, want in ((param, expected), (state.m, ref.m), (state.v, ref.v)):
            assert_close(got, want)
    if not dense:  # lazy: a block never listed keeps its value and zero moments
        assert (host(state.m)[0, 0] == 0).all() and (host(state.v)[0, 0] == 0).all()
        np.testing.assert_array_equal(host(param)[0, 0], expected[0, 0])


@pytest.mark.parametrize("d", [1, 3])
def test_blocks_of_other_depths_and_an_empty_index(d):
    """``d = 1`` (rows of 15 elements), ``d = ndim`` (blocks of one element), and no block at all."""
    rng = np.random.default_rng(3)
    rows = {1: [(0,), (2,), (3,)], 3: [(0, 0, 2), (1, 4, 0), (3, 2, 1)]}[d]
    for listed in (rows, []):
        index = np.array(listed, dtype=np.intp).reshape(len(listed), d)
        grad = BlockGrad(index, rng.standard_normal((len(listed), *SHAPE[d:])))
        expected = rng.standard_normal(SHAPE)
        ref = AdamState(rng.standard_normal(SHAPE), rng.random(SHAPE), 4)
        param = cuda.to_device(expected)
        state = AdamState(cuda.to_device(ref.m), cuda.to_device(ref.v), 4)
        optim.adam(param, to_device(grad), state, **HYPER)
        optim.adam(expected, grad, ref, **HYPER)
        for got, want in ((param, expected), (state.m, ref.m), (state.v, ref.v)):
            assert_close(got, want)
        assert state.step == 5


def test_a_strided_gradient_is_read_through_a_copy():
    rng = np.random.default_rng(4)
    expected = rng.standard_normal(SHAPE)
    grad = rng.standard_normal(SHAPE)
    param = cuda.to_device(expected)
    strided = cuda.to_device(np.repeat(grad, 2, axis=2))[:, :, ::2]
    optim.sgd(param, strided, 0.5)
    optim.sgd(expected, grad, 0.5)
    assert_close(param, expected)


@needs_simulator
def test_the_kernels_launch_on_the_device(monkeypatch):
    seen = record_launches(monkeypatch)
    param = cuda.to_device(np.zeros(SHAPE, dtype=np.float32))
    state = AdamState.zeros_like(param)
    dense, blocks = gradients(np.float32, True)[0], gradients(np.float32, False)[0]
    optim.sgd(param, to_device(dense), 0.1)
    optim.sgd(param, to_device(blocks), 0.1)
    optim.adam(param, to_device(dense), state)
    optim.adam(param, to_device(blocks), state)
    assert [name for name, _ in seen if not name.startswith("_fill")] == [
        "_sgd_dense", "_sgd_blocks", "_adam_dense", "_adam_blocks"]


# --------------------------------------------------------------------------- CuPy in, CuPy out

@needs_simulator
@pytest.mark.parametrize("dense", [False, True], ids=["blocks", "dense"])
def test_cupy_in_cupy_out(fake_cupy, dense):
    cp = fake_cupy
    expected = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    ref = AdamState.zeros_like(expected)
    param = cp.ndarray(expected.copy())
    state = AdamState.zeros_like(param)
    assert isinstance(state.m, cp.ndarray) and isinstance(state.v, cp.ndarray)
    for grad in gradients(np.float32, dense)[:2]:
        put = (BlockGrad(cp.ndarray(grad.index.copy()), cp.ndarray(grad.values.copy())) if not dense
               else cp.ndarray(grad.copy()))
        assert optim.adam(param, put, state, **HYPER) is param
        optim.adam(expected, grad, ref, **HYPER)
    for got, want in ((param, expected), (state.m, ref.m), (state.v, ref.v)):
        np.testing.assert_allclose(got.memory, want, **TOL[want.dtype])
    assert state.step == 2


# --------------------------------------------------------------------------- errors: nothing written

def device_problem():
    rng = np.random.default_rng(6)
    param = cuda.to_device(rng.standard_normal(SHAPE))
    state = AdamState(cuda.to_device(rng.standard_normal(SHAPE)), cuda.to_device(rng.random(SHAPE)), 3)
    return param, state


@pytest.mark.parametrize("rows, error, message", [
    ([(0, 1), (2, 5)], IndexError, r"grad.index\[1\] = \(2, 5\) is outside the block grid \(4, 5\) of param"),
    ([(2, 3), (0, 1)], ValueError, r"grad.index\[1\] = \(0, 1\) does not come after"),
], ids=["outside the grid", "decreasing"])
def test_a_bad_index_raises_and_writes_nothing(rows, error, message):
    param, state = device_problem()
    before = [host(a) for a in (param, state.m, state.v)]
    grad = BlockGrad(cuda.to_device(np.array(rows, dtype=np.int64)), cuda.to_device(np.ones((2, 3))))
    with pytest.raises(error, match=message):
        optim.sgd(param, grad, 0.1)
    with pytest.raises(error, match=message):
        optim.adam(param, grad, state)
    for a, b in zip((param, state.m, state.v), before):
        np.testing.assert_array_equal(host(a), b)
    assert state.step == 3


def test_a_non_contiguous_state_raises_and_writes_nothing():
    param, state = device_problem()
    before = [host(a) for a in (param, state.m)]
    state.v = cuda.to_device(np.zeros((4, 5, 6)))[:, :, ::2]
    with pytest.raises(ValueError, match="state.v must be C-contiguous"):
        optim.adam(param, cuda.to_device(np.ones(SHAPE)), state)
    for a, b in zip((param, state.m), before):
        np.testing.assert_array_equal(host(a), b)
    assert state.step == 3


@needs_simulator
def test_a_read_only_param_raises_and_writes_nothing(fake_cupy):
    memory = np.random.default_rng(7).standard_normal(SHAPE)
    param = fake_cupy.ndarray(memory, readonly=True)
    before = memory.copy()
    with pytest.raises(ValueError, match="param is read-only"):
        optim.sgd(param, fake_cupy.ndarray(np.ones(SHAPE)), 0.1)
    np.testing.assert_array_equal(memory, before)


def test_mixing_host_and_device_is_still_a_type_error():
    param, state = device_problem()
    with pytest.raises(TypeError, match="cannot mix host and device"):
        optim.adam(param, BlockGrad(np.array([[0, 1]]), cuda.to_device(np.ones((1, 3)))), state)
    assert state.step == 3
