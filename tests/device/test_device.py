"""The public API on device arrays: every op of the table against the NumPy oracle.

Runs under the CUDA simulator by default (tests/conftest.py), with
``launch.THREADS_PER_BLOCK`` shrunk to 8 so that tiny inputs span several blocks
with a ragged last one (``oSize`` 9), and the simulator made *strict*
(tests/support/device.py): a simulated device array answers only the API of
Numba's real ``DeviceNDArray``, so host code that calls NumPy methods on a
device array (``.sum``, ``.astype``, ``.flags.writeable``), or converts one to
NumPy behind the caller's back, fails here as it would (or would silently copy)
on a GPU. CuPy arrays, streams and real hardware: test_cupy.py.
"""

import inspect

import numpy as np
import pytest
from numba import cuda

import nbsparse as nbs
from nbsparse import _reference
from tests.support.assertions import in_result_dtype, tolerance
from tests.support.device import (
    CALLS,
    DETERMINISTIC,
    FLOATS,
    HSM_EMPTY,
    HSM_SMALL,
    INPLACE,
    PRODUCT_EMPTY,
    PUTS,
    SIM,
    as_tuple,
    assert_device_result,
    assert_inputs_unchanged,
    calls,
    reference_cases,
    to_device,
    to_device_strided,
)

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("strict_device_arrays", "small_blocks")]


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
@pytest.mark.parametrize(("name", "dtype", "index_dtype"), list(reference_cases()))
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


def test_calls_cover_every_public_function():
    """Guard: the sweeps above call every function of the API (and each mode)."""
    funcs = {c.func.__name__ for c in calls(np.float64).values()}
    public = {n for n in nbs.__all__ if inspect.isfunction(getattr(nbs, n))}
    assert funcs == public
