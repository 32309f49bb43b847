"""The host backend: NumPy arrays and the Numba CPU kernels of ``nbsparse._cpu``.

Every CPU kernel launch of nbsparse is in this file, each through
``_threads.launch`` (the serialisation that Numba's ``workqueue`` threading
layer needs, see ``nbsparse._threads``). The kernel package is imported at the
first launch (:func:`_kernels`): importing it loads Numba, which
``import nbsparse`` and a call that fails validation never do.
"""

import functools

import numpy as np

from . import _hugepages, _threads
from . import _validate as v


@functools.cache
def _kernels():
    """``nbsparse._cpu``, imported at the first call; then a cached lookup (50 ns, 5x
    less than an import statement, for each of the up to 12 launches of a call)."""
    from . import _cpu

    return _cpu


class HostBackend:
    """The CPU backend: NumPy allocation and the ``nbsparse._cpu`` kernels.

    Implements :class:`nbsparse._backend.Backend`; see there for each method's contract.
    """

    # ------------------------------------------------------------------ arrays
    @staticmethod
    def floats(dtype, a):
        """``a`` as a C-contiguous ``dtype`` array (no copy when it already is one).

        A read-only float array is passed as it is (weights can be large): the
        kernels then compile, once and cached on disk, a read-only specialisation.
        """
        return np.ascontiguousarray(a, dtype=dtype)

    @staticmethod
    def indices(idx):
        """Validated indices as C-contiguous, writeable ``intp``.

        One kernel specialisation for every integer dtype and layout: Numba also
        specialises on read-only arrays, so those (small) are copied too.
        """
        out = np.ascontiguousarray(idx, dtype=np.intp)
        return out if out.flags.writeable else out.copy()

    @staticmethod
    def check_index_range(name, idx, n, what):
        """IndexError unless every value of ``idx`` is in ``[0, n)`` (see ``_validate``)."""
        v.check_index_range(name, idx, n, what)

    @staticmethod
    def empty(shape, dtype):
        return _hugepages.empty(shape, dtype)  # large results and temporaries: recycled mappings

    @staticmethod
    def zeros(shape, dtype):
        return _hugepages.zeros(shape, dtype)  # the gradients: fresh, sometimes large

    @staticmethod
    def copy(a, dtype):
        """A new C-contiguous ``dtype`` copy of ``a`` that the kernels may write into (recycled memory when large)."""
        out = _hugepages.empty(a.shape, dtype)
        out[...] = a
        return out

    @staticmethod
    def moveaxis(a, source, destination):
        return np.moveaxis(a, source, destination)

    @staticmethod
    def is_writeable(a):
        return a.flags.writeable

    @staticmethod
    def overlaps(a, others):
        """True when ``a`` may share memory with any of ``others`` (see ``nbsparse._overlap``)."""
        return any(np.may_share_memory(a, b) for b in others)

    @staticmethod
    def write_back(target, result):
        """Copy ``result`` into ``target`` unless they are the same buffer."""
        if result is not target:
            target[...] = result

    @staticmethod
    def wrap(result):
        """The result in the caller's array kind (NumPy in, NumPy out)."""
        return result

    # ------------------------------------------------------------------ block-sparse kernels
    @staticmethod
    def gemv(o, W, h, input_idx, output_idx):
        _threads.launch(_kernels().products.gemv, o, W, h, input_idx, output_idx)

    @staticmethod
    def set_bias(o, bias, output_idx):
        _threads.launch(_kernels().products.set_bias, o, bias, output_idx)

    @staticmethod
    def outer(o, x, y, x_idx, y_idx, alpha, clear):
        _threads.launch(_kernels().outer.outer, o, x, y, x_idx, y_idx, alpha, clear)

    @staticmethod
    def weight_gradient(shape, x, y, x_idx, y_idx):
        """A new ``shape`` array (recycled huge pages when large) filled by ``_cpu.outer.weight_gradient``."""
        o = _hugepages.empty(shape, x.dtype)
        _threads.launch(_kernels().outer.weight_gradient, o, x, y, x_idx, y_idx)
        return o

    @staticmethod
    def grad_h(dh, W, g, input_idx, output_idx):
        _threads.launch(_kernels().grads.grad_h, dh, W, g, input_idx, output_idx)

    @staticmethod
    def bias_grad(db, g, output_idx):
        _threads.launch(_kernels().grads.bias_grad, db, g, output_idx)

    # ------------------------------------------------------------------ softmax kernels
    @staticmethod
    def softmax_rows(x, out):
        _threads.launch(_kernels().softmax.softmax_rows, x, out)

    @staticmethod
    def softmax_grad_rows(g, y, out):
        _threads.launch(_kernels().softmax.softmax_grad_rows, g, y, out)

    # ------------------------------------------------------------------ hierarchical softmax kernels
    @staticmethod
    def split_target(target, K, classes, slots):
        _threads.launch(_kernels().hsoftmax.split_target, target, K, classes, slots)

    @staticmethod
    def target_forward(p_class, p_slot, classes, slots, out):
        _threads.launch(_kernels().hsoftmax.target_forward, p_class, p_slot, classes, slots, out)

    @staticmethod
    def target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot):
        _threads.launch(_kernels().hsoftmax.target_backward, g, p_class, p_slot, classes, slots, d_class, d_slot)

    @staticmethod
    def nll_forward(a_class, a_slot, classes, slots, out):
        _threads.launch(_kernels().hsoftmax.nll_forward, a_class, a_slot, classes, slots, out)

    @staticmethod
    def nll_backward(g, a_class, a_slot, classes, slots, d_class, d_slot):
        _threads.launch(_kernels().hsoftmax.nll_backward, g, a_class, a_slot, classes, slots, d_class, d_slot)

    def h_softmax_full(self, p):
        """Full-mode ``h_softmax``: BLAS products around one fused kernel (``full_dense``)."""
        out = self.empty((p.batch, p.n_outputs), p.dtype)
        a_class, a_slot = _dense_products(p)
        _threads.launch(_kernels().hsoftmax.full_dense, a_class, p.b1.reshape(-1), a_slot, p.b2, out)
        return out

    @staticmethod
    def h_softmax_full_grad(p, g):
        """Full-mode ``h_softmax_grad``: BLAS products around one fused kernel (``full_dense_backward``)."""
        a_class, a_slot = _dense_products(p)
        d_class = np.empty(a_class.shape, p.dtype)
        d_slot = _hugepages.empty(a_slot.shape, p.dtype)  # (C, batch, K)
        _threads.launch(_kernels().hsoftmax.full_dense_backward, g, a_class, p.b1.reshape(-1), a_slot, p.b2,
                        d_class, d_slot)
        xs = p.h.reshape(p.batch, p.n_in)
        W1s = p.W1.reshape(p.n_in, p.n_classes)
        W2s = p.W2.reshape(p.n_classes, p.n_in, p.K)
        with np.errstate(all="ignore"):  # NaN and inf propagate, as in the kernels: no warning
            dx = d_class @ W1s.T
            for c in range(p.n_classes):  # one GEMM per class: no (C, batch, n_in) temporary
                dx += d_slot[c] @ W2s[c].T
            return (dx, xs.T @ d_class, d_class.sum(axis=0),
                    np.matmul(xs.T, d_slot, out=_hugepages.empty(W2s.shape, p.dtype)),
                    d_slot.sum(axis=1))


def _dense_products(p):
    """Full mode: ``(x @ W1, x @ W2)`` by NumPy's BLAS, ``(batch, C)`` and ``(C, batch, K)``.

    Every class block meets every row, so these are dense GEMMs: BLAS runs them
    about 5x faster than the block-sparse kernels, and ``np.matmul`` reads ``W2``
    in place (no transposed copy, unlike ``tensordot``).
    """
    x = p.h.reshape(p.batch, p.n_in)
    a_slot = _hugepages.empty((p.n_classes, p.batch, p.K), p.dtype)
    with np.errstate(all="ignore"):  # NaN and inf propagate, as in the kernels: no warning
        np.matmul(x, p.W2.reshape(p.n_classes, p.n_in, p.K), out=a_slot)
        return x @ p.W1.reshape(p.n_in, p.n_classes), a_slot


HOST_BACKEND = HostBackend()
