"""CUDA kernels of the optimizer steps (``nbsparse.optim``): SGD and Adam, on a whole array or on listed blocks.

The GPU twins of ``nbsparse._cpu.optim``, with the same arguments and the same
arithmetic in the same order. Every kernel is element-wise and grid-stride:
thread ``t`` alone reads and writes element ``t`` (of the flat arrays for the
dense kernels; of the listed blocks, ``(k, j) = divmod(t, block_size)``, for the
block kernels, which see ``param`` as ``(n_grid_blocks, block_size)``). The
block ids are distinct, so no two threads write one element: no atomics, no
reductions, the same bits for any launch configuration. The scalars arrive in
``param``'s dtype, so a float32 step does no float64 arithmetic.
"""

import math

from numba import cuda

from . import launch


@launch.kernel
def _sgd_dense(param, grad, lr):
    """``param -= lr * grad`` on 1-D arrays."""
    for t in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        param[t] -= lr * grad[t]


@launch.kernel
def _sgd_blocks(param, ids, values, lr):
    """``param[ids[k]] -= lr * values[k]``; ``param`` ``(n_grid_blocks, block_size)``, ids distinct."""
    size = param.shape[1]
    for t in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        k = t // size
        j = t - k * size
        param[ids[k], j] -= lr * values[k, j]


@launch.kernel
def _adam_dense(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                correction1, correction2, eps):
    """One Adam step of every element of the 1-D arrays."""
    for t in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[t]
        m_new = beta1 * m[t] + one_minus_beta1 * g
        v_new = beta2 * v[t] + one_minus_beta2 * g * g
        m[t] = m_new
        v[t] = v_new
        param[t] -= lr * (m_new / correction1) / (math.sqrt(v_new / correction2) + eps)


@launch.kernel
def _adam_blocks(param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                 correction1, correction2, eps):
    """One Adam step of the listed blocks ``ids`` of ``param``, ``m``, ``v`` (``(n_grid_blocks, block_size)``)."""
    size = param.shape[1]
    for t in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        k = t // size
        j = t - k * size
        block = ids[k]
        g = values[k, j]
        m_new = beta1 * m[block, j] + one_minus_beta1 * g
        v_new = beta2 * v[block, j] + one_minus_beta2 * g * g
        m[block, j] = m_new
        v[block, j] = v_new
        param[block, j] -= lr * (m_new / correction1) / (math.sqrt(v_new / correction2) + eps)


# --------------------------------------------------------------------------- launchers

def sgd_dense(param, grad, lr, *, stream=0):
    """Same contract as ``_cpu.optim.sgd_dense``; the arrays are 1-D device arrays."""
    if param.size:
        _sgd_dense[launch.blocks_for(param.size), launch.threads(), stream](param, grad, lr)


def sgd_blocks(param, ids, values, lr, *, stream=0):
    """Same contract as ``_cpu.optim.sgd_blocks``; ``ids`` an ``intp`` device array."""
    if values.size:
        _sgd_blocks[launch.blocks_for(values.size), launch.threads(), stream](param, ids, values, lr)


def adam_dense(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
               correction1, correction2, eps, *, stream=0):
    """Same contract as ``_cpu.optim.adam_dense``; the arrays are 1-D device arrays."""
    if param.size:
        _adam_dense[launch.blocks_for(param.size), launch.threads(), stream](
            param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, correction1, correction2, eps)


def adam_blocks(param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                correction1, correction2, eps, *, stream=0):
    """Same contract as ``_cpu.optim.adam_blocks``; ``ids`` an ``intp`` device array."""
    if values.size:
        _adam_blocks[launch.blocks_for(values.size), launch.threads(), stream](
            param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
            correction1, correction2, eps)
