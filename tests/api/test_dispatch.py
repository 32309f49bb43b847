"""The backend choice: the array kind in picks the backend and the kind out.

- NumPy in, NumPy out: every result is exactly ``np.ndarray``. Decision for
  ndarray subclasses: they are NumPy arrays, so they run on the host, and the
  result is a plain ``np.ndarray`` (the kernels write into fresh base-class
  arrays); only ``inplace=True`` returns the caller's ``o`` object itself.
- Device arrays (a ``__cuda_array_interface__`` or a ``__cuda_ndarray__ = True``
  flag) are recognised by attribute alone and run on the GPU backend; the host
  side never converts them to NumPy (no ``__array__``, no buffer protocols, no
  item access): only the kernels read their data. Numba device arrays come back
  as device arrays; an object with only ``__cuda_array_interface__`` (neither
  CuPy nor Numba) gets a Numba device array, or itself with ``inplace=True``.
  tests/device/ checks every op, CuPy in/CuPy out and the strict API.
- Host and device arrays mixed in one call: ``TypeError`` naming both sides,
  raised by ``select()`` from attributes alone, before any data is read.
- ``import nbsparse`` imports neither Numba nor numba.cuda nor CuPy.
- The result dtype is ``np.result_type`` of the float inputs (never of the indices).
"""

import re
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from nbsparse._optable import OPS, Sizes, problem, tolerance
from tests.support.rows import OpRow


# --------------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class Spec(OpRow):
    """A row of the op table and valid arguments for it (the default ``Sizes``: batch 3)."""

    op: object

    def build(self, dtype=np.float64, overrides=None, index_dtype=np.int64):
        """Valid keyword arguments: floats of ``dtype`` except ``overrides`` (name -> dtype)."""
        args = self.op.kwargs(problem(Sizes(), dtype, np.random.default_rng(0), index_dtype))
        overrides = overrides or {}
        return {k: a.astype(overrides[k]) if k in overrides else a for k, a in args.items()}

    @property
    def floats(self):
        return list(self.op.floats)

    @property
    def arrays(self):
        return list(self.op.arrays)


SPECS = [Spec(op) for op in OPS]
SPEC = {s.name: s for s in SPECS}
by_spec = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)


def results(value):
    """The result arrays of a call: the array itself, or every field of a gradient tuple."""
    return list(value) if isinstance(value, tuple) else [value]


# --------------------------------------------------------------------------- NumPy in, NumPy out
@by_spec
def test_numpy_in_numpy_out(spec):
    for r in results(spec.func(**spec.build())):
        assert type(r) is np.ndarray, type(r)


class Tagged(np.ndarray):
    """A trivial ndarray subclass."""


@by_spec
def test_ndarray_subclass_runs_on_host_and_returns_plain_ndarray(spec):
    args = spec.build()
    args = {k: a.view(Tagged) if isinstance(a, np.ndarray) else a for k, a in args.items()}
    for r in results(spec.func(**args)):
        assert type(r) is np.ndarray, type(r)


@pytest.mark.parametrize("name", ["sparse_block_gemv", "sparse_block_outer"])
@pytest.mark.parametrize("cls", [np.ndarray, Tagged], ids=["ndarray", "subclass"])
def test_inplace_returns_o_itself(name, cls):
    args = SPEC[name].build()
    o = args["o"] = args["o"].view(cls)
    before = o.copy()
    result = SPEC[name].func(**args, inplace=True)
    assert result is o
    assert not np.array_equal(np.asarray(o), np.asarray(before))  # it was written into


# --------------------------------------------------------------------------- device doubles
class _Recording:
    """Metadata of an array; every host-side way to reach its data records the attempt and fails.

    The NumPy protocols (``__array__``, ``__array_interface__``, ``__array_struct__``),
    the sequence and number protocols and the host-copy methods of CuPy and Numba
    all raise: nbsparse must reach a device array's data only through a kernel.
    """

    def __init__(self, template):
        self.shape, self.dtype = template.shape, template.dtype
        self.ndim, self.size, self.strides = template.ndim, template.size, template.strides
        self.touched = []

    def _touch(self, what):
        self.touched.append(what)
        raise AssertionError(f"nbsparse touched the data of a device array via {what}")

    def __array__(self, *args, **kwargs):
        self._touch("__array__")

    @property
    def __array_interface__(self):
        self._touch("__array_interface__")

    @property
    def __array_struct__(self):
        self._touch("__array_struct__")

    def __len__(self):
        self._touch("__len__")

    def __iter__(self):
        self._touch("__iter__")

    def __getitem__(self, key):
        self._touch("__getitem__")

    def __setitem__(self, key, value):
        self._touch("__setitem__")

    def __float__(self):
        self._touch("__float__")

    def __index__(self):
        self._touch("__index__")

    def __bool__(self):
        self._touch("__bool__")

    def copy_to_host(self, *args, **kwargs):  # Numba device arrays
        self._touch("copy_to_host")

    def get(self, *args, **kwargs):  # CuPy
        self._touch("get")

    def tolist(self):
        self._touch("tolist")


class CAIArray(_Recording):
    """Has only ``__cuda_array_interface__`` (like numba-cuda's ``ForeignArray`` test double).

    The interface points at a C-contiguous host copy of ``template`` that the
    double keeps alive: under the CUDA simulator nbsparse reads a CAI pointer as
    host memory (the simulator has no device memory of its own), so the kernels can run on it. On a real GPU that
    pointer is not device memory: only calls that raise before reading data may
    use this double there.
    """

    def __init__(self, template):
        super().__init__(template)
        self.memory = np.array(template, order="C", copy=True)
        self.strides = self.memory.strides
        self.__cuda_array_interface__ = {
            "shape": self.memory.shape, "typestr": self.memory.dtype.str, "strides": None,
            "data": (self.memory.ctypes.data, False), "version": 3,
        }


class FlaggedArray(_Recording):
    """Has only the ``__cuda_ndarray__`` flag (Numba's CUDA-simulator arrays) and no data.

    For calls that raise before any data is read: ``select()`` decides the mixing
    TypeError from attributes alone (``array_kind``), before building a backend.
    """

    __cuda_ndarray__ = True


DOUBLES = pytest.mark.parametrize("double", [CAIArray, FlaggedArray],
                                  ids=["cuda_array_interface", "cuda_ndarray_flag"])


def test_doubles_are_not_numpy_arrays():
    """Guard for the tests below: the doubles cannot be mistaken for host data."""
    template = np.zeros((2, 3))
    for double in (CAIArray(template), FlaggedArray(template)):
        assert not isinstance(double, np.ndarray)
        with pytest.raises(AssertionError):
            np.asarray(double)
        assert double.touched
    assert not hasattr(FlaggedArray(template), "__cuda_array_interface__")


def test_cai_double_points_at_its_own_memory():
    """Guard: the interface describes the double's host buffer, which holds the template."""
    template = np.arange(6.0).reshape(2, 3)[:, ::-1]  # not C-contiguous
    double = CAIArray(template)
    interface = double.__cuda_array_interface__
    assert interface["data"] == (double.memory.ctypes.data, False)
    assert interface["shape"] == template.shape and interface["typestr"] == template.dtype.str
    np.testing.assert_array_equal(double.memory, template)


def _with_devices(args, device_names, double):
    doubles = {name: double(args[name]) for name in device_names}
    return {**args, **doubles}, doubles


def _is_device_array(a):
    return getattr(a, "__cuda_ndarray__", False) and not isinstance(a, np.ndarray)


def _host_copy(a):
    return a.memory if isinstance(a, CAIArray) else a.copy_to_host()


def _simulator():
    from nbsparse._cuda.launch import SIM  # imports numba.cuda: only in device tests

    return SIM


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["cuda_array_interface", "numba_device_array"])
@by_spec
def test_device_arrays_run_and_come_back_as_device_arrays(spec, kind, small_blocks):
    from numba import cuda

    if kind == "cuda_array_interface" and not _simulator():
        pytest.skip("the CAI double's pointer is host memory: simulator only")
    put = CAIArray if kind == "cuda_array_interface" else cuda.to_device
    host_args = spec.build()
    args = {k: put(a) if k in spec.arrays else a for k, a in host_args.items()}
    expected = results(spec.func(**host_args))

    got = results(spec.func(**args))

    assert len(got) == len(expected)
    for r, e in zip(got, expected):
        assert _is_device_array(r), type(r)
        assert r.dtype == e.dtype and tuple(r.shape) == e.shape
        np.testing.assert_allclose(r.copy_to_host(), e, **tolerance(np.float64))
    for name in spec.arrays:  # inputs unchanged
        np.testing.assert_array_equal(_host_copy(args[name]), host_args[name], err_msg=name)
    touched = {k: args[k].touched for k in spec.arrays if isinstance(args[k], CAIArray)}
    assert not any(touched.values()), touched  # CAI doubles were never read on the host


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["sparse_block_gemv", "sparse_block_outer"])
def test_inplace_on_a_cai_double_writes_its_memory_and_returns_it(name, small_blocks):
    if not _simulator():
        pytest.skip("the CAI double's pointer is host memory: simulator only")
    spec = SPEC[name]
    host_args = spec.build()
    args, doubles = _with_devices(host_args, spec.arrays, CAIArray)
    expected = spec.func(**host_args)

    result = spec.func(**args, inplace=True)

    assert result is args["o"]
    np.testing.assert_allclose(args["o"].memory, expected, rtol=1e-12)
    assert all(d.touched == [] for d in doubles.values())


MIXES = [  # (spec, the arguments on the device; every other array is on the host)
    ("sparse_block_gemv", ["h"]),
    ("sparse_block_gemv", ["o"]),
    ("sparse_block_gemv", ["W", "input_idx"]),
    ("sparse_block_gemv", ["o", "W", "h", "input_idx"]),  # only output_idx on the host
    ("sparse_block_dot", ["b"]),
    ("sparse_block_dot", ["output_idx"]),
    ("sparse_block_outer", ["y_idx"]),
    ("sparse_block_outer", ["x", "y"]),
    ("sparse_block_dot_grad", ["grad_output"]),
    ("softmax_grad", ["y"]),
    ("softmax_grad", ["grad_output"]),
    ("h_softmax", ["x"]),
    ("h_softmax[target]", ["target"]),  # indices on the device, weights on the host
    ("h_softmax[target]", ["x", "W1", "b1", "W2", "b2"]),  # only the target on the host
    ("h_softmax_grad", ["grad_output"]),
    ("h_softmax_grad[target]", ["target"]),
    ("h_softmax_grad[target]", ["W2", "b2"]),
    ("h_softmax_nll", ["target"]),
    ("h_softmax_nll_grad", ["grad_output"]),
]


def _sides(message):
    """The argument names the message puts on the host and on the device."""
    host = re.search(r"(\w+(?:, \w+)*) on the host", message)
    device = re.search(r"(\w+(?:, \w+)*) on the (?:GPU|device)", message)
    assert host and device, message
    return set(host.group(1).split(", ")), set(device.group(1).split(", "))


@DOUBLES
@pytest.mark.parametrize(("name", "on_device"), MIXES,
                         ids=[f"{n}-{'+'.join(d)}" for n, d in MIXES])
def test_mixing_host_and_device_is_a_type_error_naming_both_sides(name, on_device, double):
    spec = SPEC[name]
    args, doubles = _with_devices(spec.build(), on_device, double)
    with pytest.raises(TypeError, match="mix") as info:
        spec.func(**args)
    host, device = _sides(str(info.value))
    assert device == set(on_device)
    assert host == set(spec.arrays) - set(on_device)  # a None target is no argument on a side
    assert all(d.touched == [] for d in doubles.values())


@DOUBLES
def test_mixing_with_inplace_names_both_sides_and_writes_nothing(double):
    spec = SPEC["sparse_block_gemv"]
    args, doubles = _with_devices(spec.build(), ["W"], double)
    before = args["o"].copy()
    with pytest.raises(TypeError, match="mix"):
        spec.func(**args, inplace=True)
    np.testing.assert_array_equal(args["o"], before)
    assert doubles["W"].touched == []


# --------------------------------------------------------------------------- imports
def _run_python(code):
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


_ASSERT_LIGHT = """
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("numba", "numba_cuda", "cupy", "llvmlite")
               or m.startswith(("nbsparse._cpu", "nbsparse._cuda", "nbsparse._device")))
assert not heavy, heavy
"""


def test_import_loads_no_numba_cuda_or_cupy():
    _run_python("import sys, nbsparse\nassert nbsparse.__version__" + _ASSERT_LIGHT)


def test_validation_errors_load_no_numba():
    """Errors are raised before a kernel module is even imported, let alone compiled."""
    _run_python("""
import sys
import numpy as np
import nbsparse as nbs
W, h, o = np.zeros((5, 6, 7, 8)), np.zeros((3, 2, 7)), np.zeros((3, 4, 8))
try:
    nbs.sparse_block_gemv(o, W, h, np.full((3, 2), 5), np.zeros((3, 4), int), inplace=True)
except IndexError:
    pass
else:
    raise SystemExit("no IndexError")
for call in (lambda: nbs.softmax(np.zeros(3), axis=1), lambda: nbs.softmax([1.0])):
    try:
        call()
    except (TypeError, ValueError):
        pass
    else:
        raise SystemExit("no error")
""" + _ASSERT_LIGHT)


# --------------------------------------------------------------------------- result dtype
def _dtype_cases():
    for spec in SPECS:
        yield pytest.param(spec, {}, np.float32, id=f"{spec.name}-all-float32")
        for name in spec.floats:
            if len(spec.floats) > 1:
                yield pytest.param(spec, {name: np.float64}, np.float32,
                                   id=f"{spec.name}-{name}-float64")
                yield pytest.param(spec, {name: np.float32}, np.float64,
                                   id=f"{spec.name}-{name}-float32")
        yield pytest.param(spec, {}, np.float64, id=f"{spec.name}-all-float64")


@pytest.mark.parametrize(("spec", "overrides", "dtype"), list(_dtype_cases()))
def test_result_dtype_is_result_type_of_the_floats(spec, overrides, dtype):
    args = spec.build(dtype, overrides, index_dtype=np.int8)  # indices never enter the dtype
    expected_dtype = np.result_type(*(args[n].dtype for n in spec.floats))
    result = spec.func(**args)
    names = result._fields if isinstance(result, tuple) else (None,)
    for name, r in zip(names, results(result)):
        expected = np.dtype(np.intp) if name in spec.op.index_results else expected_dtype
        assert r.dtype == expected, (name, r.dtype, expected)
    # Mixed inputs are converted to the result dtype (exactly, as float32 -> float64
    # is exact): the same call with every float already in that dtype agrees.
    promoted = {k: (a.astype(expected_dtype) if k in spec.floats else a) for k, a in args.items()}
    tol = {"rtol": 1e-5, "atol": 1e-6} if expected_dtype == np.float32 else {"rtol": 1e-12}
    for r, e in zip(results(result), results(spec.func(**promoted))):
        np.testing.assert_allclose(r, e, **tol)


@pytest.mark.parametrize("name", ["sparse_block_gemv", "sparse_block_outer"])
def test_inplace_with_float64_o_and_float32_inputs_keeps_float64(name):
    spec = SPEC[name]
    others = {n: np.float32 for n in spec.floats if n != "o"}
    args = spec.build(np.float64, others)
    expected = spec.func(**args)
    result = spec.func(**args, inplace=True)
    assert result is args["o"] and result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-12)
