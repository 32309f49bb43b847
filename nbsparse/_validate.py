"""Argument checks shared by the public functions.

Everything here looks only at ``shape``, ``ndim`` and ``dtype`` (which host and
device arrays both have) except :func:`check_index_range`, which needs the index
values on the host. Nothing here imports Numba.
"""

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(name, a):
    """Raise TypeError unless ``a`` holds float32 or float64."""
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")


def check_integer(name, a):
    """Raise TypeError unless ``a`` holds integers (bool is not an integer here)."""
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array of block indices, got dtype {a.dtype}")


def check_ndim(name, a, ndim, layout):
    """Raise ValueError unless ``a.ndim == ndim``; ``layout`` names the axes, e.g. ``"(batch, iWin)"``."""
    if a.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D {layout}, got {a.ndim}-D array of shape {tuple(a.shape)}"
        )


def check_dim(name, a, axis, expected, what):
    """Raise ValueError unless ``a.shape[axis] == expected``.

    ``what`` says where ``expected`` comes from, e.g. ``"h.shape[0] (batch)"``.
    """
    if a.shape[axis] != expected:
        raise ValueError(
            f"{name}.shape[{axis}] is {a.shape[axis]} but must equal {what} = {expected} "
            f"({name} has shape {tuple(a.shape)})"
        )


def check_shape(name, a, expected, what):
    """Raise ValueError unless ``a.shape == expected``; ``what`` explains the expectation."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(a.shape)} but must be {tuple(expected)} ({what})")


def check_index_range(name, idx, n, what):
    """Raise IndexError if any value of the host array ``idx`` is outside ``[0, n)``.

    The message names the first offending position, its value and the range,
    e.g. ``input_idx[3, 1] = 7 is outside [0, 5) (W has 5 input blocks)``.
    """
    if idx.size == 0:
        return
    low, high = idx.min(), idx.max()
    if low >= 0 and high < n:
        return
    bad = (idx < 0) | (idx >= n)
    position = tuple(int(p) for p in np.argwhere(bad)[0])
    where = ", ".join(str(p) for p in position)
    raise IndexError(f"{name}[{where}] = {idx[position]} is outside [0, {n}) ({what})")


def check_axis(axis, ndim, name="axis"):
    """Return ``axis`` normalised to ``[0, ndim)``; ValueError if out of range, TypeError if not an int."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} = {axis} is out of range for a {ndim}-D array")
    return int(axis) % ndim


def check_count(name, value, minimum=1):
    """Return ``value`` as int; TypeError if not an integer, ValueError if below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_scalar(name, value):
    """Return a real scalar as a Python float; TypeError for anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"):
            raise TypeError(f"{name} must be a real scalar, got {type(value).__name__}")
    return float(value)
