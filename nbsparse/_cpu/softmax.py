"""CPU kernels for the softmax and its gradient along the last axis of a 2-D array.

Each row is owned by one parallel iteration, so writes never collide.
"""

import numpy as np
from numba import prange

from .jit import cached_jit
from .tuning import FASTMATH


@cached_jit(parallel=True, fastmath=FASTMATH)
def softmax_rows(x, out):
    """In place: ``out[r] = exp(x[r] - max(x[r])) / sum(exp(x[r] - max(x[r])))``."""
    n_rows, n = x.shape
    for r in prange(n_rows):
        peak = -np.inf
        for k in range(n):
            peak = max(peak, x[r, k])
        total = 0.0
        for k in range(n):
            e = np.exp(x[r, k] - peak)
            out[r, k] = e
            total += e
        scale = 1.0 / total
        for k in range(n):
            out[r, k] *= scale


@cached_jit(parallel=True, fastmath=FASTMATH)
def softmax_grad_rows(g, y, out):
    """In place: ``out[r] = y[r] * (g[r] - sum(g[r] * y[r]))``."""
    n_rows, n = y.shape
    for r in prange(n_rows):
        dot = 0.0
        for k in range(n):
            dot += g[r, k] * y[r, k]
        for k in range(n):
            out[r, k] = y[r, k] * (g[r, k] - dot)
