"""The bad-input matrix of tests/support/errors.py on device arrays (the CUDA simulator).

Every case of the host table (``TABLE``: wrong kinds, dtypes, dimensions, shapes,
sizes, axes, read-only or wrongly typed ``o`` with ``inplace=True``), every
out-of-range index value of every index dtype (``test_index_out_of_range``'s
parameters) and the first-bad-position cases in every layout, called with the
arrays on the device. The device call must raise the same exception class with
the *same message* as the host call, and write nothing: each device buffer holds,
byte for byte, what it held before.

Two ways to be a device array: ``numba`` (``cuda.to_device``: the strict
``DeviceNDArray`` double of tests/support/device.py; read-only host arrays become a
CUDA-array-interface object flagged read-only) and ``cai`` (every array is a
CUDA-array-interface object over the host array's own memory, strides and
read-only flag included, as CuPy gives; simulator only), where the host
fingerprint of tests/support/errors.py applies unchanged. The in-place ops'
cases run both ways, the others as Numba arrays.
"""

import numpy as np
import pytest
from numba import cuda

from nbsparse._cuda import launch
from tests.support.device import FakeCupyArray, is_device_array
from tests.support.errors import (
    FIRST_BAD_ARGS,
    TABLE,
    assert_unchanged,
    fingerprint,
    index_params,
    layouts,
)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("strict_device_arrays", "small_blocks")]

KINDS = ["numba", pytest.param("cai", marks=pytest.mark.skipif(
    not launch.SIM, reason="host memory behind a CUDA array interface: simulator only"))]


class OnDevice:
    """The arguments of one call with every array on the device (see the module docstring)."""

    def __init__(self, args, kind):
        self.host, self.kind = args, kind
        self.before = fingerprint(args)
        # alpha is a scalar argument: an ndarray there is the caller's (wrong) scalar.
        self.args = {name: self._put(a) if isinstance(a, np.ndarray) and name != "alpha" else a
                     for name, a in args.items()}

    def _put(self, a):
        contiguous = a.flags.c_contiguous or a.flags.f_contiguous
        if self.kind == "cai" or not a.flags.writeable or not contiguous:
            return FakeCupyArray(a, readonly=not a.flags.writeable)  # a's own memory
        return cuda.to_device(a)

    def assert_unchanged(self):
        """Host memory (CAI objects view it) and device copies hold their bytes from before."""
        assert_unchanged(self.host, self.before)
        changed = [name for name, a in self.args.items() if is_device_array(a)
                   and a.copy_to_host().tobytes() != self.before[name]["bytes"]]
        assert changed == []


def host_error(func, args):
    with pytest.raises(Exception) as info:
        func(**args)
    return info.value


def assert_same_error_and_nothing_written(func, make_args, kind):
    expected = host_error(func, make_args())
    device = OnDevice(make_args(), kind)
    with pytest.raises(type(expected)) as info:
        func(**device.args)
    assert type(info.value) is type(expected)
    assert str(info.value) == str(expected)
    device.assert_unchanged()


def with_kinds(params):
    """Each parameter set as Numba device arrays; those of the in-place ops (whose ``o`` a
    wrong call must not touch) also as CUDA-array-interface objects over host memory."""
    for param in params:
        op = param.values[0]
        kinds = KINDS if op.extra.get("inplace") else KINDS[:1]
        for kind in kinds:
            kind_id = kind if isinstance(kind, str) else kind.values[0]
            marks = () if isinstance(kind, str) else kind.marks
            yield pytest.param(*param.values, kind_id, id=f"{param.id}-{kind_id}", marks=marks)


@pytest.mark.parametrize(("op", "case", "kind"), list(with_kinds(TABLE)))
def test_error_on_device(op, case, kind):
    assert_same_error_and_nothing_written(op.func, lambda: case.apply(op.args()), kind)


@pytest.mark.parametrize(("op", "name", "n", "what", "dtype", "value", "kind"),
                         list(with_kinds(index_params())))
def test_index_out_of_range_on_device(op, name, n, what, dtype, value, kind):
    def make_args():
        args = op.args()
        idx = args[name].astype(dtype)
        idx[(2,) if idx.ndim == 1 else (2, 1)] = value
        args[name] = idx
        return args

    assert_same_error_and_nothing_written(op.func, make_args, kind)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "negative-stride"])
@pytest.mark.parametrize(("op", "name", "n", "what"), FIRST_BAD_ARGS,
                         ids=[f"{op.name}-{name}" for op, name, *_ in FIRST_BAD_ARGS])
def test_first_bad_position_on_device(op, name, n, what, layout):
    def make_args():
        args = op.args()
        idx = args[name].copy()
        if idx.ndim == 1:
            idx[1], idx[2] = n + 3, -1
        else:
            idx[0, 1], idx[1, 0], idx[2, 1] = n + 3, -1, n
        args[name] = layouts(idx)[layout]
        return args

    kind = "numba" if layout in ("C", "F") else "cai"
    if kind == "cai" and not launch.SIM:
        pytest.skip("host memory behind a CUDA array interface: simulator only")
    assert_same_error_and_nothing_written(op.func, make_args, kind)
