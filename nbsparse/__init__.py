"""nbsparse: Numba kernels for block-sparse products and the hierarchical softmax.

The public API (see ``API.md`` in the docs) is Theano-compatible: argument names
and orders follow ``theano.tensor.nnet.blocksparse`` and ``h_softmax``. NumPy
arrays run the Numba CPU kernels; Dask arrays build lazy graphs that run them
chunk by chunk. Importing nbsparse compiles nothing and imports neither Numba
nor Dask; kernels are compiled (and cached on disk) at first use.
"""

from . import _fork
from ._results import BlockGrad, HSoftmaxGrad, HSoftmaxTopK, SparseBlockDotGrad
from ._version import __version__
from .blocksparse import (
    sparse_block_dot,
    sparse_block_dot_grad,
    sparse_block_gemv,
    sparse_block_outer,
)
from .hsoftmax import h_softmax, h_softmax_grad, h_softmax_nll, h_softmax_nll_grad
from .inference import h_softmax_logprob, h_softmax_sample, h_softmax_topk
from .softmax import softmax, softmax_grad

__all__ = [
    "BlockGrad",
    "HSoftmaxGrad",
    "HSoftmaxTopK",
    "SparseBlockDotGrad",
    "__version__",
    "h_softmax",
    "h_softmax_grad",
    "h_softmax_logprob",
    "h_softmax_nll",
    "h_softmax_nll_grad",
    "h_softmax_sample",
    "h_softmax_topk",
    "softmax",
    "softmax_grad",
    "sparse_block_dot",
    "sparse_block_dot_grad",
    "sparse_block_gemv",
    "sparse_block_outer",
]

_fork.install()
