"""Softmax and its gradient along any axis."""

import numpy as np

from ._checks import check_softmax, check_softmax_grad
from ._dispatch import array_op


def _as_rows(backend, dtype, a, axis):
    """``a`` with ``axis`` moved last, as a C-contiguous ``(rows, n)`` array of ``dtype``."""
    moved = backend.moveaxis(a, axis, -1)
    *lead, n = moved.shape  # device shapes refuse negative indices
    rows = int(np.prod(lead, dtype=np.int64))
    return backend.floats(dtype, moved).reshape(rows, n), moved.shape


def _from_rows(backend, out, moved_shape, axis):
    return backend.moveaxis(out.reshape(moved_shape), -1, axis)


@array_op("x")
def softmax(x, axis=-1, *, backend):
    """Numerically stable softmax along ``axis``.

    Parameters
    ----------
    x : array
        Float32 or float64 array of any shape with at least one dimension.
    axis : int, optional
        The axis the probabilities sum over; negative values count from the end.

    Returns
    -------
    array
        Same shape and dtype as ``x``. Unlike Theano, a 1-D input gives a 1-D
        output (Theano returned shape ``(1, n)``).

    Raises
    ------
    TypeError
        ``x`` is not a float32/float64 array, or ``axis`` is not an integer.
    ValueError
        ``axis`` is out of range (a 0-D ``x`` has no axis).

    See Also
    --------
    softmax_grad

    Notes
    -----
    ``softmax(x)[..., k] = exp(x[..., k] - m) / sum_k' exp(x[..., k'] - m)`` with
    ``m = max(x, axis)``: subtracting the maximum keeps every ``exp`` at most 1,
    so large inputs cannot overflow.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> nbs.softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    >>> nbs.softmax(np.array([[1000.0, 1000.0]], dtype=np.float32))
    array([[0.5, 0.5]], dtype=float32)
    """
    axis = check_softmax(x, axis)
    rows, moved_shape = _as_rows(backend, x.dtype, x, axis)
    out = backend.empty(rows.shape, x.dtype)
    backend.softmax_rows(rows, out)
    return backend.wrap(_from_rows(backend, out, moved_shape, axis))


@array_op("grad_output", "y")
def softmax_grad(grad_output, y, axis=-1, *, backend):
    """Gradient of a softmax with respect to its input, from its output ``y``.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to ``y``; same shape as ``y``.
    y : array
        The softmax output, ``softmax(x, axis)``.
    axis : int, optional
        The axis the softmax was taken along.

    Returns
    -------
    array
        Same shape as ``y``, dtype ``np.result_type(grad_output, y)``.

    Raises
    ------
    TypeError
        Non-float arrays, host and device arrays mixed, or a non-integer ``axis``.
    ValueError
        ``grad_output`` and ``y`` differ in shape, or ``axis`` is out of range.

    See Also
    --------
    softmax

    Notes
    -----
    ``y * (grad_output - sum(grad_output * y, axis, keepdims=True))``: the
    Jacobian-vector product, without forming the ``n x n`` Jacobian.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> nbs.softmax_grad(np.array([1.0, 0.0]), np.array([0.25, 0.75]))
    array([ 0.1875, -0.1875])
    """
    axis, dtype = check_softmax_grad(grad_output, y, axis)
    g_rows, moved_shape = _as_rows(backend, dtype, grad_output, axis)
    y_rows, _ = _as_rows(backend, dtype, y, axis)
    out = backend.empty(y_rows.shape, dtype)
    backend.softmax_grad_rows(g_rows, y_rows, out)
    return backend.wrap(_from_rows(backend, out, moved_shape, axis))
