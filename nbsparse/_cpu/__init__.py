"""Numba CPU kernels (``@njit(parallel=True, cache=True)``).

Every kernel writes into arrays it is given, returns None and trusts its
inputs: the public functions have already validated shapes and index ranges
and normalised floats to one dtype and indices to C-contiguous ``intp``, so
each kernel compiles for float32 and float64 only.
"""

from . import blocksparse, hsoftmax, softmax

__all__ = ["blocksparse", "hsoftmax", "softmax"]
