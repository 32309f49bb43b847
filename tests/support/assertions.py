"""Assertion helpers shared by the test modules.

One tolerance table by dtype and purpose (as CuPy's ``numpy_cupy_allclose``), in
``nbsparse._optable`` so that ``python -m nbsparse check`` uses it too; the kind,
dtype and shape of a result are checked before its values (as pydata/sparse's
``assert_eq``), so a wrong shape is reported as such, not as a broadcast.
"""

import numpy as np
import pytest

from nbsparse._optable import TOLERANCE, tolerance  # noqa: F401  (the tests' one import point)

FLOAT_DTYPES = [np.float32, np.float64]

INDEX_DTYPE_NAMES = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint64": np.uint64,
    "intp": np.intp,  # the same dtype as int64 here, named for what callers write
}
"""Every index dtype the tests use, by name (all hold the small block counts of ``cases``)."""

INDEX_DTYPES = [pytest.param(dtype, id=name) for name, dtype in INDEX_DTYPE_NAMES.items()]
"""``INDEX_DTYPE_NAMES`` as pytest parameters; ``intp`` gets its own id, not ``int64`` again."""


def assert_matches(result, expected, dtype):
    """``result`` is a NumPy array of ``dtype`` with the shape of ``expected`` and close values."""
    assert type(result) is np.ndarray, f"expected a numpy.ndarray, got {type(result).__name__}"
    assert result.dtype == np.dtype(dtype), f"dtype {result.dtype}, expected {np.dtype(dtype)}"
    shape = np.shape(expected)
    assert result.shape == shape, f"shape {result.shape}, expected {shape}"
    np.testing.assert_allclose(result, expected, **tolerance(dtype))


def assert_empty(result, shape, dtype):
    """``result`` is an empty NumPy array of ``shape`` and ``dtype`` (no reference needed)."""
    assert type(result) is np.ndarray, f"expected a numpy.ndarray, got {type(result).__name__}"
    assert result.dtype == np.dtype(dtype)
    assert result.shape == tuple(shape)
    assert result.size == 0


def snapshot(arrays):
    """Copies of ``arrays``, to check afterwards that a call did not write into them."""
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, copies):
    """Every array still holds the values (and dtype and shape) of its copy, NaN included."""
    assert len(arrays) == len(copies)
    for position, (array, copy) in enumerate(zip(arrays, copies)):
        assert array.dtype == copy.dtype and array.shape == copy.shape, f"argument {position}"
        np.testing.assert_array_equal(array, copy, err_msg=f"argument {position} was modified")


def assert_new_array(result, *inputs):
    """``result`` shares no memory with any of ``inputs``."""
    for position, a in enumerate(inputs):
        assert not np.shares_memory(result, a), f"the result shares memory with argument {position}"


def random_coordinates(rng, shape, count=20):
    """Up to ``count`` distinct multi-indices into an array of ``shape``, drawn from ``rng``."""
    size = int(np.prod(shape, dtype=np.int64))
    flat = rng.choice(size, size=min(count, size), replace=False)
    return [np.unravel_index(int(f), shape) for f in flat]


def in_result_dtype(*args):
    """``args`` with every float array cast to ``np.result_type`` of them all; others as given.

    For mixed-dtype expectations: the contract computes in the result dtype, while
    the oracle computes ``f32 @ f32`` products in float32 even when another
    argument is float64, so it is fed inputs already in the result dtype.
    """
    dtype = np.result_type(*(a for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"))
    return tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                 for a in args)
