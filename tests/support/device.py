"""Doubles and helpers for the tests of the public API on device arrays.

- The *strict* simulator (:func:`make_strict`): a simulated device array answers
  only the API of Numba's real ``DeviceNDArray``. The simulator's ``FakeCUDAArray``
  forwards every unknown attribute to the NumPy array it wraps, and
  ``np.asarray(d)`` is a zero-copy host view there, while on a GPU the former
  is an AttributeError and the latter a silent device-to-host copy; strict, both
  fail here as they would (or should) on a GPU.
- A fake ``cupy`` module (:func:`make_fake_cupy`): its arrays expose a
  ``__cuda_array_interface__`` over host memory, which the simulator reads as
  device memory, so the CuPy path (CuPy in, CuPy out, CuPy's stream) runs
  without a GPU.
- The device sweep over the op table (:func:`calls`) on small problems, and the
  result checks.
"""

import types
from dataclasses import dataclass

import numpy as np
import pytest
from numba import cuda

from nbsparse import _reference
from nbsparse._cuda import launch
from nbsparse._optable import OPS
from tests.support.assertions import tolerance
from tests.support.cases import HSoftmaxCase, ProductCase
from tests.support.rows import OpRow

SIM = launch.SIM

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
class Call(OpRow):
    """One row of the op table with its arguments by name (host arrays, ints, axis)."""

    op: object
    arguments: dict

    @property
    def arrays(self):
        return {k: a for k, a in self.arguments.items() if isinstance(a, np.ndarray)}

    def expected(self):
        """The oracle's result, computed from the host arguments."""
        return self.op.reference(**self.arguments)

    def run(self, put, **flags):
        """The call with every array argument replaced by ``put(array)``; returns (result, args)."""
        args = {k: put(a) if isinstance(a, np.ndarray) else a for k, a in self.arguments.items()}
        return self.func(**args, **flags), args

    def replace(self, **arguments):
        return Call(self.op, {**self.arguments, **arguments})

def calls(dtype, index_dtype=np.int64, product=PRODUCT, hsm=HSM):
    """Every row of the op table, by name, on small problems of ``dtype``."""
    p = product.make(dtype, index_dtype)
    h = hsm.make(dtype, index_dtype)
    rng = np.random.default_rng(35)
    x = (3 * rng.standard_normal(SOFTMAX_SHAPE)).astype(dtype)
    y = _reference.softmax(x, SOFTMAX_AXIS).astype(dtype)
    problem = {
        "o": p.o, "W": p.W, "h": p.h, "input_idx": p.input_idx, "b": p.b, "output_idx": p.output_idx,
        "grad_output": p.grad, "outer_o": p.outer_o, "alpha": ALPHA,
        "logits": x, "logits_grad": x / 3, "probs": y, "axis": SOFTMAX_AXIS,
        **dict(zip(["x", "batch_size", "n_outputs", "n_classes", "n_outputs_per_class",
                    "W1", "b1", "W2", "b2"], h.call())), "target": h.target,
        "hsm_grad_output": rng.standard_normal((h.x.shape[0], h.n_outputs)).astype(dtype),
        "hsm_target_grad_output": rng.standard_normal(h.x.shape[0]).astype(dtype),
        "k": min(3, h.n_outputs), "seed": 2024,
        "candidates": rng.integers(0, h.n_outputs, (h.x.shape[0], 2)).astype(index_dtype),
    }
    return {op.name: Call(op, op.kwargs(problem)) for op in OPS}

CALLS = [op.name for op in OPS]
DETERMINISTIC = [op.name for op in OPS if op.accumulates]
INPLACE = [op.name for op in OPS if op.inplace]

def reference_cases():
    """(call, dtype, index dtype): every index dtype for calls with index arguments."""
    for name, call in calls(np.float64).items():
        takes_indices = bool(call.arrays.keys() & {"input_idx", "x_idx", "target", "candidates"})
        index_dtypes = INDEX_DTYPES if takes_indices else [np.int64]
        for dtype in FLOATS:
            for index_dtype in index_dtypes:
                yield pytest.param(name, dtype, index_dtype,
                                   id=f"{name}-{np.dtype(dtype)}-{np.dtype(index_dtype)}")

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

def make_strict(monkeypatch):
    """Make simulated device arrays answer only the real ``DeviceNDArray`` API (undone with ``monkeypatch``).

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
    """A module standing in for ``cupy``: ``ndarray``, ``asarray``, ``zeros_like`` and ``cuda.get_current_stream``."""
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

    def zeros_like(a, order="K"):
        return cp.ndarray(np.zeros(a.shape, dtype=a.dtype, order="C" if order in "CK" else order))

    cp.asarray = asarray
    cp.zeros_like = zeros_like
    cp.cuda = types.SimpleNamespace(get_current_stream=get_current_stream)
    return cp

def record_launches(monkeypatch):
    """A list that receives ``(kernel name, stream)`` of every simulated kernel launch from now on."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    seen = []
    configure = FakeCUDAKernel.__getitem__

    def __getitem__(self, config):
        seen.append((self.__name__, config[2] if len(config) > 2 else 0))
        return configure(self, config)

    monkeypatch.setattr(FakeCUDAKernel, "__getitem__", __getitem__)
    return seen

def to_device(a):
    return cuda.to_device(a)

def step_two(a):
    """Index of every other element along the last axis (a view of twice the length)."""
    return (slice(None),) * (a.ndim - 1) + (slice(None, None, 2),)

def spread(a):
    """A host array twice as long on the last axis, ``a`` in its even columns, junk between.

    The junk is NaN for floats and 100 (outside every index range) for indices, so a
    kernel reading a gap shows up in the result or as an error.
    """
    big = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan if a.dtype.kind == "f" else 100,
                  dtype=a.dtype)
    big[step_two(a)] = a
    return big

def to_device_strided(a):
    """A device view equal to ``a`` with a stride of 2 elements on the last axis."""
    return cuda.to_device(spread(a))[step_two(a)]

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
        want = e.dtype if e.dtype.kind in "iu" else np.dtype(dtype)  # output indices stay intp
        assert r.dtype == want, (position, r.dtype, want)
        assert tuple(r.shape) == e.shape, (position, r.shape, e.shape)
        np.testing.assert_allclose(host(r), e, **tolerance(want), err_msg=f"result {position}")

def assert_inputs_unchanged(device_args, before):
    for name, original in before.items():
        np.testing.assert_array_equal(device_args[name].copy_to_host(), original,
                                      err_msg=f"{name} was modified")
