"""Named tuples returned by the gradient functions."""

from collections import namedtuple

SparseBlockDotGrad = namedtuple("SparseBlockDotGrad", ["W", "h", "b"])
SparseBlockDotGrad.__doc__ = "Gradients of ``sparse_block_dot`` with respect to ``W``, ``h`` and ``b``."

HSoftmaxGrad = namedtuple("HSoftmaxGrad", ["x", "W1", "b1", "W2", "b2"])
HSoftmaxGrad.__doc__ = "Gradients of ``h_softmax`` with respect to ``x``, ``W1``, ``b1``, ``W2`` and ``b2``."


class BlockGrad(namedtuple("BlockGrad", ["index", "values"])):
    """The gradient of a weight whose leading ``d`` axes index blocks, listing only the blocks a call touched.

    ``index`` is ``(n, d)`` ``intp``, its rows unique and in increasing
    lexicographic (C) order; ``values`` is ``(n, *block_shape)``: ``values[k]``
    is the gradient of the block at ``index[k]``. Every other block's gradient
    is zero. Both arrays are of the kind of the call's inputs.
    """

    __slots__ = ()

    def to_dense(self, shape):
        """The dense gradient of ``shape``: zeros outside the listed blocks.

        Equal, bit for bit on the CPU, to the gradient the same call returns
        with ``sparse=False``.

        Raises
        ------
        ValueError
            If the blocks do not fit ``shape``: another block shape, more index
            columns than ``shape`` has axes, or an index outside ``shape``'s grid.
        """
        from ._backend import select
        from ._kinds import any_dask_array

        shape = tuple(int(s) for s in shape)
        if any_dask_array((self.index, self.values)):
            return _lazy_dense(self, shape)
        backend = select(("index", "values"), (self.index, self.values))
        index, values = self.index, self.values
        if index.ndim != 2 or values.ndim < 1 or index.shape[0] != values.shape[0]:
            raise ValueError(f"BlockGrad: index {tuple(index.shape)} and values {tuple(values.shape)} "
                             "do not list the same blocks (index must be (n, d), values (n, ...))")
        d = index.shape[1]
        if d > len(shape) or tuple(values.shape[1:]) != shape[d:]:
            raise ValueError(f"BlockGrad with {d} index columns and blocks of shape {tuple(values.shape[1:])} "
                             f"does not fit shape {shape}")
        if index.shape[0] and not backend.all_in_grid(index, shape[:d]):
            raise ValueError(f"BlockGrad: an index row lies outside the block grid {shape[:d]} of shape {shape}")
        out = backend.zeros(shape, values.dtype)
        backend.scatter_blocks(out, index, values)
        return backend.wrap(out)


def _dense_of(index, values, shape):
    return BlockGrad(index, values).to_dense(shape)


def _lazy_dense(grad, shape):
    """``to_dense`` of a ``BlockGrad`` of Dask arrays: one lazy task (the block count is known only then)."""
    import dask
    import dask.array as da
    from dask.array.utils import meta_from_array

    dense = dask.delayed(_dense_of)(grad.index, grad.values, shape)
    return da.from_delayed(dense, shape, dtype=grad.values.dtype,
                           meta=meta_from_array(grad.values._meta, len(shape), grad.values.dtype))


HSoftmaxTopK = namedtuple("HSoftmaxTopK", ["indices", "log_probs"])
HSoftmaxTopK.__doc__ = ("The ``k`` most likely outputs of each row, by decreasing probability (ties by increasing "
                        "output index): ``indices`` ``(batch, k)`` ``intp`` and their ``log_probs``.")
