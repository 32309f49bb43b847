"""The host backend: NumPy arrays and the Numba CPU kernels of ``nbsparse._cpu``.

Every CPU kernel launch of nbsparse is in this file, each through
``_launch`` and ``_threads.launch`` (the serialisation that Numba's ``workqueue`` threading
layer needs, see ``nbsparse._threads``). A parallel kernel's launch says how
much work it holds (``items``, in the unit of the kernel's entry in
``nbsparse._cpu.tuning.MIN_ITEMS_PER_THREAD``), so that ``nbsparse._team``
gives it no more threads than that work pays for and the machine has free. The kernel package is imported at the
first launch (:func:`_kernels`): importing it loads Numba, which
``import nbsparse`` and a call that fails validation never do.
"""

import functools

import numpy as np

from . import _hugepages, _threads
from . import _validate as v


def _launch(kernel, *args, items=None):
    """``_threads.launch``, with ``kernel``'s ``MIN_ITEMS_PER_THREAD`` entry when ``items`` is given.

    A kernel whose own scratch allocation fails inside a parallel loop comes back
    from Numba as ``SystemError: ... returned a result with an exception set``
    (the ``MemoryError`` as its cause): that is raised as the ``MemoryError`` it is.
    """
    per_thread = None if items is None else _kernels().tuning.MIN_ITEMS_PER_THREAD[kernel.__name__]
    try:
        return _threads.launch(kernel, *args, items=items, min_items_per_thread=per_thread)
    except SystemError as error:
        if not isinstance(error.__cause__, MemoryError):
            raise
        raise MemoryError(f"out of memory for the scratch buffers of the CPU kernel {kernel.__name__!r} "
                          f"({error.__cause__})") from error.__cause__


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
    def restored_on_memory_error(a):
        """A context manager that keeps a copy of ``a`` and writes it back if a ``MemoryError`` leaves the block.

        ``gemv`` allocates scratch inside its parallel loop, so it can run out of
        memory after other iterations have written their part of ``a``. (``outer``
        allocates all of its scratch before its loop writes: no copy needed.)
        """
        return _Restored(a)

    @staticmethod
    def write_back(target, result):
        """Copy ``result`` into ``target`` unless they are the same buffer."""
        if result is not target:
            target[...] = result

    @staticmethod
    def all_in_grid(index, grid):
        """True when every row of the ``(n, d)`` ``index`` lies in ``[0, grid[k])`` on each axis ``k``."""
        return bool(((index >= 0) & (index < np.asarray(grid, dtype=np.intp))).all())

    @staticmethod
    def scatter_blocks(out, index, values):
        """``out[tuple(index[k])] = values[k]`` for every listed block (rows of ``index`` are distinct)."""
        out[tuple(np.asarray(index, dtype=np.intp).T)] = values

    @staticmethod
    def wrap(result):
        """The result in the caller's array kind (NumPy in, NumPy out)."""
        return result

    # ------------------------------------------------------------------ block-sparse kernels
    @staticmethod
    def gemv(o, W, h, input_idx, output_idx):
        _launch(_kernels().products.gemv, o, W, h, input_idx, output_idx,
                        items=_multiply_adds(h, o))

    @staticmethod
    def set_bias(o, bias, output_idx):
        _launch(_kernels().products.set_bias, o, bias, output_idx, items=o.size)

    @staticmethod
    def outer(o, x, y, x_idx, y_idx, alpha, clear):
        _launch(_kernels().outer.outer, o, x, y, x_idx, y_idx, alpha, clear, o.shape[0], o.shape[1],
                items=_multiply_adds(x, y) + (o.size if clear else 0))

    @staticmethod
    def weight_gradient(shape, x, y, x_idx, y_idx):
        """A new ``shape`` array (recycled huge pages when large) filled by ``_cpu.outer.weight_gradient``."""
        o = _hugepages.empty(shape, x.dtype)
        _launch(_kernels().outer.weight_gradient, o, x, y, x_idx, y_idx,
                        items=_multiply_adds(x, y) + o.size)
        return o

    @staticmethod
    def weight_gradient_blocks(grid, x, y, x_idx, y_idx):
        """``(index, values)`` of ``_cpu.outer.weight_gradient_blocks`` on the ``grid`` of blocks."""
        return _launch(_kernels().outer.weight_gradient_blocks, x, y, x_idx, y_idx, grid[0], grid[1],
                       items=_multiply_adds(x, y))

    @staticmethod
    def bias_grad_blocks(g, output_idx):
        """``(index, values)`` of ``_cpu.grads.bias_grad_blocks``."""
        return _launch(_kernels().grads.bias_grad_blocks, g, output_idx, items=2 * g.size)

    @staticmethod
    def from_host_index(index):
        return index

    @staticmethod
    def grad_h(dh, W, g, input_idx, output_idx):
        _launch(_kernels().grads.grad_h, dh, W, g, input_idx, output_idx, items=_multiply_adds(dh, g))

    @staticmethod
    def bias_grad(db, g, output_idx):
        _launch(_kernels().grads.bias_grad, db, g, output_idx, items=g.size + db.size)

    # ------------------------------------------------------------------ softmax kernels
    @staticmethod
    def softmax_rows(x, out):
        _launch(_kernels().softmax.softmax_rows, x, out, items=x.size)

    @staticmethod
    def softmax_grad_rows(g, y, out):
        _launch(_kernels().softmax.softmax_grad_rows, g, y, out, items=g.size)

    # ------------------------------------------------------------------ hierarchical softmax kernels
    @staticmethod
    def split_target(target, K, classes, slots):
        _launch(_kernels().hsoftmax.split_target, target, K, classes, slots)

    @staticmethod
    def target_forward(p_class, p_slot, classes, slots, out):
        _launch(_kernels().hsoftmax.target_forward, p_class, p_slot, classes, slots, out,
                        items=out.size)

    @staticmethod
    def target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot):
        _launch(_kernels().hsoftmax.target_backward, g, p_class, p_slot, classes, slots, d_class, d_slot,
                        items=d_class.size + d_slot.size)

    @staticmethod
    def nll_forward(a_class, a_slot, classes, slots, out):
        _launch(_kernels().hsoftmax.nll_forward, a_class, a_slot, classes, slots, out,
                        items=a_class.size + a_slot.size)

    @staticmethod
    def nll_backward(g, a_class, a_slot, classes, slots, d_class, d_slot):
        _launch(_kernels().hsoftmax.nll_backward, g, a_class, a_slot, classes, slots, d_class, d_slot,
                        items=d_class.size + d_slot.size)

    # ------------------------------------------------------------------ optimizer steps
    @staticmethod
    def sgd_dense(param, grad, lr):
        _launch(_kernels().optim.sgd_dense, param, grad, lr, items=param.size)

    @staticmethod
    def sgd_blocks(param, ids, values, lr):
        _launch(_kernels().optim.sgd_blocks, param, ids, values, lr, items=values.size)

    @staticmethod
    def adam_dense(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                   correction1, correction2, eps):
        _launch(_kernels().optim.adam_dense, param, grad, m, v, lr, beta1, beta2, one_minus_beta1,
                one_minus_beta2, correction1, correction2, eps, items=param.size)

    @staticmethod
    def adam_blocks(param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                    correction1, correction2, eps):
        _launch(_kernels().optim.adam_blocks, param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1,
                one_minus_beta2, correction1, correction2, eps, items=values.size)

    @staticmethod
    def h_softmax_topk(p, k):
        """``(indices, log_probs, classes_read)`` of ``_cpu.topk.topk`` on the problem ``p`` (no target)."""
        a_class = p.class_activations()
        indices = np.empty((p.batch, k), np.intp)
        log_probs = np.empty((p.batch, k), p.dtype)
        classes_read = np.empty(p.batch, np.intp)
        _launch(_kernels().topk.topk, a_class, p.h.reshape(p.batch, p.n_in), p.W2.reshape(p.n_classes, p.n_in, p.K),
                p.b2, p.n_outputs, indices, log_probs, classes_read, items=p.batch * p.n_in * p.n_classes * p.K)
        return indices, log_probs, classes_read

    def h_softmax_full(self, p):
        """Full-mode ``h_softmax``: BLAS products around one fused kernel (``full_dense``)."""
        out = self.empty((p.batch, p.n_outputs), p.dtype)
        a_class, a_slot = _dense_products(p)
        _launch(_kernels().hsoftmax.full_dense, a_class, p.b1.reshape(-1), a_slot, p.b2, out)
        return out

    @staticmethod
    def h_softmax_full_grad(p, g):
        """Full-mode ``h_softmax_grad``: BLAS products around one fused kernel (``full_dense_backward``)."""
        a_class, a_slot = _dense_products(p)
        d_class = np.empty(a_class.shape, p.dtype)
        d_slot = _hugepages.empty(a_slot.shape, p.dtype)  # (C, batch, K)
        _launch(_kernels().hsoftmax.full_dense_backward, g, a_class, p.b1.reshape(-1), a_slot, p.b2,
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


    # ------------------------------------------------------------------ inference (nbsparse.inference)
    def h_softmax_logprob(self, p, candidates):
        """``log P(candidates[n, j] | x[n])``: the class level, then ``logprob`` on the candidates' classes."""
        batch, m = candidates.shape
        out = self.empty((batch, m), p.dtype)
        _launch(_kernels().inference.logprob, p.class_activations(), p.h.reshape(batch, p.n_in),
                p.W2.reshape(p.n_classes, p.n_in, p.K), p.b2, candidates, p.K, out,
                items=batch * min(m, p.n_classes) * p.n_in * p.K)
        return out

    def h_softmax_sample(self, p, seed):
        """One output per row drawn by ``sample`` (one class block per row, two after a rejection)."""
        out = self.empty((p.batch,), np.intp)
        a_class = p.class_activations()
        # The draws' hash wraps around uint64 on purpose: NumPy would warn when the kernel runs as Python.
        with np.errstate(over="ignore"):
            _launch(_kernels().inference.sample, a_class, p.h.reshape(p.batch, p.n_in),
                    p.W2.reshape(p.n_classes, p.n_in, p.K), p.b2, p.K, p.n_outputs, np.uint64(seed), out,
                    items=p.batch * p.n_in * p.K)
        return out


class _Restored:
    """See ``HostBackend.restored_on_memory_error``. A class: 0.6 µs with the copy of a small
    ``o``, against 1.3 µs and more for a generator-based context manager, on a 50 µs call."""

    __slots__ = ("array", "kept")

    def __init__(self, array):
        self.array, self.kept = array, array.copy()

    def __enter__(self):
        return self.array

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, MemoryError):
            self.array[...] = self.kept
        return False


def _multiply_adds(a, b):
    """Multiply-adds of a block-sparse product between ``a`` ``(batch, a_win, a_size)`` and
    ``b`` ``(batch, b_win, b_size)``: a block of ``a_size x b_size`` per window pair of a row."""
    batch, a_win, a_size = a.shape
    return batch * a_win * a_size * b.shape[1] * b.shape[2]


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
