"""The public API on CuPy arrays and CUDA streams, and what needs real hardware.

CuPy is replaced by a fake module (tests/support/device.py): its arrays expose a
``__cuda_array_interface__`` over host memory, which the CUDA simulator reads as
device memory. Under the simulator nbsparse never asks CuPy for its stream (the
simulator has no external streams), so the stream hand-over is unit-tested on
``nbsparse._device._launch_stream`` and every transfer and launch of a call is
checked to use the call's stream. Tests marked ``gpu`` need real hardware and CuPy.
"""

import subprocess
import sys

import numpy as np
import pytest
from numba import cuda

import nbsparse as nbs
from nbsparse import _device, _reference
from nbsparse._cuda import launch
from tests.support.assertions import tolerance
from tests.support.cases import HSoftmaxCase, ProductCase
from tests.support.device import (
    CALLS,
    DETERMINISTIC,
    INPLACE,
    SIM,
    STREAM_PTR,
    assert_device_result,
    calls,
    spread,
    step_two,
    to_device,
)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("strict_device_arrays", "small_blocks")]

needs_simulator = pytest.mark.skipif(
    not SIM, reason="host memory behind a CUDA array interface: simulator only")


# --------------------------------------------------------------------------- CuPy in, CuPy out
def _cupy_put(cp, layout="contiguous", readonly=False):
    def put(a):
        memory = spread(a)[step_two(a)] if layout == "strided" else np.array(a, copy=True)
        return cp.ndarray(memory, readonly=readonly)
    return put


@needs_simulator
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name", CALLS)
def test_cupy_in_cupy_out(fake_cupy, name, layout):
    call = calls(np.float32, np.int32)[name]

    result, args = call.run(_cupy_put(fake_cupy, layout))

    assert_device_result(result, call.expected(), np.float32, host=lambda r: r.memory,
                         is_kind=lambda r: isinstance(r, fake_cupy.ndarray))
    for k, a in call.arrays.items():
        np.testing.assert_array_equal(args[k].memory, a, err_msg=f"{k} was modified")


@needs_simulator
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name", INPLACE)
def test_cupy_inplace_writes_into_the_callers_buffer(fake_cupy, name, layout):
    call = calls(np.float64, np.int32)[name]
    expected = call.expected()
    o = _cupy_put(fake_cupy, layout)(call.arguments["o"])
    memory = o.memory

    args = {k: _cupy_put(fake_cupy)(a) for k, a in call.arrays.items() if k != "o"}
    result = call.func(**{**call.arguments, **args, "o": o}, inplace=True)

    assert result is o and o.memory is memory
    np.testing.assert_allclose(memory, expected, **tolerance(np.float64))


@needs_simulator
@pytest.mark.parametrize("name", INPLACE)
def test_read_only_cupy_o_with_inplace_is_a_value_error(fake_cupy, name):
    call = calls(np.float64, np.int32)[name]
    args = {k: _cupy_put(fake_cupy, readonly=k == "o")(a) for k, a in call.arrays.items()}
    with pytest.raises(ValueError, match="^inplace=True but o is read-only$"):
        call.func(**{**call.arguments, **args}, inplace=True)
    np.testing.assert_array_equal(args["o"].memory, call.arguments["o"])


@needs_simulator
@pytest.mark.parametrize("name", ["sparse_block_gemv", "h_softmax_grad[target]"])
def test_read_only_cupy_inputs_are_only_read(fake_cupy, name):
    call = calls(np.float64, np.int32)[name]
    result, _ = call.run(_cupy_put(fake_cupy, readonly=True))
    assert_device_result(result, call.expected(), np.float64, host=lambda r: r.memory,
                         is_kind=lambda r: isinstance(r, fake_cupy.ndarray))


@pytest.mark.parametrize(("name", "on_host"), [("sparse_block_dot", "b"),
                                               ("h_softmax[target]", "target"),
                                               ("softmax_grad", "y")])
def test_mixing_cupy_and_numpy_is_a_type_error_naming_both_sides(fake_cupy, name, on_host):
    call = calls(np.float64)[name]
    args = {k: (a if k == on_host else fake_cupy.ndarray(a.copy())) for k, a in call.arrays.items()}
    with pytest.raises(TypeError, match="cannot mix host and device") as info:
        call.func(**{**call.arguments, **args})
    message = str(info.value)
    assert f"{on_host} on the host (NumPy)" in message
    on_device = ", ".join(k for k in call.arrays if k != on_host)
    assert f"{on_device} on the GPU (CUDA)" in message


@needs_simulator
def test_cupy_mixed_with_numba_device_arrays_gives_cupy(fake_cupy):
    call = calls(np.float64)["sparse_block_dot"]
    args = {k: (fake_cupy.ndarray(a.copy()) if k == "h" else to_device(a))
            for k, a in call.arrays.items()}
    result = call.func(**{**call.arguments, **args})
    assert isinstance(result, fake_cupy.ndarray)
    np.testing.assert_allclose(result.memory, call.expected(), **tolerance(np.float64))


# --------------------------------------------------------------------------- streams
def test_launch_stream_is_cupys_current_stream(monkeypatch, fake_cupy):
    """Off the simulator, a call with a CuPy array runs on CuPy's current stream."""
    wrapped = []
    monkeypatch.setattr(_device, "SIM", False)
    monkeypatch.setattr(_device.cuda, "external_stream",
                        lambda ptr: wrapped.append(ptr) or ("external stream", ptr))
    numba_array = cuda.to_device(np.zeros(2))

    stream = _device._launch_stream([numba_array, fake_cupy.ndarray(np.zeros(3))])

    assert stream == ("external stream", STREAM_PTR)
    assert wrapped == [STREAM_PTR] and fake_cupy.stream_requests == [STREAM_PTR]


def test_launch_stream_is_the_default_stream_without_cupy_arrays(monkeypatch, fake_cupy):
    monkeypatch.setattr(_device, "SIM", False)
    monkeypatch.setattr(_device.cuda, "external_stream", lambda ptr: pytest.fail("asked"))
    assert _device._launch_stream([cuda.to_device(np.zeros(2))]) == 0
    assert fake_cupy.stream_requests == []
    monkeypatch.delitem(sys.modules, "cupy")
    assert _device._launch_stream([cuda.to_device(np.zeros(2))]) == 0


@pytest.mark.skipif(not SIM, reason="the simulator's behaviour")
def test_simulator_never_asks_cupy_for_a_stream(fake_cupy):
    assert _device._launch_stream([fake_cupy.ndarray(np.zeros(3))]) == 0
    assert fake_cupy.stream_requests == []


def test_launchers_are_bound_to_the_call_stream(monkeypatch):
    stream = object()
    monkeypatch.setattr(_device, "_launch_stream", lambda arrays: stream)
    backend = _device.DeviceBackend([cuda.to_device(np.zeros(2))], deterministic=True)
    assert backend.stream is stream
    keywords = {}
    for module, name in ((_device.cuda_blocksparse, "outer"), (_device.cuda_softmax, "softmax_rows"),
                         (_device.cuda_hsoftmax, "split_target")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **kw: keywords.update({_name: kw}))
    backend.outer(*[None] * 7)
    backend.softmax_rows(None, None)
    backend.split_target(None, 1, None, None)
    assert keywords["outer"] == {"stream": stream, "deterministic": True}
    assert keywords["softmax_rows"] == {"stream": stream}
    assert keywords["split_target"] == {"stream": stream}


@pytest.mark.parametrize("name", CALLS)
def test_every_launch_and_transfer_uses_the_call_stream(monkeypatch, launches, name):
    """No launch, allocation or copy of a call falls back to the default stream."""
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    call = calls(np.float64, np.int32)[name]
    args = {k: to_device(a) for k, a in call.arrays.items()}
    flags = {"deterministic": True} if name in DETERMINISTIC else {}
    stream = cuda.stream()
    transfers = []

    def recording(what, func, position):
        def wrapper(*a, **kw):
            transfers.append((what, kw.get("stream", a[position] if len(a) > position else 0)))
            return func(*a, **kw)
        return wrapper

    with monkeypatch.context() as m:  # only the call's own transfers
        m.setattr(_device, "_launch_stream", lambda arrays: stream)
        m.setattr(cuda, "to_device", recording("to_device", cuda.to_device, 1))
        m.setattr(cuda, "device_array", recording("device_array", cuda.device_array, 99))
        m.setattr(FakeCUDAArray, "copy_to_host",
                  recording("copy_to_host", FakeCUDAArray.copy_to_host, 2))
        result = call.func(**{**call.arguments, **args}, **flags)

    assert launches and transfers
    assert [kernel for kernel, used in launches if used is not stream] == []
    assert [what for what, used in transfers if used is not stream] == []
    assert_device_result(result, call.expected(), np.float64)


# --------------------------------------------------------------------------- the missing extra
_WITHOUT_NUMBA_CUDA = """
import importlib.util, sys
import numpy as np
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name == "numba_cuda" else real_find_spec(name, *a, **k)
import nbsparse as nbs

class DeviceArray:  # a simulator-style device array: the flag and metadata only
    __cuda_ndarray__ = True
    shape, ndim, dtype = (2, 3), 2, np.dtype(np.float64)

for attempt in range(2):  # a failed import is not cached as a half-loaded module
    try:
        nbs.softmax(DeviceArray())
    except ImportError as e:
        assert "nbsparse[cuda]" in str(e), str(e)
    else:
        raise SystemExit("no ImportError")
assert nbs.softmax(np.zeros(3)).shape == (3,)  # the host side is unaffected
assert "numba.cuda" not in sys.modules, "numba.cuda was imported"
"""


def test_device_array_without_numba_cuda_names_the_extra():
    proc = subprocess.run([sys.executable, "-W", "error", "-c", _WITHOUT_NUMBA_CUDA],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- real GPU
@pytest.fixture
def default_blocks(small_blocks):
    small_blocks.setattr(launch, "THREADS_PER_BLOCK", 128)


@pytest.mark.gpu
def test_real_cupy_sparse_block_dot(default_blocks):
    cp = pytest.importorskip("cupy")
    case = ProductCase("moderate", batch=64, i_blocks=16, o_blocks=32, i_size=64, o_size=48,
                       i_win=4, o_win=3, indices="duplicates", seed=41)
    args = case.make(np.float32, np.int32).dot()
    result = nbs.sparse_block_dot(*(cp.asarray(a) for a in args))
    assert isinstance(result, cp.ndarray) and result.dtype == np.float32
    np.testing.assert_allclose(cp.asnumpy(result), _reference.sparse_block_dot(*args),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("with_target", [False, True], ids=["full", "target"])
def test_real_cupy_h_softmax(default_blocks, with_target):
    cp = pytest.importorskip("cupy")
    h = HSoftmaxCase("moderate", batch=256, n_in=64, n_classes=32, K=40, n_outputs=1250,
                     seed=42).make(np.float64, np.int64)
    target = h.target if with_target else None
    result = nbs.h_softmax(*(cp.asarray(a) if isinstance(a, np.ndarray) else a for a in h.call()),
                           target=None if target is None else cp.asarray(target))
    assert isinstance(result, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(result), _reference.h_softmax(*h.call(), target=target),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
def test_real_cupy_call_runs_on_a_non_default_stream(default_blocks):
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(43)
    x_host = rng.standard_normal((512, 1000))
    stream = cp.cuda.Stream(non_blocking=True)  # no implicit sync with the legacy default stream
    with stream:
        x = cp.asarray(x_host)
        for _ in range(20):  # keep the stream busy, so a launch on another stream would race
            x = x * 1.0
        result = nbs.softmax(x, axis=0)
        total = result.sum(axis=0)
    stream.synchronize()
    assert isinstance(result, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(result), _reference.softmax(x_host, 0), rtol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(total), 1.0, rtol=1e-12)

