"""Where a call runs: the contract both backends implement, and the choice between them.

The array kind of a call's inputs picks the backend (``nbsparse._kinds``): NumPy
arrays run on :class:`nbsparse._host.HostBackend` (the Numba CPU kernels),
device arrays on :class:`nbsparse._device.DeviceBackend` (the ``@cuda.jit``
kernels). The public modules speak only :class:`Backend`: they never ask which
backend they have, and each backend owns its choice of kernel variants.
"""

from typing import Protocol

import numpy as np

from ._host import HOST_BACKEND
from ._kinds import DEVICE, check_sides


class Backend(Protocol):
    """The operations a public function asks of the backend that runs it.

    Array arguments and results are of the backend's kind (NumPy arrays on the
    host, Numba device arrays on the GPU). The kernel operations take arguments
    that are validated and normalised (C-contiguous floats of one dtype, ``intp``
    indices from :meth:`indices`), write in place into their output arguments and
    return None, unless they say otherwise; they trust their inputs.
    """

    # -------------------------------------------------------------- arrays
    def floats(self, dtype, a):
        """``a`` as a C-contiguous array of ``dtype`` (no copy when it already is one)."""

    def indices(self, idx):
        """Validated indices (of the backend's kind, or a small host array) as C-contiguous ``intp``."""

    def check_index_range(self, name, idx, n, what):
        """IndexError naming the first position of ``idx`` outside ``[0, n)``; ``what`` explains ``n``."""

    def empty(self, shape, dtype):
        """A new uninitialised C-contiguous array."""

    def zeros(self, shape, dtype):
        """A new C-contiguous array of zeros."""

    def copy(self, a, dtype):
        """A new C-contiguous ``dtype`` copy of the caller's ``a``, which the kernels may write into."""

    def moveaxis(self, a, source, destination):
        """A view of ``a`` with axis ``source`` moved to ``destination``."""

    def is_writeable(self, a):
        """False when the caller's ``a`` is read-only."""

    def overlaps(self, a, others):
        """True when ``a`` may share memory with any of ``others`` (never a false "no")."""

    def restored_on_memory_error(self, a):
        """A context manager: a ``MemoryError`` raised inside it leaves the caller's ``a`` as it was."""

    def write_back(self, target, result):
        """Copy ``result`` into the caller's ``target`` unless the kernel wrote there directly."""

    def wrap(self, result):
        """``result`` in the kind of the caller's arrays (e.g. a CuPy array when CuPy came in)."""

    def all_in_grid(self, index, grid):
        """True when every row of the ``(n, d)`` ``index`` lies in ``[0, grid[k])`` on each axis ``k``."""

    def scatter_blocks(self, out, index, values):
        """``out[tuple(index[k])] = values[k]`` for every row ``k`` of ``index`` (rows distinct)."""

    # -------------------------------------------------------------- block-sparse products
    def gemv(self, o, W, h, input_idx, output_idx):
        """``o[b, j] += sum_i h[b, i] @ W[input_idx[b, i], output_idx[b, j]]``."""

    def set_bias(self, o, bias, output_idx):
        """``o[b, j] = bias[output_idx[b, j]]``."""

    def outer(self, o, x, y, x_idx, y_idx, alpha, clear):
        """``o[x_idx[b, i], y_idx[b, j]] += alpha * outer(x[b, i], y[b, j])``; ``clear`` zeroes ``o`` first."""

    def weight_gradient(self, shape, x, y, x_idx, y_idx):
        """A new ``shape`` array: ``outer`` with ``alpha = 1`` into zeros, by the backend's fastest way."""

    def weight_gradient_blocks(self, grid, x, y, x_idx, y_idx):
        """The gradient of :meth:`weight_gradient` on a ``grid`` of blocks as ``(index, values)``:
        the touched block pairs, a host ``(n, 2)`` ``intp`` array in C order, and their
        ``(n, x_size, y_size)`` blocks (a backend array)."""

    def bias_grad_blocks(self, g, output_idx):
        """The bias gradient as ``(index, values)``: the touched blocks, a host ``(n, 1)`` ``intp``
        array, increasing, and their rows (a backend array)."""

    def from_host_index(self, index):
        """A host ``intp`` index array in the backend's kind."""

    def grad_h(self, dh, W, g, input_idx, output_idx):
        """``dh[b, i] += sum_j W[input_idx[b, i], output_idx[b, j]] @ g[b, j]``."""

    def bias_grad(self, db, g, output_idx):
        """``db[output_idx[b, j]] += g[b, j]`` for every ``b, j``."""

    # -------------------------------------------------------------- softmax
    def softmax_rows(self, x, out):
        """The softmax of each row of the 2-D ``x`` into ``out``."""

    def softmax_grad_rows(self, g, y, out):
        """``out = y * (g - sum(g * y, axis=1, keepdims=True))``, row by row."""

    # -------------------------------------------------------------- hierarchical softmax
    def split_target(self, target, K, classes, slots):
        """``classes = target // K``, ``slots = target % K``."""

    def target_forward(self, p_class, p_slot, classes, slots, out):
        """``out[n] = p_class[n, classes[n]] * p_slot[n, slots[n]]``."""

    def target_backward(self, g, p_class, p_slot, classes, slots, d_class, d_slot):
        """Target mode: the softmax-input gradients of both levels from ``g``, ``(batch,)``."""

    def nll_forward(self, a_class, a_slot, classes, slots, out):
        """``out[n] = -log P(target[n])`` from the activations of both levels, in log space."""

    def nll_backward(self, g, a_class, a_slot, classes, slots, d_class, d_slot):
        """``d = g[n] * (softmax(a) - onehot(target))`` at both levels."""

    def h_softmax_topk(self, p, k):
        """``(indices, log_probs, classes_read)``: each row's ``k`` most likely outputs of the
        problem ``p`` (built without a target), sorted, and the class blocks read per row."""

    def h_softmax_full(self, problem):
        """Full-mode ``h_softmax`` of an ``nbsparse._hierarchy.Problem``: a new ``(batch, n_outputs)`` array."""

    def h_softmax_full_grad(self, problem, g):
        """Full-mode ``h_softmax_grad`` for the upstream gradient ``g``, ``(batch, n_outputs)``.

        Returns new arrays ``(x, W1, b1, W2, b2)``, each shaped like that argument.
        """

    # -------------------------------------------------------------- inference (``nbsparse.inference``)
    def h_softmax_logprob(self, problem, candidates):
        """``log P(candidates[n, j] | x[n])`` in log space, a new ``(batch, m)`` array of the problem's dtype.

        ``problem`` an ``nbsparse._hierarchy.Problem`` (built without a target; only its class
        activations are used), ``candidates`` ``(batch, m)`` indices in ``[0, n_outputs)``;
        only the candidates' class blocks of ``W2``/``b2`` are read.
        """

    def h_softmax_sample(self, problem, seed):
        """A new ``(batch,)`` ``intp`` array: one output per row drawn from the problem's
        probabilities renormalised over ``[0, n_outputs)``; row ``n``'s draws depend only on
        ``(seed, n)`` (``seed`` an integer in ``[0, 2**64)``)."""

    # -------------------------------------------------------------- optimizer steps (``nbsparse.optim``)
    def sgd_dense(self, param, grad, lr):
        """``param -= lr * grad`` on 1-D arrays; ``lr`` a scalar of their dtype."""

    def sgd_blocks(self, param, ids, values, lr):
        """``param[ids[k]] -= lr * values[k]``: ``param`` ``(n_grid_blocks, block_size)``, ``ids`` distinct."""

    def adam_dense(self, param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                   correction1, correction2, eps):
        """One Adam step of every element of the 1-D ``param``, ``m``, ``v``.

        ``m = beta1 * m + one_minus_beta1 * g``, ``v = beta2 * v + one_minus_beta2 * g * g``,
        ``param -= lr * (m / correction1) / (sqrt(v / correction2) + eps)``; the scalars are of
        the arrays' dtype, the bias corrections ``1 - beta**t`` computed by the caller.
        """

    def adam_blocks(self, param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                    correction1, correction2, eps):
        """:meth:`adam_dense` on the listed blocks ``ids`` of ``(n_grid_blocks, block_size)`` arrays only,
        ``values[k]`` the gradient of block ``ids[k]`` (ids distinct); the other blocks are left as they are."""


def select(names, arrays, optional=(), deterministic=False):
    """Return the backend for a call whose array arguments are ``arrays``, named ``names``.

    Arguments named in ``optional`` may be None and are then skipped; None for
    any other argument is a TypeError like any other non-array.
    ``deterministic`` asks the GPU backend for bit-reproducible accumulations
    (the CPU kernels always are).

    Raises
    ------
    TypeError
        If an argument is not an array, or host and device arrays are mixed; the
        message names the arguments on each side.
    ImportError
        For device arrays when numba-cuda (the ``cuda`` extra) is not installed.
    """
    for a in arrays:
        if not isinstance(a, np.ndarray):
            break
    else:  # all NumPy: no side to mix (1 us less than sorting them into sides)
        return HOST_BACKEND
    sides = check_sides(names, arrays, optional)
    if sides[DEVICE]:
        from ._device import DeviceBackend  # loads numba.cuda: only when a device array comes

        on_device = set(sides[DEVICE])
        return DeviceBackend([a for name, a in zip(names, arrays) if name in on_device],
                             deterministic)
    return HOST_BACKEND
