"""``sparse=True`` and ``BlockGrad.to_dense`` on device arrays, against the CPU.

Under the strict simulator with blocks of 8 threads (see test_device.py). The
block lists must name the same blocks as on the CPU, in the same order, and hold
the same gradients to the kernels' tolerance (the device sums with atomics); with
``deterministic=True`` they are the same bits run to run. CuPy in, CuPy out.
"""

import numpy as np
import pytest

import nbsparse as nbs
from tests.support.assertions import tolerance
from tests.support.device import HSM, HSM_EMPTY, PRODUCT, PRODUCT_EMPTY, SIM, is_device_array, to_device

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("strict_device_arrays", "small_blocks")]


def host(a):
    return a.copy_to_host()


def assert_same_blocks(device_grad, cpu_grad, dtype):
    assert isinstance(device_grad, nbs.BlockGrad)
    assert is_device_array(device_grad.index) and is_device_array(device_grad.values)
    np.testing.assert_array_equal(host(device_grad.index), cpu_grad.index)
    np.testing.assert_allclose(host(device_grad.values), cpu_grad.values, **tolerance(dtype, "kernels"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [PRODUCT, PRODUCT_EMPTY], ids=str)
def test_sparse_block_dot_grad_lists_the_cpu_blocks(case, dtype):
    args = case.make(dtype).dot_grad()
    cpu = nbs.sparse_block_dot_grad(*args, sparse=True)
    got = nbs.sparse_block_dot_grad(*(to_device(a) for a in args), sparse=True)
    assert_same_blocks(got.W, cpu.W, dtype)
    assert_same_blocks(got.b, cpu.b, dtype)
    np.testing.assert_allclose(host(got.h), cpu.h, **tolerance(dtype, "kernels"))


@pytest.mark.parametrize("case", [HSM, HSM_EMPTY], ids=str)
def test_h_softmax_nll_grad_lists_the_target_classes(case):
    a = case.make(np.float64)
    g = np.ones(a.x.shape[0])
    cpu = nbs.h_softmax_nll_grad(g, *a.call(), a.target, sparse=True)
    device_call = [to_device(v) if isinstance(v, np.ndarray) else v for v in (g, *a.call(), a.target)]
    got = nbs.h_softmax_nll_grad(*device_call, sparse=True)
    assert_same_blocks(got.W2, cpu.W2, np.float64)
    assert_same_blocks(got.b2, cpu.b2, np.float64)


def test_full_mode_lists_every_class_on_the_device():
    a = HSM.make(np.float64)
    g = np.random.default_rng(0).standard_normal((a.x.shape[0], a.n_outputs))
    device_call = [to_device(v) if isinstance(v, np.ndarray) else v for v in (g, *a.call())]
    got = nbs.h_softmax_grad(*device_call, sparse=True)
    np.testing.assert_array_equal(host(got.W2.index), np.arange(a.n_classes).reshape(-1, 1))
    dense = nbs.h_softmax_grad(g, *a.call())
    np.testing.assert_allclose(host(got.W2.values), dense.W2, **tolerance(np.float64, "kernels"))


def test_deterministic_block_lists_are_the_same_bits_run_to_run():
    args = [to_device(a) for a in PRODUCT.make(np.float32).dot_grad()]
    first = nbs.sparse_block_dot_grad(*args, sparse=True, deterministic=True)
    again = nbs.sparse_block_dot_grad(*args, sparse=True, deterministic=True)
    for a, b in ((first.W, again.W), (first.b, again.b)):
        assert host(a.values).tobytes() == host(b.values).tobytes()


def test_to_dense_on_the_device_places_the_blocks():
    args = PRODUCT.make(np.float64).dot_grad()
    cpu = nbs.sparse_block_dot_grad(*args, sparse=True)
    device_grad = nbs.BlockGrad(to_device(cpu.W.index), to_device(cpu.W.values))
    shape = args[1].shape
    dense = device_grad.to_dense(shape)
    assert is_device_array(dense)
    np.testing.assert_array_equal(host(dense), cpu.W.to_dense(shape))
    with pytest.raises(ValueError, match="outside the block grid"):
        device_grad.to_dense((1, *shape[1:]))


@pytest.mark.skipif(not SIM, reason="the fake CuPy runs on the simulator")
def test_cupy_in_cupy_out(fake_cupy):
    args = PRODUCT.make(np.float32).dot_grad()
    cpu = nbs.sparse_block_dot_grad(*args, sparse=True)
    got = nbs.sparse_block_dot_grad(*(fake_cupy.ndarray(np.array(a, copy=True)) for a in args), sparse=True)
    for field in ("W", "b"):
        grad = getattr(got, field)
        assert isinstance(grad.index, fake_cupy.ndarray) and isinstance(grad.values, fake_cupy.ndarray)
        np.testing.assert_array_equal(grad.index.memory, getattr(cpu, field).index)
    dense = got.W.to_dense(args[1].shape)
    assert isinstance(dense, fake_cupy.ndarray)
    np.testing.assert_allclose(dense.memory, cpu.W.to_dense(args[1].shape), **tolerance(np.float32, "kernels"))
