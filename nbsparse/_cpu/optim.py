"""CPU kernels of the optimizer steps (``nbsparse.optim``): SGD and Adam, on a whole array or on listed blocks.

Every kernel is elementwise and updates ``param`` (and Adam's ``m``, ``v``) in
place. The dense kernels cut the flat arrays into ``OPTIM_CHUNK``-element
chunks, one parallel iteration each; the block kernels see ``param`` as
``(n_grid_blocks, block_size)`` and give each listed block to one iteration
(the block ids are distinct, so no two iterations write the same element).
No reduction and no fast-math: the results are the same bits for any thread
count, and NaN and inf propagate. The scalars arrive in ``param``'s dtype, so
every operation is in that dtype.
"""

import numpy as np
from numba import prange

from .jit import cached_jit
from .tuning import OPTIM_CHUNK


@cached_jit(inline="always")
def _chunk(a, c):
    """Chunk ``c`` of the 1-D ``a``. Indexing the chunk from 0, not ``a`` from ``c * OPTIM_CHUNK``,
    lets Numba drop its negative-index wraparound, and the loops vectorise (dense Adam 7x faster)."""
    return a[c * OPTIM_CHUNK:(c + 1) * OPTIM_CHUNK]


@cached_jit(parallel=True)
def sgd_dense(param, grad, lr):
    """In place, on 1-D arrays: ``param -= lr * grad``."""
    n = param.shape[0]
    for c in prange((n + OPTIM_CHUNK - 1) // OPTIM_CHUNK):
        p, g = _chunk(param, c), _chunk(grad, c)
        for i in range(p.shape[0]):
            p[i] -= lr * g[i]


@cached_jit(parallel=True)
def sgd_blocks(param, ids, values, lr):
    """In place: ``param[ids[k]] -= lr * values[k]``; ``param`` ``(n_grid_blocks, block_size)``, ids distinct."""
    size = param.shape[1]
    for k in prange(ids.shape[0]):
        block = ids[k]
        for j in range(size):
            param[block, j] -= lr * values[k, j]


@cached_jit(parallel=True)
def adam_dense(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
               correction1, correction2, eps):
    """In place, on 1-D arrays: one Adam step of every element (see ``nbsparse.optim.adam``)."""
    n = param.shape[0]
    for c in prange((n + OPTIM_CHUNK - 1) // OPTIM_CHUNK):
        p, gc, mc, vc = _chunk(param, c), _chunk(grad, c), _chunk(m, c), _chunk(v, c)
        for i in range(p.shape[0]):
            g = gc[i]
            m_new = beta1 * mc[i] + one_minus_beta1 * g
            v_new = beta2 * vc[i] + one_minus_beta2 * g * g
            mc[i] = m_new
            vc[i] = v_new
            p[i] -= lr * (m_new / correction1) / (np.sqrt(v_new / correction2) + eps)


@cached_jit(parallel=True)
def adam_blocks(param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                correction1, correction2, eps):
    """In place: one Adam step of the listed blocks ``ids`` of ``param``, ``m``, ``v`` (all
    ``(n_grid_blocks, block_size)``), ``values[k]`` the gradient of block ``ids[k]``; the others untouched."""
    size = param.shape[1]
    for k in prange(ids.shape[0]):
        block = ids[k]
        for j in range(size):
            g = values[k, j]
            m_new = beta1 * m[block, j] + one_minus_beta1 * g
            v_new = beta2 * v[block, j] + one_minus_beta2 * g * g
            m[block, j] = m_new
            v[block, j] = v_new
            param[block, j] -= lr * (m_new / correction1) / (np.sqrt(v_new / correction2) + eps)
