"""Block-sparse products: Theano's SparseBlockGemv, SparseBlockOuter and sparse_block_dot.

Each public function validates its arguments completely (kinds, dtypes, shapes,
index ranges) before any kernel runs or anything is written, then normalises
floats to the result dtype and indices to ``intp`` and launches the kernels of
the backend that the array kind selected.
"""

import numpy as np

from . import _validate as v
from ._backend import dask_module, select
from ._results import SparseBlockDotGrad

_W_LAYOUT = "(iBlocks, oBlocks, iSize, oSize)"


def _check_product(W, h, input_idx, output_idx):
    """Shape relations shared by gemv, dot and dot_grad (dtypes already checked)."""
    v.check_ndim("W", W, 4, _W_LAYOUT)
    v.check_ndim("h", h, 3, "(batch, iWin, iSize)")
    v.check_ndim("input_idx", input_idx, 2, "(batch, iWin)")
    v.check_ndim("output_idx", output_idx, 2, "(batch, oWin)")
    v.check_dim("h", h, 2, W.shape[2], "W.shape[2] (iSize)")
    v.check_shape("input_idx", input_idx, h.shape[:2], "h.shape[:2], (batch, iWin)")
    v.check_dim("output_idx", output_idx, 0, h.shape[0], "h.shape[0] (batch)")


def _check_product_ranges(backend, W, input_idx, output_idx):
    backend.check_index_range("input_idx", input_idx, W.shape[0],
                              f"W has {W.shape[0]} input blocks")
    backend.check_index_range("output_idx", output_idx, W.shape[1],
                              f"W has {W.shape[1]} output blocks")


def _check_types(floats, indices):
    for name, a in floats.items():
        v.check_float(name, a)
    for name, a in indices.items():
        v.check_integer(name, a)
    return np.result_type(*(a.dtype for a in floats.values()))


def _writable_result(backend, dtype, o, inplace, others):
    """The array the kernel adds into: ``o`` itself only when writing there is safe.

    With ``inplace=True`` the kernel writes straight into a C-contiguous ``o`` of
    the result dtype, unless ``o`` may share memory with an argument the kernel
    reads (``others``): it then works on a private copy, which the caller copies
    into ``o`` afterwards, so the result is the one computed on copies of the
    arguments and validated indices cannot change under the kernel.
    """
    if inplace and not backend.overlaps(o, others):
        return backend.floats(dtype, o)
    return backend.copy(o, dtype)


def _check_inplace(name, o, dtype, backend):
    if o.dtype != dtype:
        raise TypeError(
            f"inplace=True needs {name} to have the result dtype {dtype}, but {name} is {o.dtype}; "
            f"pass a {dtype} {name} or use inplace=False"
        )
    if not backend.is_writeable(o):
        raise ValueError(f"inplace=True but {name} is read-only")


def check_gemv(o, W, h, input_idx, output_idx):
    """Dtypes and shapes of a ``sparse_block_gemv`` call; returns the result dtype.

    This and the other ``check_*`` functions read only ``dtype``, ``ndim`` and
    ``shape``, so they check Dask arrays too, before any graph is built.
    """
    dtype = _check_types({"o": o, "W": W, "h": h}, {"input_idx": input_idx, "output_idx": output_idx})
    _check_product(W, h, input_idx, output_idx)
    v.check_ndim("o", o, 3, "(batch, oWin, oSize)")
    v.check_shape("o", o, (h.shape[0], output_idx.shape[1], W.shape[3]),
                  "(batch, oWin, oSize) from h.shape[0], output_idx.shape[1], W.shape[3]")
    return dtype


def check_dot(W, h, input_idx, b, output_idx):
    """Dtypes and shapes of a ``sparse_block_dot`` call; returns the result dtype."""
    dtype = _check_types({"W": W, "h": h, "b": b}, {"input_idx": input_idx, "output_idx": output_idx})
    _check_product(W, h, input_idx, output_idx)
    v.check_shape("b", b, (W.shape[1], W.shape[3]), "(oBlocks, oSize) from W.shape[1], W.shape[3]")
    return dtype


def check_outer(o, x, y, x_idx, y_idx, alpha):
    """Dtypes, ``alpha`` and shapes of a ``sparse_block_outer`` call; returns ``(dtype, alpha)``."""
    dtype = _check_types({"o": o, "x": x, "y": y}, {"x_idx": x_idx, "y_idx": y_idx})
    alpha = v.check_scalar("alpha", alpha)
    v.check_ndim("o", o, 4, "(xBlocks, yBlocks, xSize, ySize)")
    v.check_ndim("x", x, 3, "(batch, xWin, xSize)")
    v.check_ndim("y", y, 3, "(batch, yWin, ySize)")
    v.check_ndim("x_idx", x_idx, 2, "(batch, xWin)")
    v.check_ndim("y_idx", y_idx, 2, "(batch, yWin)")
    v.check_dim("x", x, 2, o.shape[2], "o.shape[2] (xSize)")
    v.check_dim("y", y, 2, o.shape[3], "o.shape[3] (ySize)")
    v.check_dim("y", y, 0, x.shape[0], "x.shape[0] (batch)")
    v.check_shape("x_idx", x_idx, x.shape[:2], "x.shape[:2], (batch, xWin)")
    v.check_shape("y_idx", y_idx, y.shape[:2], "y.shape[:2], (batch, yWin)")
    return dtype, alpha


def check_dot_grad(grad_output, W, h, input_idx, b, output_idx):
    """Dtypes and shapes of a ``sparse_block_dot_grad`` call; returns the result dtype."""
    dtype = _check_types({"grad_output": grad_output, "W": W, "h": h, "b": b},
                         {"input_idx": input_idx, "output_idx": output_idx})
    _check_product(W, h, input_idx, output_idx)
    v.check_shape("b", b, (W.shape[1], W.shape[3]), "(oBlocks, oSize) from W.shape[1], W.shape[3]")
    v.check_ndim("grad_output", grad_output, 3, "(batch, oWin, oSize)")
    v.check_shape("grad_output", grad_output, (h.shape[0], output_idx.shape[1], W.shape[3]),
                  "the sparse_block_dot result, (batch, oWin, oSize)")
    return dtype


def _dot(backend, dtype, W, h, input_idx, b, output_idx):
    """``sparse_block_dot`` on validated arguments; returns a new backend array."""
    kernels = backend.kernels.blocksparse
    o = backend.empty((h.shape[0], output_idx.shape[1], W.shape[3]), dtype)
    output_idx = backend.indices(output_idx)
    kernels.set_bias(o, backend.floats(dtype, b), output_idx)
    kernels.gemv(o, backend.floats(dtype, W), backend.floats(dtype, h),
                 backend.indices(input_idx), output_idx)
    return o


def _dot_grads(backend, dh, db, grad_output, W, h, input_idx, output_idx):
    """The new ``W`` gradient of ``sparse_block_dot``; its ``h`` and ``b`` gradients are added into ``dh``, ``db``.

    All arguments are validated and normalised (floats of ``dh.dtype``, ``intp`` indices).
    """
    dW = backend.weight_gradient(W.shape, h, grad_output, input_idx, output_idx)
    kernels = backend.kernels.blocksparse
    kernels.grad_h(dh, W, grad_output, input_idx, output_idx)
    kernels.bias_grad(db, grad_output, output_idx)
    return dW


def sparse_block_gemv(o, W, h, input_idx, output_idx, *, inplace=False):
    """Block-sparse matrix-vector product added to ``o`` (Theano's ``SparseBlockGemv``).

    Parameters
    ----------
    o : array, shape (batch, oWin, oSize)
        The values the products are added to.
    W : array, shape (iBlocks, oBlocks, iSize, oSize)
        The weight blocks.
    h : array, shape (batch, iWin, iSize)
        The input blocks of each row.
    input_idx : integer array, shape (batch, iWin)
        Which block row of ``W`` each input block multiplies, in ``[0, iBlocks)``.
    output_idx : integer array, shape (batch, oWin)
        Which block column of ``W`` each output block comes from, in ``[0, oBlocks)``.
    inplace : bool, optional
        Write the result into ``o`` and return ``o``. ``o`` must then be writeable
        and have the result dtype. An ``o`` that shares memory with another
        argument is allowed: the result is the one computed on copies of all
        arguments, written into ``o`` after the kernel has run.

    Returns
    -------
    array, shape (batch, oWin, oSize)
        ``o`` plus the products, of dtype ``np.result_type(o, W, h)``, of the kind of
        the inputs (a new array unless ``inplace=True``).

    Raises
    ------
    TypeError
        An argument that is not an array, host and device arrays mixed, non-float
        ``o``/``W``/``h``, non-integer indices, or ``inplace=True`` with an ``o`` of
        another dtype than the result's.
    ValueError
        A wrong number of dimensions, shapes that do not fit together, or
        ``inplace=True`` with a read-only ``o``.
    IndexError
        An index outside its range; the message names the position and value.

    See Also
    --------
    sparse_block_dot : the same product plus a bias, into a new array.

    Notes
    -----
    ``o'[b, j] = o[b, j] + sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``

    Each output block ``(b, j)`` is computed by one thread, so results do not
    depend on the thread count.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> W = np.ones((2, 3, 2, 2))  # 2 x 3 blocks of 2 x 2
    >>> h = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # one row, two input blocks
    >>> o = np.array([[[100.0, 0.0]]])
    >>> nbs.sparse_block_gemv(o, W, h, np.array([[0, 1]]), np.array([[2]]))
    array([[[110.,  10.]]])
    """
    if (lazy := dask_module(o, W, h, input_idx, output_idx)) is not None:
        return lazy.sparse_block_gemv(o, W, h, input_idx, output_idx, inplace=inplace)
    backend = select(o=o, W=W, h=h, input_idx=input_idx, output_idx=output_idx)
    dtype = check_gemv(o, W, h, input_idx, output_idx)
    if inplace:
        _check_inplace("o", o, dtype, backend)
    _check_product_ranges(backend, W, input_idx, output_idx)

    out = _writable_result(backend, dtype, o, inplace, (W, h, input_idx, output_idx))
    backend.kernels.blocksparse.gemv(
        out, backend.floats(dtype, W), backend.floats(dtype, h),
        backend.indices(input_idx), backend.indices(output_idx),
    )
    if inplace:
        backend.write_back(o, out)
        return o
    return backend.wrap(out)


def sparse_block_dot(W, h, input_idx, b, output_idx):
    """Block-sparse product plus bias (Theano's ``sparse_block_dot``).

    Parameters
    ----------
    W : array, shape (iBlocks, oBlocks, iSize, oSize)
        The weight blocks.
    h : array, shape (batch, iWin, iSize)
        The input blocks of each row.
    input_idx : integer array, shape (batch, iWin)
        Block row of ``W`` for each input block, in ``[0, iBlocks)``.
    b : array, shape (oBlocks, oSize)
        One bias vector per output block.
    output_idx : integer array, shape (batch, oWin)
        Block column of ``W`` for each output block, in ``[0, oBlocks)``.

    Returns
    -------
    array, shape (batch, oWin, oSize)
        A new array of dtype ``np.result_type(W, h, b)``.

    Raises
    ------
    TypeError, ValueError, IndexError
        As for :func:`sparse_block_gemv` (kinds and dtypes, shapes, index ranges).

    See Also
    --------
    sparse_block_gemv, sparse_block_dot_grad

    Notes
    -----
    ``out[n, j] = b[output_idx[n, j]] + sum_i h[n, i] @ W[input_idx[n, i], output_idx[n, j]]``

    The bias is added once per output block, not once per input block.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> W = np.ones((2, 3, 2, 2))
    >>> b = np.array([[0.0, 0.0], [10.0, 20.0], [0.0, 0.0]])
    >>> nbs.sparse_block_dot(W, np.ones((1, 2, 2)), np.array([[0, 1]]), b, np.array([[1]]))
    array([[[14., 24.]]])
    """
    if (lazy := dask_module(W, h, input_idx, b, output_idx)) is not None:
        return lazy.sparse_block_dot(W, h, input_idx, b, output_idx)
    backend = select(W=W, h=h, input_idx=input_idx, b=b, output_idx=output_idx)
    dtype = check_dot(W, h, input_idx, b, output_idx)
    _check_product_ranges(backend, W, input_idx, output_idx)
    return backend.wrap(_dot(backend, dtype, W, h, input_idx, b, output_idx))


def sparse_block_outer(o, x, y, x_idx, y_idx, alpha=1.0, *, inplace=False, deterministic=False):
    """Add scaled outer products into selected blocks of ``o`` (Theano's ``SparseBlockOuter``).

    Parameters
    ----------
    o : array, shape (xBlocks, yBlocks, xSize, ySize)
        The blocks the outer products are added to.
    x : array, shape (batch, xWin, xSize)
        Left vectors.
    y : array, shape (batch, yWin, ySize)
        Right vectors.
    x_idx : integer array, shape (batch, xWin)
        Block row of ``o`` for each ``x`` vector, in ``[0, xBlocks)``.
    y_idx : integer array, shape (batch, yWin)
        Block column of ``o`` for each ``y`` vector, in ``[0, yBlocks)``.
    alpha : float, optional
        Scale of the products (Theano accepted but ignored it; here it is honoured).
    inplace : bool, optional
        Write the result into ``o`` and return ``o``. ``o`` must then be writeable
        and have the result dtype. An ``o`` that shares memory with another
        argument is allowed: the result is the one computed on copies of all
        arguments, written into ``o`` after the kernel has run.
    deterministic : bool, optional
        On the GPU, sum repeated block pairs in a fixed order (a host-side sort of
        the pairs) instead of with atomics, so results are bit-identical run to
        run. The CPU kernel is always deterministic and ignores it.

    Returns
    -------
    array, shape (xBlocks, yBlocks, xSize, ySize)
        ``o`` plus the products, of dtype ``np.result_type(o, x, y)``.

    Raises
    ------
    TypeError, ValueError, IndexError
        As for :func:`sparse_block_gemv`; also TypeError if ``alpha`` is not a real scalar.

    See Also
    --------
    sparse_block_dot_grad : uses this product for the weight gradient.

    Notes
    -----
    ``o'[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])`` for every
    ``b, i, j``. Repeated index pairs accumulate; no update is lost. The CPU kernel
    groups the products by the block they update, so each block is written by one
    thread and the result is the same run to run.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> x, y = np.ones((2, 1, 2)), np.arange(4.0).reshape(2, 1, 2)
    >>> nbs.sparse_block_outer(np.zeros((1, 2, 2, 2)), x, y, np.zeros((2, 1), int),
    ...                        np.array([[1], [1]]), alpha=0.5)[0, 1]
    array([[1., 2.],
           [1., 2.]])
    """
    if (lazy := dask_module(o, x, y, x_idx, y_idx)) is not None:
        return lazy.sparse_block_outer(o, x, y, x_idx, y_idx, alpha, inplace=inplace,
                                       deterministic=deterministic)
    backend = select(o=o, x=x, y=y, x_idx=x_idx, y_idx=y_idx, deterministic=deterministic)
    dtype, alpha = check_outer(o, x, y, x_idx, y_idx, alpha)
    if inplace:
        _check_inplace("o", o, dtype, backend)
    backend.check_index_range("x_idx", x_idx, o.shape[0], f"o has {o.shape[0]} x blocks")
    backend.check_index_range("y_idx", y_idx, o.shape[1], f"o has {o.shape[1]} y blocks")

    out = _writable_result(backend, dtype, o, inplace, (x, y, x_idx, y_idx))
    backend.kernels.blocksparse.outer(
        out, backend.floats(dtype, x), backend.floats(dtype, y),
        backend.indices(x_idx), backend.indices(y_idx), dtype.type(alpha), False,
    )
    if inplace:
        backend.write_back(o, out)
        return o
    return backend.wrap(out)


def sparse_block_dot_grad(grad_output, W, h, input_idx, b, output_idx, *, deterministic=False):
    """Gradients of ``sum(grad_output * sparse_block_dot(W, h, input_idx, b, output_idx))``.

    Parameters
    ----------
    grad_output : array, shape (batch, oWin, oSize)
        Gradient of the loss with respect to the ``sparse_block_dot`` result.
    W, h, input_idx, b, output_idx
        The arguments of the forward :func:`sparse_block_dot` call.
    deterministic : bool, optional
        Bit-identical ``W`` and ``b`` gradients run to run on the GPU, as for
        :func:`sparse_block_outer`; the CPU kernels always are.

    Returns
    -------
    SparseBlockDotGrad
        Named tuple ``(W, h, b)`` of new arrays shaped like ``W``, ``h`` and ``b``, of
        dtype ``np.result_type(grad_output, W, h, b)``. Blocks of ``W`` and ``b`` that
        no index selects get exactly zero.

    Raises
    ------
    TypeError, ValueError, IndexError
        As for :func:`sparse_block_dot`, and ValueError if ``grad_output`` does not
        have the shape of the forward result.

    See Also
    --------
    sparse_block_dot, sparse_block_outer

    Notes
    -----
    With ``g = grad_output``:
    ``dW[input_idx[n, i], output_idx[n, j]] += outer(h[n, i], g[n, j])``,
    ``dh[n, i] = sum_j W[input_idx[n, i], output_idx[n, j]] @ g[n, j]``,
    ``db[output_idx[n, j]] += g[n, j]``, accumulated over every ``n, i, j``.

    Examples
    --------
    >>> import numpy as np, nbsparse as nbs
    >>> W, h, b = np.ones((1, 2, 2, 3)), np.ones((1, 1, 2)), np.zeros((2, 3))
    >>> grads = nbs.sparse_block_dot_grad(np.ones((1, 1, 3)), W, h, np.array([[0]]), b, np.array([[1]]))
    >>> grads.h, grads.b
    (array([[[3., 3.]]]), array([[0., 0., 0.],
           [1., 1., 1.]]))
    """
    if (lazy := dask_module(grad_output, W, h, input_idx, b, output_idx)) is not None:
        return lazy.sparse_block_dot_grad(grad_output, W, h, input_idx, b, output_idx,
                                          deterministic=deterministic)
    backend = select(grad_output=grad_output, W=W, h=h, input_idx=input_idx, b=b,
                     output_idx=output_idx, deterministic=deterministic)
    dtype = check_dot_grad(grad_output, W, h, input_idx, b, output_idx)
    _check_product_ranges(backend, W, input_idx, output_idx)

    dh, db = backend.zeros(h.shape, dtype), backend.zeros(b.shape, dtype)
    dW = _dot_grads(backend, dh, db, backend.floats(dtype, grad_output),
                    backend.floats(dtype, W), backend.floats(dtype, h),
                    backend.indices(input_idx), backend.indices(output_idx))
    return SparseBlockDotGrad(backend.wrap(dW), backend.wrap(dh), backend.wrap(db))
