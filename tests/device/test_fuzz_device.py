"""Fuzzing every public function and mode on device arrays (the CUDA simulator by default).

The same drawn calls as tests/robustness/test_fuzz.py (see tests/support/fuzzing.py), fewer of them
(the simulator runs a CUDA thread as a Python thread): each argument is put on
the device in its drawn layout (C, F, strided, negative strides; an ``o`` that
aliases another argument shares one device buffer with it), read-only arguments
as a CUDA-array-interface object flagged read-only, and the device arrays are the
strict double of tests/support/device.py (only Numba's real ``DeviceNDArray`` API).
Results come back as device arrays and are compared with the oracle as on the
host; every device buffer is compared byte for byte afterwards.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import cuda

import nbsparse as nbs
from nbsparse import _reference
from nbsparse._cuda import launch
from tests.support.device import FakeCupyArray, is_device_array
from tests.support.fuzzing import (
    OPS,
    as_tuple,
    assert_values,
    calls,
    examples,
    truncated_class_problem,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.usefixtures("strict_device_arrays", "small_blocks"),
    # The simulator runs kernels as Python on NumPy scalars, which warn where a GPU
    # silently computes NaN or inf (0 * inf, inf - inf, exp overflow): the values are
    # what this test checks, so these warnings (and only these) are not errors here.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                               "ignore:overflow encountered:RuntimeWarning"),
]


class DeviceArgs:
    """The drawn host arguments moved to the device, each in its drawn layout."""

    def __init__(self, fz):
        self.fz = fz
        self.backings = {}  # id(host backing) -> device backing (or host memory of a CAI object)
        self.args = {}
        for name, p in fz.arrays.items():
            readonly = not p.view.flags.writeable
            if readonly and launch.SIM:
                # Host memory behind a read-only CUDA array interface: the simulator reads
                # it as device memory (a real GPU run gets a writeable Numba array instead).
                memory = self.backings.setdefault(id(p.backing), p.backing.copy())
                self.args[name] = FakeCupyArray(p.viewer(memory), readonly=True)
            else:
                backing = self.backings.setdefault(id(p.backing), cuda.to_device(p.backing))
                self.args[name] = p.viewer(backing)

    def kwargs(self):
        out = {**self.args, **self.fz.others}
        if self.fz.inplace:
            out["inplace"] = True
        return out

    def bytes_now(self, key):
        backing = self.backings[key]
        host = backing if isinstance(backing, np.ndarray) else backing.copy_to_host()
        return host.tobytes()


def check_device_call(fz):
    expected = fz.expected()
    d = DeviceArgs(fz)

    result = fz.func(**d.kwargs())

    dtype = fz.result_dtype
    for position, (got, want) in enumerate(zip(as_tuple(result), as_tuple(expected), strict=True)):
        assert is_device_array(got), type(got)
        assert_values(got.copy_to_host(), want, dtype, f"{fz.op} result {position}")
    assert (result is d.args.get("o")) == fz.inplace
    o_now = result.copy_to_host() if fz.inplace else None
    for name, p in fz.arrays.items():
        want = p.backing.copy()
        if o_now is not None and p.backing is fz.arrays["o"].backing:
            fz.arrays["o"].viewer(want)[...] = o_now
        assert d.bytes_now(id(p.backing)) == want.tobytes(), f"{name}'s device memory changed"


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=examples(0.25),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_device_fuzz_against_the_reference(op, data):
    check_device_call(data.draw(calls(op), label="call"))


def test_truncated_class_nan_reaches_the_class_gradient_on_device():
    g, args = truncated_class_problem()
    with np.errstate(all="ignore"):
        expected = _reference.h_softmax_grad(g, *args)
    result = nbs.h_softmax_grad(cuda.to_device(g), *(
        cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args))
    for name, got, want in zip(expected._fields, result, expected):
        np.testing.assert_array_equal(np.isnan(got.copy_to_host()), np.isnan(want), err_msg=name)


# --------------------------------------------------------------------------- aliasing on the device
def _gemv_device(rng):
    W = cuda.to_device(rng.standard_normal((2, 3, 4, 4)))
    h = cuda.to_device(rng.standard_normal((3, 2, 4)))
    return W, h, cuda.to_device(rng.integers(0, 2, (3, 2))), cuda.to_device(rng.integers(0, 3, (3, 2)))


@pytest.fixture
def assignments(monkeypatch):
    """Every device-to-device copy the backend makes (``_device._assign``)."""
    from nbsparse import _device

    seen = []
    assign = _device._assign

    def recording(dst, src, stream):
        seen.append(tuple(dst.shape))
        return assign(dst, src, stream)

    monkeypatch.setattr(_device, "_assign", recording)
    return seen


def test_inplace_into_its_own_memory_copies_nothing(assignments):
    W, h, input_idx, output_idx = _gemv_device(np.random.default_rng(11))
    o_host = np.random.default_rng(12).standard_normal((3, 2, 4))
    o = cuda.to_device(o_host)
    expected = _reference.sparse_block_gemv(o_host, W.copy_to_host(), h.copy_to_host(),
                                            input_idx.copy_to_host(), output_idx.copy_to_host())

    assert nbs.sparse_block_gemv(o, W, h, input_idx, output_idx, inplace=True) is o

    assert assignments == []  # the kernel wrote into o directly
    np.testing.assert_allclose(o.copy_to_host(), expected, rtol=1e-12)


def test_inplace_o_inside_h_on_the_device_gives_the_result_on_copies(assignments):
    W, _, input_idx, output_idx = _gemv_device(np.random.default_rng(13))
    memory = cuda.to_device(np.random.default_rng(14).standard_normal(3 * 2 * 4))
    h = memory.reshape(3, 2, 4)
    o = memory.reshape(3, 2, 4)  # o is h
    before = memory.copy_to_host().reshape(3, 2, 4)
    expected = _reference.sparse_block_gemv(before, W.copy_to_host(), before,
                                            input_idx.copy_to_host(), output_idx.copy_to_host())

    assert nbs.sparse_block_gemv(o, W, h, input_idx, output_idx, inplace=True) is o

    assert assignments == [(3, 2, 4)] * 2  # o copied aside, the result copied back into o
    np.testing.assert_allclose(o.copy_to_host(), expected, rtol=1e-12)
