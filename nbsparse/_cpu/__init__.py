"""Numba CPU kernels, compiled on first use and cached on disk (see :mod:`.jit`).

Every kernel writes into arrays it is given, returns None and trusts its
inputs: the public functions have already validated shapes and index ranges
and normalised floats to one dtype and indices to C-contiguous ``intp``, so
each kernel compiles for float32 and float64 only.

Modules: the kernels (``products``, ``outer``, ``grads``, ``softmax``,
``hsoftmax``, ``inference``, ``optim``), their scheduling (``scheduling``), the loops over register
tiles (``tiles``) and the LLVM code they run (``codegen``), the tuning
constants (``tuning``) and the cached compilation (``jit``). Importing them
compiles nothing and starts no thread.
"""

from . import grads, hsoftmax, inference, optim, outer, products, softmax, topk, tuning

__all__ = ["grads", "hsoftmax", "inference", "optim", "outer", "products", "softmax", "topk", "tuning"]
