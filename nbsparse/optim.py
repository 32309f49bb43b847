"""Optimizer steps, in place: SGD and Adam, on a dense gradient or on a :class:`~nbsparse.BlockGrad`.

With a ``BlockGrad`` only the listed blocks of the parameter change; Adam is
then lazy, as PyTorch's ``SparseAdam``: the moments of the other blocks are
left as they are, not decayed. Each listed block is read and written once,
with no temporary of the parameter's size.

Every check runs before anything is written, so a call that raises leaves the
parameter and the Adam state (``step`` included) as they were. The steps run
on the CPU for NumPy arrays and on the GPU for CUDA arrays (CuPy, Numba device
arrays: the kernels of ``nbsparse._cuda.optim``, on the caller's stream); Dask
arrays raise ``NotImplementedError`` for now. Importing this module imports
neither Numba nor Dask, and a call on NumPy arrays never loads ``numba.cuda``.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate as v
from ._host import HOST_BACKEND
from ._kinds import DEVICE, any_dask_array, check_sides
from ._results import BlockGrad

__all__ = ["AdamState", "adam", "sgd"]

DASK_NOT_YET = "nbsparse.optim on Dask arrays is not implemented yet"


@dataclass
class AdamState:
    """The state Adam keeps for one parameter: the moment estimates and the step count.

    Parameters
    ----------
    m, v : array
        The first and second moment estimates, shaped like the parameter, of its
        dtype and array kind, C-contiguous and writeable; :func:`adam` updates them in place.
    step : int
        The number of steps taken; :func:`adam` adds 1 before each step.

    Examples
    --------
    >>> import numpy as np
    >>> from nbsparse import optim
    >>> optim.AdamState.zeros_like(np.ones(2, dtype=np.float32))
    AdamState(m=array([0., 0.], dtype=float32), v=array([0., 0.], dtype=float32), step=0)
    """

    m: Any
    v: Any
    step: int = 0

    @classmethod
    def zeros_like(cls, param):
        """A fresh state for ``param``: ``m`` and ``v`` C-contiguous zeros like ``param``, ``step`` 0.

        For a GPU ``param`` they are device zeros of its kind: CuPy arrays for a CuPy
        ``param``, else Numba device arrays.
        """
        if _on_device(param):
            return cls(_device_zeros_like(param), _device_zeros_like(param), 0)
        return cls(np.zeros_like(param, order="C"), np.zeros_like(param, order="C"), 0)


def _on_device(a):
    """True for a GPU array (as ``nbsparse._kinds.array_kind``; anything else goes to NumPy as before)."""
    return not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__")
                                               or getattr(a, "__cuda_ndarray__", False))


def _device_zeros_like(param):
    from ._device import DeviceBackend, _cupy, _is_cupy

    if _is_cupy(param):
        return _cupy().zeros_like(param, order="C")
    return DeviceBackend([param]).zeros(tuple(param.shape), np.dtype(param.dtype))


def sgd(param, grad, lr):
    """One step of stochastic gradient descent, in place: ``param -= lr * grad``.

    Parameters
    ----------
    param : numpy.ndarray or GPU array
        The float32 or float64 weight, C-contiguous and writeable; updated in place.
        A GPU array (CuPy, Numba device array) is updated on the GPU, with every
        other array of the call on the GPU too.
    grad : numpy.ndarray or BlockGrad
        Shaped like ``param``, or a :class:`~nbsparse.BlockGrad` whose ``index``
        ``(n, d)`` lists blocks of ``param``'s grid ``param.shape[:d]`` (rows
        unique, in increasing lexicographic order) and whose ``values`` are
        ``(n, *param.shape[d:])``: only the listed blocks change. Of ``param``'s dtype.
    lr : float
        The learning rate, finite and ``>= 0``.

    Returns
    -------
    numpy.ndarray or GPU array
        ``param`` itself (the caller's object).

    Raises
    ------
    TypeError
        ``param`` is not a float32/float64 array, ``grad`` (its ``values``) has
        another dtype or array kind, ``grad.index`` is not integer, ``lr`` is not a number.
    ValueError
        A shape that does not fit ``param``, an ``index`` whose rows are not
        strictly increasing, a read-only or non-C-contiguous ``param``, ``lr`` out of range.
    IndexError
        An ``index`` row outside ``param``'s block grid.
    NotImplementedError
        Dask arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from nbsparse import BlockGrad, optim
    >>> w = np.ones((3, 2))
    >>> optim.sgd(w, np.full((3, 2), 2.0), lr=0.25)
    array([[0.5, 0.5],
           [0.5, 0.5],
           [0.5, 0.5]])
    >>> optim.sgd(w, BlockGrad(np.array([[1]]), np.array([[4.0, 4.0]])), lr=0.25)
    array([[ 0.5,  0.5],
           [-0.5, -0.5],
           [ 0.5,  0.5]])
    """
    side = _check_kinds(param, grad)
    _check_dtypes(param, grad)
    lr = _check_lr(lr)
    _check_grad_shape(param, grad)
    _check_updatable(side, "param", param)
    ids = _check_block_index(side, param, grad)

    scalar = np.dtype(param.dtype).type
    if ids is None:
        side.backend.sgd_dense(side.flat(param), side.flat_values(grad), scalar(lr))
    else:
        side.backend.sgd_blocks(side.blocks(param, grad), side.backend.indices(ids), side.block_values(param, grad),
                                scalar(lr))
    return param


def adam(param, grad, state, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step, in place; lazy (only the listed blocks) for a :class:`~nbsparse.BlockGrad`.

    ``state.step`` grows by 1 to ``t``; then, for every element of the listed
    blocks (of the whole array for a dense ``grad``)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        param -= lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    Outside the listed blocks ``param``, ``m`` and ``v`` keep their values, as in
    PyTorch's ``SparseAdam``. The bias corrections ``1 - beta**t`` are computed
    in float64, everything else in ``param``'s dtype.

    Parameters
    ----------
    param : numpy.ndarray or GPU array
        The float32 or float64 weight, C-contiguous and writeable; updated in place.
        A GPU array (CuPy, Numba device array) is updated on the GPU, with every
        other array of the call on the GPU too.
    grad : numpy.ndarray or BlockGrad
        As in :func:`sgd`.
    state : AdamState
        ``m`` and ``v`` shaped like ``param``, of its dtype, C-contiguous and
        writeable, updated in place; ``step`` an integer ``>= 0``.
    lr : float, optional
        The learning rate, finite and ``>= 0``.
    beta1, beta2 : float, optional
        The decay rates of the moment estimates, in ``[0, 1)``.
    eps : float, optional
        Added to the denominator; finite and ``> 0``.

    Returns
    -------
    numpy.ndarray or GPU array
        ``param`` itself (the caller's object).

    Raises
    ------
    TypeError
        As in :func:`sgd`, and for a ``state`` that is not an :class:`AdamState`,
        whose ``m`` or ``v`` differ from ``param`` in dtype or array kind, or whose
        ``step`` is not an integer.
    ValueError
        As in :func:`sgd`, and for ``m`` or ``v`` of another shape, read-only or not
        C-contiguous, a negative ``step``, and ``beta1``, ``beta2`` or ``eps`` out of range.
    IndexError
        An ``index`` row outside ``param``'s block grid.
    NotImplementedError
        Dask arrays.

    Examples
    --------
    The first step moves each element by about ``lr`` against its gradient's sign:

    >>> import numpy as np
    >>> from nbsparse import BlockGrad, optim
    >>> w = np.zeros((2, 3))
    >>> state = optim.AdamState.zeros_like(w)
    >>> optim.adam(w, BlockGrad(np.array([[1]]), np.array([[1.0, -2.0, 0.0]])), state, lr=0.1)
    array([[ 0. ,  0. ,  0. ],
           [-0.1,  0.1,  0. ]])
    >>> state.step
    1
    """
    if not isinstance(state, AdamState):
        raise TypeError(f"state must be an nbsparse.optim.AdamState, got {type(state).__name__}")
    side = _check_kinds(param, grad, state)
    _check_dtypes(param, grad, state)
    lr = _check_lr(lr)
    beta1 = _check_beta("beta1", beta1)
    beta2 = _check_beta("beta2", beta2)
    eps = v.check_scalar("eps", eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps}")
    step = v.check_count("state.step", state.step, minimum=0)
    _check_grad_shape(param, grad)
    for name, a in (("state.m", state.m), ("state.v", state.v)):
        v.check_shape(name, a, param.shape, "the shape of param")
    for name, a in (("param", param), ("state.m", state.m), ("state.v", state.v)):
        _check_updatable(side, name, a)
    ids = _check_block_index(side, param, grad)

    state.step = t = step + 1
    scalar = np.dtype(param.dtype).type
    scalars = (scalar(lr), scalar(beta1), scalar(beta2), scalar(1.0 - beta1), scalar(1.0 - beta2),
               scalar(1.0 - beta1**t), scalar(1.0 - beta2**t), scalar(eps))
    if ids is None:
        side.backend.adam_dense(side.flat(param), side.flat_values(grad), side.flat(state.m), side.flat(state.v),
                                *scalars)
    else:
        side.backend.adam_blocks(side.blocks(param, grad), side.backend.indices(ids), side.block_values(param, grad),
                                 side.blocks(state.m, grad), side.blocks(state.v, grad), *scalars)
    return param


# --------------------------------------------------------------------------- host and device

class _Host:
    """The host side of a call: NumPy arrays, the CPU kernels."""

    backend = HOST_BACKEND

    @staticmethod
    def c_contiguous(a):
        return a.flags.c_contiguous

    @staticmethod
    def host_index(index):
        return index

    @staticmethod
    def flat(a):
        """The C-contiguous caller's array ``a``, 1-D (a view: the kernels write through it)."""
        return a.reshape(-1)

    @staticmethod
    def flat_values(grad):
        return np.ascontiguousarray(grad).reshape(-1)

    @staticmethod
    def blocks(a, grad):
        return _as_blocks(a, grad)

    @staticmethod
    def block_values(param, grad):
        return _values_2d(param, grad, np.ascontiguousarray(grad.values))


_HOST = _Host()


class _Device:
    """The GPU side of a call: zero-copy Numba views of the caller's arrays, the CUDA kernels on its stream."""

    def __init__(self, arrays):
        from ._device import DeviceBackend, as_device

        self.backend = DeviceBackend(arrays)
        self._as_device = as_device

    def c_contiguous(self, a):
        return self._as_device(a).is_c_contiguous()

    def host_index(self, index):
        """``index`` copied to the host (it is small: one row per listed block), for the checks and the ids."""
        return self.backend.to_host(index)

    def flat(self, a):
        """The C-contiguous caller's array ``a`` as a 1-D device view (the kernels write through it)."""
        return self._as_device(a).reshape(math.prod(a.shape))

    def flat_values(self, grad):
        return self._contiguous(grad).reshape(math.prod(grad.shape))

    def blocks(self, a, grad):
        return _as_blocks(self._as_device(a), grad)

    def block_values(self, param, grad):
        return _values_2d(param, grad, self._contiguous(grad.values))

    def _contiguous(self, a):
        """``a`` as a C-contiguous device array: a view, or a copy on the device when ``a`` is strided."""
        return self.backend.floats(np.dtype(a.dtype), a)


# --------------------------------------------------------------------------- checks

def _check_kinds(param, grad, state=None):
    """The side of the call (``_HOST`` or a ``_Device``); TypeError for non-arrays and host mixed
    with device, NotImplementedError for Dask arrays."""
    if isinstance(grad, BlockGrad):
        names, arrays = ["param", "grad.index", "grad.values"], [param, grad.index, grad.values]
    else:
        names, arrays = ["param", "grad"], [param, grad]
    if state is not None:
        names += ["state.m", "state.v"]
        arrays += [state.m, state.v]
    if any_dask_array(arrays):
        raise NotImplementedError(DASK_NOT_YET)
    if check_sides(names, arrays)[DEVICE]:
        return _Device(arrays)
    return _HOST


def _check_dtypes(param, grad, state=None):
    v.check_float("param", param)
    others = [("grad.values", grad.values) if isinstance(grad, BlockGrad) else ("grad", grad)]
    if state is not None:
        others += [("state.m", state.m), ("state.v", state.v)]
    for name, a in others:
        if a.dtype != param.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but must have param's dtype {param.dtype}")
    if isinstance(grad, BlockGrad):
        v.check_integer("grad.index", grad.index)


def _check_lr(lr):
    lr = v.check_scalar("lr", lr)
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be finite and >= 0, got {lr}")
    return lr


def _check_beta(name, beta):
    beta = v.check_scalar(name, beta)
    if not 0 <= beta < 1:
        raise ValueError(f"{name} must be in [0, 1), got {beta}")
    return beta


def _check_grad_shape(param, grad):
    """Shape checks of ``grad``: shaped like ``param``, or a BlockGrad of ``param``'s blocks."""
    if not isinstance(grad, BlockGrad):
        v.check_shape("grad", grad, param.shape, "the shape of param")
        return
    index, values = grad.index, grad.values
    if index.ndim != 2 or not 1 <= index.shape[1] <= param.ndim:
        raise ValueError(f"grad.index must be 2-D (n, d) with 1 <= d <= param.ndim = {param.ndim}, "
                         f"got shape {tuple(index.shape)}")
    n, d = index.shape
    v.check_shape("grad.values", values, (n, *param.shape[d:]),
                  f"(n, *param.shape[{d}:]): a block of param for each of the {n} rows of grad.index")


def _check_updatable(side, name, a):
    if not side.backend.is_writeable(a):
        raise ValueError(f"{name} is read-only")
    if not side.c_contiguous(a):
        raise ValueError(f"{name} must be C-contiguous (it is updated in place, so it cannot be copied)")


def _check_block_index(side, param, grad):
    """The flat block ids (a host ``intp`` array) of a BlockGrad's ``index`` in ``param``'s grid
    (None for a dense ``grad``). A device ``index`` is copied to the host first.

    IndexError for a row outside the grid; ValueError unless the rows strictly
    increase in lexicographic order (then the ids strictly increase: no block twice).
    """
    if not isinstance(grad, BlockGrad):
        return None
    n, d = grad.index.shape
    grid = tuple(param.shape[:d])
    if n == 0:
        return np.empty(0, dtype=np.intp)
    index = side.host_index(grad.index)
    outside = np.zeros(n, dtype=bool)
    for k, size in enumerate(grid):  # per column, against a Python int: exact for any integer dtype
        outside |= (index[:, k] < 0) | (index[:, k] >= size)
    if outside.any():
        r = int(np.argmax(outside))
        raise IndexError(f"grad.index[{r}] = {_row(index, r)} is outside the block grid {grid} of param")
    ids = np.ravel_multi_index(tuple(np.asarray(index, dtype=np.intp).T), grid)
    wrong = np.diff(ids) <= 0
    if wrong.any():
        r = int(np.argmax(wrong)) + 1
        how = "repeats" if ids[r] == ids[r - 1] else "does not come after"
        raise ValueError(f"grad.index rows must be unique and strictly increasing in lexicographic (C) order, "
                         f"but grad.index[{r}] = {_row(index, r)} {how} grad.index[{r - 1}] = {_row(index, r - 1)}")
    return ids


def _row(index, r):
    return tuple(int(x) for x in index[r])


def _as_blocks(a, grad):
    """The C-contiguous ``a`` viewed as ``(n_grid_blocks, block_size)`` for ``grad``'s blocks."""
    d = grad.index.shape[1]
    return a.reshape(math.prod(a.shape[:d]), math.prod(a.shape[d:]))


def _values_2d(param, grad, values):
    """The C-contiguous ``values`` of ``grad`` viewed as ``(n, block_size)``."""
    n, d = grad.index.shape
    return values.reshape(n, math.prod(param.shape[d:]))
