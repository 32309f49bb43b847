"""Numba CUDA kernels (``@cuda.jit``, compiled lazily at the first launch).

The launchers in ``blocksparse``, ``softmax``, ``hsoftmax``, ``inference`` and ``topk`` have the names and
positional signatures of ``nbsparse._cpu``: they take Numba device arrays
(C-contiguous, floats of one dtype, ``intp`` indices, already validated), write
in place, return None and accept a keyword ``stream``. Importing this package
compiles nothing and touches no driver.
"""

import numpy as np

# numba-cuda 0.30 registers an overload for ``np.row_stack``, which NumPy 2.5
# removed: the first kernel compile then fails with AttributeError (seen on a real
# GPU; the simulator never compiles). The alias must exist before numba.cuda
# builds its typing tables.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from . import arrays, blocksparse, hsoftmax, inference, launch, softmax, topk  # noqa: E402

__all__ = ["arrays", "blocksparse", "hsoftmax", "inference", "launch", "softmax", "topk"]
