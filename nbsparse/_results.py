"""Named tuples returned by the gradient functions."""

from collections import namedtuple

SparseBlockDotGrad = namedtuple("SparseBlockDotGrad", ["W", "h", "b"])
SparseBlockDotGrad.__doc__ = "Gradients of ``sparse_block_dot`` with respect to ``W``, ``h`` and ``b``."

HSoftmaxGrad = namedtuple("HSoftmaxGrad", ["x", "W1", "b1", "W2", "b2"])
HSoftmaxGrad.__doc__ = "Gradients of ``h_softmax`` with respect to ``x``, ``W1``, ``b1``, ``W2`` and ``b2``."
