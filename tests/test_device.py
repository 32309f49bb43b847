"""The public API on device arrays: the GPU backend end to end, against the NumPy oracle.

Runs under the CUDA simulator by default (tests/conftest.py), with
``launch.THREADS_PER_BLOCK`` shrunk to 8 so that tiny inputs span several blocks
with a ragged last one (``oSize`` 9). The simulator is made *strict* for every
test here: a simulated device array answers only the API of Numba's real
``DeviceNDArray``, so host code that calls NumPy methods on a device array
(``.sum``, ``.astype``, ``.flags.writeable``), or converts one to NumPy behind the
caller's back, fails here as it would (or would silently copy) on a GPU.

CuPy is replaced by a fake module (TECH_NOTES §2): its arrays expose a
``__cuda_array_interface__`` over host memory, which the simulator reads as
device memory. Under the simulator nbsparse never asks CuPy for its stream (the
simulator has no external streams), so the stream hand-over is unit-tested on
``nbsparse._device._launch_stream`` and every transfer and launch of a call is
checked to use the call's stream. Tests marked ``gpu`` need real hardware and CuPy.
"""

import inspect
import subprocess
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
from cases import HSoftmaxCase, ProductCase
from helpers import in_result_dtype, tolerance
from numba import cuda

import nbsparse as nbs
from nbsparse import _device, _reference
from nbsparse._cuda import launch

pytestmark = pytest.mark.cuda

SIM = launch.SIM
needs_simulator = pytest.mark.skipif(
    not SIM, reason="host memory behind a CUDA array interface: simulator only")

# --------------------------------------------------------------------------- problems
PRODUCT = ProductCase("ragged_repeats", batch=3, i_blocks=4, o_blocks=3, i_size=5, o_size=9,
                      i_win=2, o_win=2, indices="duplicates", seed=31)
"""oSize 9 over blocks of 8 threads; window positions 0 and 1 select the same block."""
PRODUCT_EMPTY = ProductCase("batch_0", batch=0, i_blocks=4, o_blocks=3, i_size=5, o_size=9,
                            i_win=2, o_win=2, seed=32)
HSM = HSoftmaxCase("truncated", batch=5, n_in=4, n_classes=3, K=4, n_outputs=10, seed=33)
"""5 rows, 3 classes: some class repeats among the targets; the last class is truncated."""
HSM_SMALL = HSoftmaxCase("small", batch=4, n_in=3, n_classes=2, K=3, n_outputs=5, seed=37)
"""4 rows, 2 classes: targets repeat a class (three runs of h_softmax_grad stay under 1 s)."""
HSM_EMPTY = HSoftmaxCase("batch_0", batch=0, n_in=4, n_classes=3, K=4, n_outputs=10, seed=34)
SOFTMAX_SHAPE, SOFTMAX_AXIS = (3, 5, 4), 1  # a non-last axis
ALPHA = 0.5

FLOATS = [np.float32, np.float64]
INDEX_DTYPES = [np.int32, np.int64, np.uint8]


@dataclass(frozen=True)
class Call:
    """One public call: the function and its arguments by name (host arrays, ints, axis)."""

    name: str
    func: object
    arguments: dict

    def __str__(self):
        return self.name

    @property
    def arrays(self):
        return {k: a for k, a in self.arguments.items() if isinstance(a, np.ndarray)}

    def expected(self):
        """The oracle's result, computed from the host arguments."""
        return getattr(_reference, self.func.__name__)(**self.arguments)

    def run(self, put, **flags):
        """The call with every array argument replaced by ``put(array)``; returns (result, args)."""
        args = {k: put(a) if isinstance(a, np.ndarray) else a for k, a in self.arguments.items()}
        return self.func(**args, **flags), args

    def replace(self, **arguments):
        return Call(self.name, self.func, {**self.arguments, **arguments})


def _hsm_arguments(h, target):
    args = dict(zip(["x", "batch_size", "n_outputs", "n_classes", "n_outputs_per_class",
                     "W1", "b1", "W2", "b2"], h.call()))
    return {**args, "target": target}


def calls(dtype, index_dtype=np.int64, product=PRODUCT, hsm=HSM):
    """Every public function and mode, by name, on small problems of ``dtype``."""
    p = product.make(dtype, index_dtype)
    h = hsm.make(dtype, index_dtype)
    rng = np.random.default_rng(35)
    x = (3 * rng.standard_normal(SOFTMAX_SHAPE)).astype(dtype)
    y = _reference.softmax(x, SOFTMAX_AXIS).astype(dtype)
    g_full = rng.standard_normal((h.x.shape[0], h.n_outputs)).astype(dtype)
    g_target = rng.standard_normal(h.x.shape[0]).astype(dtype)
    by_name = {
        "sparse_block_gemv": (nbs.sparse_block_gemv, dict(
            o=p.o, W=p.W, h=p.h, input_idx=p.input_idx, output_idx=p.output_idx)),
        "sparse_block_dot": (nbs.sparse_block_dot, dict(
            W=p.W, h=p.h, input_idx=p.input_idx, b=p.b, output_idx=p.output_idx)),
        "sparse_block_outer": (nbs.sparse_block_outer, dict(
            o=p.outer_o, x=p.h, y=p.grad, x_idx=p.input_idx, y_idx=p.output_idx, alpha=ALPHA)),
        "sparse_block_dot_grad": (nbs.sparse_block_dot_grad, dict(
            grad_output=p.grad, W=p.W, h=p.h, input_idx=p.input_idx, b=p.b,
            output_idx=p.output_idx)),
        "softmax": (nbs.softmax, dict(x=x, axis=SOFTMAX_AXIS)),
        "softmax_grad": (nbs.softmax_grad, dict(grad_output=x / 3, y=y, axis=SOFTMAX_AXIS)),
        "h_softmax": (nbs.h_softmax, _hsm_arguments(h, None)),
        "h_softmax[target]": (nbs.h_softmax, _hsm_arguments(h, h.target)),
        "h_softmax_grad": (nbs.h_softmax_grad, {"grad_output": g_full, **_hsm_arguments(h, None)}),
        "h_softmax_grad[target]": (nbs.h_softmax_grad,
                                   {"grad_output": g_target, **_hsm_arguments(h, h.target)}),
        "h_softmax_nll": (nbs.h_softmax_nll, _hsm_arguments(h, h.target)),
        "h_softmax_nll_grad": (nbs.h_softmax_nll_grad,
                               {"grad_output": g_target, **_hsm_arguments(h, h.target)}),
    }
    return {name: Call(name, func, args) for name, (func, args) in by_name.items()}


CALLS = list(calls(np.float64))
DETERMINISTIC = ["sparse_block_outer", "sparse_block_dot_grad", "h_softmax_grad",
                 "h_softmax_grad[target]", "h_softmax_nll_grad"]
INPLACE = ["sparse_block_gemv", "sparse_block_outer"]


def _reference_cases():
    """(call, dtype, index dtype): every index dtype for calls with index arguments."""
    for name, call in calls(np.float64).items():
        takes_indices = bool(call.arrays.keys() & {"input_idx", "x_idx", "target"})
        index_dtypes = INDEX_DTYPES if takes_indices else [np.int64]
        for dtype in FLOATS:
            for index_dtype in index_dtypes:
                yield pytest.param(name, dtype, index_dtype,
                                   id=f"{name}-{np.dtype(dtype)}-{np.dtype(index_dtype)}")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """8 threads per block: several blocks and a ragged last one on tiny inputs."""
    monkeypatch.setattr(launch, "THREADS_PER_BLOCK", 8)
    return monkeypatch


DEVICE_ARRAY_API = frozenset({
    "shape", "strides", "dtype", "ndim", "size", "copy_to_host", "copy_to_device", "reshape",
    "ravel", "view", "transpose", "T", "squeeze", "split", "bind", "is_c_contiguous",
    "is_f_contiguous", "nbytes", "alloc_size", "stream", "gpu_data", "_ary",
})
"""What Numba's real ``DeviceNDArray`` offers (and the simulator's array implements)."""


def _converted(self, *args, **kwargs):
    raise AssertionError(
        "host code converted a device array to NumPy (on a GPU: a hidden device-to-host copy); "
        "only kernels may read device data, or an explicit copy_to_host"
    )


@pytest.fixture(autouse=True)
def strict_device_arrays(monkeypatch):
    """Simulated device arrays answer only the real ``DeviceNDArray`` API (TECH_NOTES §2).

    The simulator's ``FakeCUDAArray`` forwards every unknown attribute to the NumPy
    array it wraps, so ``d.sum()`` or ``d.astype(...)`` pass in the simulator and fail
    on hardware. Here they raise AttributeError. ``flags`` is a plain dict with the
    two contiguity keys, as on hardware (so ``d.flags.writeable`` fails), and
    ``reshape``/``ravel`` refuse to copy a non-contiguous array, as Numba's do. NumPy
    conversion (``np.asarray(d)``) and reading an element outside a kernel
    (``int(d[0])``) fail loudly: on a GPU they would be silent device-to-host copies.
    Kernels still run.
    """
    if not SIM:
        return
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    forward = FakeCUDAArray.__getattr__

    def __getattr__(self, name):
        if name in DEVICE_ARRAY_API or (name.startswith("__") and name.endswith("__")):
            return forward(self, name)
        raise AttributeError(
            f"{type(self).__name__}.{name}: not part of Numba's DeviceNDArray API "
            "(strict simulator: host code may not use NumPy methods on a device array)"
        )

    def flags(self):
        return {"C_CONTIGUOUS": self._ary.flags.c_contiguous,
                "F_CONTIGUOUS": self._ary.flags.f_contiguous}

    getitem = FakeCUDAArray.__getitem__

    def __getitem__(self, index):
        item = getitem(self, index)
        if sim_kernel._kernel_context is None and not isinstance(item, FakeCUDAArray):
            raise AssertionError("host code read an element of a device array "
                                 "(on a GPU: a device-to-host copy per element)")
        return item  # in a kernel, or a view: the real API has both

    def no_copy(method):  # NumPy copies a non-contiguous array silently; Numba refuses
        def view_only(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            if self.size and not np.shares_memory(result._ary, self._ary):
                raise NotImplementedError("operation requires copying")
            return result
        return view_only

    monkeypatch.setattr(FakeCUDAArray, "__getattr__", __getattr__)
    monkeypatch.setattr(FakeCUDAArray, "__getitem__", __getitem__)
    monkeypatch.setattr(FakeCUDAArray, "reshape", no_copy(FakeCUDAArray.reshape))
    monkeypatch.setattr(FakeCUDAArray, "ravel", no_copy(FakeCUDAArray.ravel))
    monkeypatch.setattr(FakeCUDAArray, "flags", property(flags), raising=False)
    monkeypatch.setattr(FakeCUDAArray, "__array__", _converted, raising=False)
    monkeypatch.setattr(FakeCUDAArray, "__array_interface__", property(_converted), raising=False)
    monkeypatch.setattr(FakeCUDAArray, "__array_struct__", property(_converted), raising=False)


class FakeCupyArray:
    """A CuPy-like array: a ``__cuda_array_interface__`` over a host buffer it keeps alive.

    Like ``cupy.ndarray`` it refuses implicit conversion to NumPy (``.get()`` copies).
    ``readonly`` sets the interface's read-only flag.
    """

    def __init__(self, memory, readonly=False):
        self.memory, self.readonly = memory, readonly

    shape = property(lambda self: self.memory.shape)
    dtype = property(lambda self: self.memory.dtype)
    ndim = property(lambda self: self.memory.ndim)
    size = property(lambda self: self.memory.size)
    strides = property(lambda self: self.memory.strides)

    @property
    def __cuda_array_interface__(self):
        m = self.memory
        return {"version": 3, "shape": m.shape, "typestr": m.dtype.str,
                "data": (m.ctypes.data, self.readonly),
                "strides": None if m.flags.c_contiguous else m.strides}

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self):
        return self.memory.copy()


STREAM_PTR = 0x5EED


def make_fake_cupy():
    """A module standing in for ``cupy``: ``ndarray``, ``asarray`` and ``cuda.get_current_stream``."""
    cp = types.ModuleType("cupy")
    cp.ndarray = type("ndarray", (FakeCupyArray,), {"__module__": "cupy"})
    cp.stream_requests = []

    def asarray(obj):
        if isinstance(obj, cp.ndarray):
            return obj
        if getattr(obj, "__cuda_ndarray__", False):  # a simulator array: its memory, no copy
            return cp.ndarray(obj._ary)
        raise TypeError(f"fake cupy.asarray: unexpected {type(obj).__name__}")

    def get_current_stream():
        cp.stream_requests.append(STREAM_PTR)
        return types.SimpleNamespace(ptr=STREAM_PTR)

    cp.asarray = asarray
    cp.cuda = types.SimpleNamespace(get_current_stream=get_current_stream)
    return cp


@pytest.fixture
def fake_cupy(monkeypatch):
    cp = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    return cp


@pytest.fixture
def launches(monkeypatch):
    """``(kernel name, stream)`` of every simulated kernel launch from now on."""
    if not SIM:
        pytest.skip("records the simulator's launches")
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    seen = []
    configure = FakeCUDAKernel.__getitem__

    def __getitem__(self, config):
        seen.append((self.__name__, config[2] if len(config) > 2 else 0))
        return configure(self, config)

    monkeypatch.setattr(FakeCUDAKernel, "__getitem__", __getitem__)
    return seen


# --------------------------------------------------------------------------- helpers
def to_device(a):
    return cuda.to_device(a)


def _step_two(a):
    """Index of every other element along the last axis (a view of twice the length)."""
    return (slice(None),) * (a.ndim - 1) + (slice(None, None, 2),)


def _spread(a):
    """A host array twice as long on the last axis, ``a`` in its even columns, junk between.

    The junk is NaN for floats and 100 (outside every index range) for indices, so a
    kernel reading a gap shows up in the result or as an error.
    """
    big = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan if a.dtype.kind == "f" else 100,
                  dtype=a.dtype)
    big[_step_two(a)] = a
    return big


def to_device_strided(a):
    """A device view equal to ``a`` with a stride of 2 elements on the last axis."""
    return cuda.to_device(_spread(a))[_step_two(a)]


def to_device_fortran(a):
    return cuda.to_device(np.asfortranarray(a))


PUTS = {"strided": to_device_strided, "fortran": to_device_fortran}


def is_device_array(a):
    return not isinstance(a, np.ndarray) and getattr(a, "__cuda_ndarray__", False) is True


def as_tuple(value):
    return tuple(value) if isinstance(value, tuple) else (value,)


def assert_device_result(result, expected, dtype, *, host=lambda r: r.copy_to_host(),
                         is_kind=is_device_array):
    """``result`` has ``expected``'s structure; each array is of the right kind, dtype, shape, values."""
    def structure(value):  # the named-tuple type of a gradient, None for one array
        return type(value) if isinstance(value, tuple) else None

    assert structure(result) is structure(expected), (type(result), type(expected))
    assert len(as_tuple(result)) == len(as_tuple(expected))
    for position, (r, e) in enumerate(zip(as_tuple(result), as_tuple(expected))):
        assert is_kind(r), f"result {position} is a {type(r).__name__}"
        assert r.dtype == np.dtype(dtype), (position, r.dtype, dtype)
        assert tuple(r.shape) == e.shape, (position, r.shape, e.shape)
        np.testing.assert_allclose(host(r), e, **tolerance(dtype), err_msg=f"result {position}")


def assert_inputs_unchanged(device_args, before):
    for name, original in before.items():
        np.testing.assert_array_equal(device_args[name].copy_to_host(), original,
                                      err_msg=f"{name} was modified")


# --------------------------------------------------------------------------- the strict double
@pytest.mark.skipif(not SIM, reason="checks the simulator's strict mode")
def test_strict_device_arrays_refuse_the_numpy_api():
    """Guard: the strict fixture really bites, and leaves the real device API working."""
    d = cuda.to_device(np.arange(6.0).reshape(2, 3))
    for name in ("sum", "astype", "min", "max", "copy", "fill", "tolist", "item", "base"):
        with pytest.raises(AttributeError, match="DeviceNDArray API"):
            getattr(d, name)
    with pytest.raises(AttributeError):
        d.flags.writeable  # noqa: B018  (a dict on hardware)
    with pytest.raises(AssertionError, match="converted a device array"):
        np.asarray(d)
    with pytest.raises(AssertionError, match="read an element"):
        d[1, 2]  # noqa: B018
    assert d.flags["C_CONTIGUOUS"] and not d.flags["F_CONTIGUOUS"]
    assert (d.shape, d.strides, d.dtype, d.ndim, d.size, d.nbytes) == (
        (2, 3), (24, 8), np.dtype(np.float64), 2, 6, 48)
    assert d.is_c_contiguous() and d.T.is_f_contiguous()
    assert d.reshape(3, 2).shape == (3, 2) and d.ravel().shape == (6,)
    for flatten in (lambda a: a.reshape(4), lambda a: a.ravel()):
        with pytest.raises(NotImplementedError, match="requires copying"):
            flatten(d[:, ::2])
    np.testing.assert_array_equal(d[:, ::2].copy_to_host(), [[0.0, 2.0], [3.0, 5.0]])


# --------------------------------------------------------------------------- every op vs the oracle
@pytest.mark.parametrize(("name", "dtype", "index_dtype"), list(_reference_cases()))
def test_device_matches_reference(name, dtype, index_dtype):
    call = calls(dtype, index_dtype)[name]
    expected = call.expected()

    result, args = call.run(to_device)

    assert_device_result(result, expected, dtype)
    assert_inputs_unchanged(args, call.arrays)


SOFTMAX_CASES = [((4, 9), -1), ((4, 9), 0), ((2, 5, 3), 1), ((2, 5, 3), -3), ((7,), 0), ((19,), -1)]
SOFTMAX_IDS = [f"{len(shape)}d_axis{axis}" for shape, axis in SOFTMAX_CASES]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("shape", "axis"), SOFTMAX_CASES, ids=SOFTMAX_IDS)
def test_softmax_and_grad_on_every_axis(shape, axis, dtype):
    rng = np.random.default_rng(36)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = _reference.softmax(x, axis).astype(dtype)
    d_x, d_g, d_y = (cuda.to_device(a) for a in (x, g, y))

    assert_device_result(nbs.softmax(d_x, axis=axis), _reference.softmax(x, axis), dtype)
    assert_device_result(nbs.softmax_grad(d_g, d_y, axis), _reference.softmax_grad(g, y, axis),
                         dtype)
    for d, a in ((d_x, x), (d_g, g), (d_y, y)):
        np.testing.assert_array_equal(d.copy_to_host(), a)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", INPLACE)
def test_inplace_writes_into_the_device_o_and_returns_it(name, dtype, layout):
    call = calls(dtype, np.int32)[name]
    expected = call.expected()
    put = to_device if layout == "contiguous" else to_device_strided
    o = put(call.arguments["o"])

    args = {k: (o if k == "o" else to_device(a)) for k, a in call.arrays.items()}
    result = call.func(**{**call.arguments, **args}, inplace=True)

    assert result is o
    np.testing.assert_allclose(o.copy_to_host(), expected, **tolerance(dtype))
    assert_inputs_unchanged({k: d for k, d in args.items() if k != "o"},
                            {k: a for k, a in call.arrays.items() if k != "o"})


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_with_another_dtype_is_a_type_error_and_writes_nothing(name):
    call = calls(np.float32)[name]
    wider = "W" if name == "sparse_block_gemv" else "x"  # makes the result float64, o float32
    args = {k: to_device(a.astype(np.float64) if k == wider else a) for k, a in call.arrays.items()}
    with pytest.raises(TypeError, match="result dtype float64"):
        call.func(**{**call.arguments, **args}, inplace=True)
    np.testing.assert_array_equal(args["o"].copy_to_host(), call.arguments["o"])


@pytest.mark.parametrize("name", CALLS)
def test_empty_batch(name):
    product, hsm = PRODUCT_EMPTY, HSM_EMPTY
    call = calls(np.float32, np.uint8, product, hsm)[name]
    if name.startswith("softmax"):  # no batch: an empty leading axis instead
        call = call.replace(**{k: np.empty((0,) + a.shape[1:], a.dtype)
                               for k, a in call.arrays.items()})
    if call.func is nbs.h_softmax:  # the oracle cannot reshape an empty batch
        width = () if call.arguments["target"] is not None else (hsm.n_outputs,)
        expected = np.empty((0, *width), np.float32)
    elif call.func is nbs.h_softmax_grad:  # no rows: every gradient is zero
        expected = nbs.HSoftmaxGrad(*(np.zeros(call.arguments[k].shape, np.float32)
                                      for k in nbs.HSoftmaxGrad._fields))
    else:
        expected = call.expected()

    result, _ = call.run(to_device)

    assert_device_result(result, expected, np.float32)


@pytest.mark.parametrize("name", [n for n in CALLS if n != "softmax"])
def test_mixed_float32_float64_gives_the_result_type(name):
    call = calls(np.float32, np.int32)[name]
    first = next(k for k, a in call.arrays.items() if a.dtype.kind == "f")
    call = call.replace(**{first: call.arrays[first].astype(np.float64)})
    floats = [k for k, a in call.arrays.items() if a.dtype.kind == "f"]
    promoted = call.replace(**dict(zip(floats, in_result_dtype(*(call.arrays[k] for k in floats)))))

    result, _ = call.run(to_device)

    assert_device_result(result, promoted.expected(), np.float64)


@pytest.mark.parametrize("layout", list(PUTS))
@pytest.mark.parametrize("name", CALLS)
def test_non_contiguous_device_inputs(name, layout):
    call = calls(np.float64, np.int64)[name]
    result, args = call.run(PUTS[layout])
    multi_dim = [k for k, a in call.arrays.items() if a.ndim > 1]
    assert multi_dim and not [k for k in multi_dim if args[k].is_c_contiguous()]  # guard
    assert_device_result(result, call.expected(), np.float64)
    assert_inputs_unchanged(args, call.arrays)


# --------------------------------------------------------------------------- validation on device
INDEX_ERRORS = [  # (call, argument, {position: value}, the first bad position, the range)
    ("sparse_block_gemv", "input_idx", {(1, 1): 4}, "1, 1", "[0, 4) (W has 4 input blocks)"),
    ("sparse_block_gemv", "output_idx", {(2, 0): -1, (2, 1): 9}, "2, 0",
     "[0, 3) (W has 3 output blocks)"),
    ("sparse_block_dot", "output_idx", {(0, 1): 3}, "0, 1", "[0, 3) (W has 3 output blocks)"),
    ("sparse_block_dot", "input_idx", {(2, 1): -7}, "2, 1", "[0, 4) (W has 4 input blocks)"),
    ("sparse_block_outer", "x_idx", {(2, 1): -3}, "2, 1", "[0, 4) (o has 4 x blocks)"),
    ("sparse_block_outer", "y_idx", {(1, 0): 7, (0, 1): -1}, "0, 1", "[0, 3) (o has 3 y blocks)"),
    ("sparse_block_dot_grad", "input_idx", {(0, 0): -1}, "0, 0", "[0, 4) (W has 4 input blocks)"),
    ("h_softmax[target]", "target", {(2,): 10}, "2", "[0, 10) (n_outputs = 10)"),
    ("h_softmax[target]", "target", {(0,): -1, (4,): 99}, "0", "[0, 10) (n_outputs = 10)"),
    ("h_softmax_grad[target]", "target", {(4,): 12}, "4", "[0, 10) (n_outputs = 10)"),
    ("h_softmax_nll", "target", {(1,): 10}, "1", "[0, 10) (n_outputs = 10)"),
    ("h_softmax_nll_grad", "target", {(3,): -2}, "3", "[0, 10) (n_outputs = 10)"),
]


def _bad_call(name, argument, values, index_dtype=np.int64):
    call = calls(np.float64, index_dtype)[name]
    bad = call.arguments[argument].copy()
    for position, value in values.items():
        bad[position] = value
    return call.replace(**{argument: bad})


@pytest.mark.parametrize(("name", "argument", "values", "where", "allowed"), INDEX_ERRORS,
                         ids=[f"{c[0]}-{c[1]}-{'+'.join(map(str, c[2].values()))}"
                              for c in INDEX_ERRORS])
def test_index_errors_match_the_host_message(name, argument, values, where, allowed):
    call = _bad_call(name, argument, values)
    first = values[next(iter(sorted(values)))]
    with pytest.raises(IndexError) as on_host:
        call.func(**call.arguments)
    with pytest.raises(IndexError) as on_device:
        call.run(to_device)
    assert str(on_device.value) == str(on_host.value)
    assert str(on_device.value) == f"{argument}[{where}] = {first} is outside {allowed}"


def test_index_error_with_unsigned_indices_on_device():
    call = _bad_call("sparse_block_gemv", "output_idx", {(1, 1): 200}, np.uint8)
    with pytest.raises(IndexError, match=r"^output_idx\[1, 1\] = 200 is outside \[0, 3\)"):
        call.run(to_device)


@pytest.mark.parametrize(("name", "argument"), [("sparse_block_gemv", "output_idx"),
                                                ("sparse_block_outer", "x_idx")])
def test_inplace_index_error_writes_nothing(name, argument):
    call = _bad_call(name, argument, {(1, 0): -2})
    args = {k: to_device(a) for k, a in call.arrays.items()}
    with pytest.raises(IndexError, match=rf"^{argument}\[1, 0\] = -2 is outside"):
        call.func(**{**call.arguments, **args}, inplace=True)
    assert_inputs_unchanged(args, call.arrays)  # o included


# --------------------------------------------------------------------------- deterministic=True
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_is_bitwise_reproducible(name, dtype):
    call = calls(dtype, np.int32, hsm=HSM_SMALL)[name]
    args = {k: to_device(a) for k, a in call.arrays.items()}
    runs = [call.func(**{**call.arguments, **args}, deterministic=True) for _ in range(3)]
    first = [r.copy_to_host() for r in as_tuple(runs[0])]
    for other in runs[1:]:
        for a, b in zip(first, as_tuple(other)):
            np.testing.assert_array_equal(b.copy_to_host(), a)
    assert_device_result(runs[0], call.expected(), dtype)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_launches_no_atomic_kernel(launches, name):
    """The simulator cannot show atomics' run-to-run variation: check the path taken instead."""
    call = calls(np.float64, np.int32, hsm=HSM_SMALL)[name]
    call.run(to_device, deterministic=True)
    kernels = {kernel for kernel, _ in launches}
    assert not {k for k in kernels if "atomic" in k}, kernels
    assert {k for k in kernels if "segments" in k}, kernels
    launches.clear()
    call.run(to_device)  # the default: atomics
    assert {k for k, _ in launches if "atomic" in k}


# --------------------------------------------------------------------------- CuPy in, CuPy out
def _cupy_put(cp, layout="contiguous", readonly=False):
    def put(a):
        memory = _spread(a)[_step_two(a)] if layout == "strided" else np.array(a, copy=True)
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


def test_calls_cover_every_public_function():
    """Guard: the sweeps above call every function of the API (and each mode)."""
    funcs = {c.func.__name__ for c in calls(np.float64).values()}
    public = {n for n in nbs.__all__ if inspect.isfunction(getattr(nbs, n))}
    assert funcs == public
