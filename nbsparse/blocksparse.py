"""Block-sparse products: Theano's SparseBlockGemv, SparseBlockOuter and sparse_block_dot.

Each public function validates its arguments completely (kinds, dtypes, shapes,
index ranges) before any kernel runs or anything is written, then normalises
floats to the result dtype and indices to ``intp`` and runs the operations of
the backend that the array kind selected (``nbsparse._dispatch``).
"""

from . import _checks
from ._dispatch import array_op
from ._products import dot, dot_grads, dot_grads_blocks
from ._results import BlockGrad, SparseBlockDotGrad


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


@array_op("o", "W", "h", "input_idx", "output_idx")
def sparse_block_gemv(o, W, h, input_idx, output_idx, *, inplace=False, backend):
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
    dtype = _checks.check_gemv(o, W, h, input_idx, output_idx)
    if inplace:
        _checks.check_inplace("o", o, dtype, backend)
    _checks.check_product_ranges(backend, W, input_idx, output_idx)

    out = _writable_result(backend, dtype, o, inplace, (W, h, input_idx, output_idx))
    W, h = backend.floats(dtype, W), backend.floats(dtype, h)
    input_idx, output_idx = backend.indices(input_idx), backend.indices(output_idx)
    if out is o:  # the kernel writes into the caller's o: kept whole if it runs out of memory
        with backend.restored_on_memory_error(o):
            backend.gemv(out, W, h, input_idx, output_idx)
    else:
        backend.gemv(out, W, h, input_idx, output_idx)
    if inplace:
        backend.write_back(o, out)
        return o
    return backend.wrap(out)


@array_op("W", "h", "input_idx", "b", "output_idx")
def sparse_block_dot(W, h, input_idx, b, output_idx, *, backend):
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
    dtype = _checks.check_dot(W, h, input_idx, b, output_idx)
    _checks.check_product_ranges(backend, W, input_idx, output_idx)
    return backend.wrap(dot(backend, dtype, W, h, input_idx, b, output_idx))


@array_op("o", "x", "y", "x_idx", "y_idx")
def sparse_block_outer(o, x, y, x_idx, y_idx, alpha=1.0, *, inplace=False, deterministic=False,
                       backend):
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
    dtype, alpha = _checks.check_outer(o, x, y, x_idx, y_idx, alpha)
    if inplace:
        _checks.check_inplace("o", o, dtype, backend)
    backend.check_index_range("x_idx", x_idx, o.shape[0], f"o has {o.shape[0]} x blocks")
    backend.check_index_range("y_idx", y_idx, o.shape[1], f"o has {o.shape[1]} y blocks")

    out = _writable_result(backend, dtype, o, inplace, (x, y, x_idx, y_idx))
    backend.outer(out, backend.floats(dtype, x), backend.floats(dtype, y),
                  backend.indices(x_idx), backend.indices(y_idx), dtype.type(alpha), False)
    if inplace:
        backend.write_back(o, out)
        return o
    return backend.wrap(out)


@array_op("grad_output", "W", "h", "input_idx", "b", "output_idx")
def sparse_block_dot_grad(grad_output, W, h, input_idx, b, output_idx, *, deterministic=False,
                          sparse=False, backend):
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
    sparse : bool, optional
        Return the ``W`` and ``b`` gradients as :class:`BlockGrad` block lists:
        the distinct ``(input_idx, output_idx)`` pairs (``W``) and ``output_idx``
        values (``b``) and their blocks, each the same bits as in the dense
        result; nothing of ``W``'s size is allocated. Not yet for Dask arrays.

    Returns
    -------
    SparseBlockDotGrad
        Named tuple ``(W, h, b)`` of new arrays shaped like ``W``, ``h`` and ``b``, of
        dtype ``np.result_type(grad_output, W, h, b)``. Blocks of ``W`` and ``b`` that
        no index selects get exactly zero. With ``sparse=True``, ``W`` and ``b`` are
        :class:`BlockGrad` instead.

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
    dtype = _checks.check_dot_grad(grad_output, W, h, input_idx, b, output_idx)
    _checks.check_product_ranges(backend, W, input_idx, output_idx)

    if sparse:
        dh = backend.zeros(h.shape, dtype)
        (w_index, w_values), (b_index, b_values) = dot_grads_blocks(
            backend, dh, backend.floats(dtype, grad_output), backend.floats(dtype, W),
            backend.floats(dtype, h), backend.indices(input_idx), backend.indices(output_idx))
        return SparseBlockDotGrad(BlockGrad(backend.wrap(backend.from_host_index(w_index)), backend.wrap(w_values)),
                                  backend.wrap(dh),
                                  BlockGrad(backend.wrap(backend.from_host_index(b_index)), backend.wrap(b_values)))
    dh, db = backend.zeros(h.shape, dtype), backend.zeros(b.shape, dtype)
    dW = dot_grads(backend, dh, db, backend.floats(dtype, grad_output),
                   backend.floats(dtype, W), backend.floats(dtype, h),
                   backend.indices(input_idx), backend.indices(output_idx))
    return SparseBlockDotGrad(backend.wrap(dW), backend.wrap(dh), backend.wrap(db))
