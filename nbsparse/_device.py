"""The GPU side of the dispatch: zero-copy device views, the caller's stream, the caller's kind.

Imported only when a call receives a device array, so ``import nbsparse`` never
loads ``numba.cuda``. CuPy is never imported here: a caller passing CuPy arrays
has imported it already, so it is looked up in ``sys.modules``.
"""

import contextlib
import importlib.util
import sys

import numpy as np

from . import _overlap
from . import _validate as v

if importlib.util.find_spec("numba_cuda") is None:
    raise ImportError(
        "nbsparse's GPU backend needs the numba-cuda package, which is not installed: "
        "pip install 'nbsparse[cuda]' (add CuPy and the CUDA 12 compiler with 'nbsparse[cu12]')"
    )

from numba import cuda  # noqa: E402  (after the check above, which names the missing extra)

from . import _cuda  # noqa: E402
from ._cuda import blocksparse as cuda_blocksparse  # noqa: E402
from ._cuda import hsoftmax as cuda_hsoftmax  # noqa: E402
from ._cuda import inference as cuda_inference  # noqa: E402
from ._cuda import optim as cuda_optim  # noqa: E402
from ._cuda import softmax as cuda_softmax  # noqa: E402
from ._cuda import topk as cuda_topk  # noqa: E402
from ._cuda.launch import SIM  # noqa: E402

#: Most index values one ``count_outside`` launch checks: its counter is an int32,
#: so a larger array could overflow it (2**32 bad values would even count as 0).
INDEX_CHECK_CHUNK = 2**31 - 1


class _HostView:
    """Exposes a simulator-side ``__cuda_array_interface__`` (host memory) as a NumPy array."""

    def __init__(self, interface, owner):
        self.__array_interface__ = {
            "shape": tuple(interface["shape"]),
            "typestr": interface["typestr"],
            "data": interface["data"],
            "strides": interface.get("strides"),
            "version": 3,
        }
        self._owner = owner


def _cupy():
    return sys.modules.get("cupy")


def _is_cupy(a):
    cp = _cupy()
    return cp is not None and isinstance(a, cp.ndarray)


def as_device(a):
    """A Numba device array viewing ``a``'s memory (no copy, no synchronisation)."""
    if getattr(a, "__cuda_ndarray__", False):
        return a
    if SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.asarray(_HostView(a.__cuda_array_interface__, owner=a)))
    # sync=False: we launch on the producer's stream (see ``_launch_stream``), so
    # waiting for it on the host would only add a synchronisation.
    return cuda.as_cuda_array(a, sync=False)


def _extent(a):
    """The byte range of the device memory that ``a`` views (see ``nbsparse._overlap``)."""
    d = as_device(a)
    # The simulator's arrays wrap host NumPy arrays and have no CUDA array interface.
    return _overlap.byte_extent(d._ary.__array_interface__ if SIM else d.__cuda_array_interface__)


def _launch_stream(arrays):
    """CuPy's current stream when a CuPy array is involved, else the default stream."""
    if SIM:
        return 0
    cp = _cupy()
    if cp is not None and any(_is_cupy(a) for a in arrays):
        return cuda.external_stream(cp.cuda.get_current_stream().ptr)
    return 0


def _assign(dst, src, stream):
    """``dst[...] = src`` on the device, on ``stream`` (any strides; converts the dtype on read)."""
    if SIM:
        dst._ary[...] = src._ary
    else:
        # Numba's strided assignment kernel; a non-zero stream makes it asynchronous.
        dst.setitem(Ellipsis, src, stream=stream)


class DeviceBackend:
    """The GPU backend: ``nbsparse._cuda`` kernels on Numba device arrays.

    Implements :class:`nbsparse._backend.Backend`. Every launch and transfer of a
    call runs on the caller's stream (CuPy's current stream when CuPy arrays came
    in); the accumulating launchers (``outer``, ``bias_grad``) also get the call's
    ``deterministic``. Results come back in the kind of the caller's arrays: CuPy
    in, CuPy out; Numba device arrays in, device arrays out.
    """

    def __init__(self, arrays, deterministic=False):
        self.stream = _launch_stream(arrays)
        self.deterministic = deterministic
        self.return_cupy = any(_is_cupy(a) for a in arrays)

    def floats(self, dtype, a):
        """``a`` as a C-contiguous ``dtype`` device array, cast on the device when needed."""
        d = as_device(a)
        if d.dtype == dtype and d.is_c_contiguous():
            return d
        out = self.empty(d.shape, dtype)
        if out.size:
            _assign(out, d, self.stream)
        return out

    def indices(self, idx):
        """Validated indices as a C-contiguous ``intp`` device array.

        ``idx`` is the caller's device array, or a small host array that nbsparse
        built itself (then it is uploaded).
        """
        if isinstance(idx, np.ndarray):
            return cuda.to_device(np.ascontiguousarray(idx, dtype=np.intp), stream=self.stream)
        return self.floats(np.dtype(np.intp), idx)

    def check_index_range(self, name, idx, n, what):
        """IndexError unless every value of the device array ``idx`` is in ``[0, n)``.

        The count of bad values is reduced on the device: 4 bytes reach the host
        (one synchronisation). The whole array is copied back only when the check
        fails, to name the first bad position.
        """
        d = self.floats(as_device(idx).dtype, idx)
        flat = d.reshape(d.size)
        chunk = INDEX_CHECK_CHUNK
        if any(_cuda.arrays.count_outside(flat[start:start + chunk], n, stream=self.stream)
               for start in range(0, d.size, chunk)):
            v.check_index_range(name, self.to_host(d), n, what)

    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype=dtype, stream=self.stream)

    def zeros(self, shape, dtype):
        out = self.empty(shape, dtype)
        _cuda.arrays.fill(out, 0, stream=self.stream)
        return out

    def weight_gradient(self, shape, x, y, x_idx, y_idx):
        """A new ``shape`` array holding ``sum outer(x[b, i], y[b, j])`` at block ``(x_idx[b, i], y_idx[b, j])``."""
        o = self.empty(shape, x.dtype)
        self.outer(o, x, y, x_idx, y_idx, x.dtype.type(1.0), True)
        return o

    def copy(self, a, dtype):
        out = self.empty(a.shape, dtype)
        if out.size:
            _assign(out, as_device(a), self.stream)
        return out

    @staticmethod
    def is_writeable(a):
        interface = getattr(a, "__cuda_array_interface__", None)
        return not (interface and interface["data"][1])

    @staticmethod
    def overlaps(a, others):
        """True when ``a`` may share device memory with any of ``others`` (by byte range)."""
        return _overlap.may_overlap(_extent(a), [_extent(b) for b in others])

    @staticmethod
    def restored_on_memory_error(a):
        """Nothing to keep: a CUDA kernel allocates nothing, so none fails after writing part of ``a``."""
        return contextlib.nullcontext()

    def write_back(self, target, result):
        """Copy ``result`` into the caller's ``target`` unless the kernel wrote there directly."""
        d = as_device(target)
        if _extent(d) != _extent(result) or tuple(d.strides) != tuple(result.strides):
            _assign(d, result, self.stream)

    @staticmethod
    def moveaxis(a, source, destination):
        """A view of ``a`` with axis ``source`` moved to ``destination`` (no copy)."""
        d = as_device(a)
        order = [axis for axis in range(d.ndim) if axis != source % d.ndim]
        order.insert(destination % d.ndim, source % d.ndim)
        if order == list(range(d.ndim)):
            return d
        if SIM:
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            return FakeCUDAArray(d._ary.transpose(order))
        from numba.cuda.cudadrv.devicearray import DeviceNDArray

        return DeviceNDArray(tuple(d.shape[i] for i in order), tuple(d.strides[i] for i in order),
                             d.dtype, stream=d.stream, gpu_data=d.gpu_data)

    def wrap(self, result):
        """The result in the caller's kind: a CuPy array when CuPy arrays came in."""
        if self.return_cupy:
            return _cupy().asarray(result)
        return result

    # ------------------------------------------------------------------ block-list gradients
    def from_host_index(self, index):
        return cuda.to_device(np.ascontiguousarray(index, dtype=np.intp), stream=self.stream)

    def weight_gradient_blocks(self, grid, x, y, x_idx, y_idx):
        """``(host index, device values)`` of the touched block pairs of a ``grid`` of blocks.

        The indices (batch-sized) go to the host, which finds the distinct pairs
        and each term's pair. Each term's ``x`` and ``y`` rows are gathered on the
        device, and :func:`_cuda.blocksparse.outer` sums them into a ``(n, 1,
        x_size, y_size)`` array indexed by pair (atomics, or with
        ``deterministic`` the sorted segments): nothing of the grid's size.
        """
        batch, x_win, x_size = x.shape
        y_win, y_size = y.shape[1], y.shape[2]
        pair_of_term = (self.to_host(x_idx).reshape(batch, x_win, 1) * grid[1]
                        + self.to_host(y_idx).reshape(batch, 1, y_win)).ravel()
        pairs, pair_id = np.unique(pair_of_term, return_inverse=True)
        index = np.empty((pairs.size, 2), np.intp)
        index[:, 0], index[:, 1] = np.divmod(pairs, grid[1])
        terms = pair_of_term.size
        rows = np.arange(batch).reshape(batch, 1, 1)
        x_rows = np.broadcast_to(rows * x_win + np.arange(x_win).reshape(1, x_win, 1), (batch, x_win, y_win))
        y_rows = np.broadcast_to(rows * y_win + np.arange(y_win).reshape(1, 1, y_win), (batch, x_win, y_win))
        xs = self.empty((terms, 1, x_size), x.dtype)
        ys = self.empty((terms, 1, y_size), x.dtype)
        _cuda.arrays.gather_rows(xs.reshape(terms, x_size), x.reshape(batch * x_win, x_size),
                                 self.from_host_index(x_rows.ravel()), stream=self.stream)
        _cuda.arrays.gather_rows(ys.reshape(terms, y_size), y.reshape(batch * y_win, y_size),
                                 self.from_host_index(y_rows.ravel()), stream=self.stream)
        values = self.empty((pairs.size, 1, x_size, y_size), x.dtype)
        self.outer(values, xs, ys, self.from_host_index(pair_id.reshape(terms, 1)),
                   self.from_host_index(np.zeros((terms, 1), np.intp)), x.dtype.type(1.0), True)
        return index, values.reshape(pairs.size, x_size, y_size)

    def bias_grad_blocks(self, g, output_idx):
        """``(host index, device values)``: the distinct ``output_idx`` values and their rows."""
        blocks, rank = np.unique(self.to_host(output_idx), return_inverse=True)
        values = self.zeros((blocks.size, g.shape[2]), g.dtype)
        self.bias_grad(values, g, self.from_host_index(rank.reshape(output_idx.shape)))
        return blocks.astype(np.intp).reshape(-1, 1), values

    def all_in_grid(self, index, grid):
        host = self.to_host(index)
        return bool(((host >= 0) & (host < np.asarray(grid, dtype=np.intp))).all())

    def scatter_blocks(self, out, index, values):
        """``out[tuple(index[k])] = values[k]``: one launch over the listed blocks' elements."""
        host = self.to_host(index)
        d = host.shape[1]
        grid_blocks = int(np.prod(out.shape[:d]))
        block = int(np.prod(out.shape[d:]))
        ids = np.ravel_multi_index(tuple(host.T), out.shape[:d]) if host.shape[0] else np.zeros(0, np.intp)
        src = self.floats(as_device(values).dtype, values)  # a copy only when strided
        _cuda.arrays.scatter_rows(out.reshape(grid_blocks, block), self.from_host_index(ids),
                                  src.reshape(host.shape[0], block), stream=self.stream)

    def to_host(self, a):
        """A small device array copied to a new C-contiguous host array (synchronises the stream)."""
        d = self.floats(as_device(a).dtype, a)
        host = d.copy_to_host(stream=self.stream)
        if self.stream:  # the copy is asynchronous on a non-default stream
            self.stream.synchronize()
        return host

    # ------------------------------------------------------------------ kernels, on the call's stream
    def gemv(self, o, W, h, input_idx, output_idx):
        cuda_blocksparse.gemv(o, W, h, input_idx, output_idx, stream=self.stream)

    def set_bias(self, o, bias, output_idx):
        cuda_blocksparse.set_bias(o, bias, output_idx, stream=self.stream)

    def outer(self, o, x, y, x_idx, y_idx, alpha, clear):
        cuda_blocksparse.outer(o, x, y, x_idx, y_idx, alpha, clear, stream=self.stream,
                               deterministic=self.deterministic)

    def grad_h(self, dh, W, g, input_idx, output_idx):
        cuda_blocksparse.grad_h(dh, W, g, input_idx, output_idx, stream=self.stream)

    def bias_grad(self, db, g, output_idx):
        cuda_blocksparse.bias_grad(db, g, output_idx, stream=self.stream,
                                   deterministic=self.deterministic)

    def sgd_dense(self, param, grad, lr):
        cuda_optim.sgd_dense(param, grad, lr, stream=self.stream)

    def sgd_blocks(self, param, ids, values, lr):
        cuda_optim.sgd_blocks(param, ids, values, lr, stream=self.stream)

    def adam_dense(self, param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                   correction1, correction2, eps):
        cuda_optim.adam_dense(param, grad, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                              correction1, correction2, eps, stream=self.stream)

    def adam_blocks(self, param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                    correction1, correction2, eps):
        cuda_optim.adam_blocks(param, ids, values, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                               correction1, correction2, eps, stream=self.stream)

    def softmax_rows(self, x, out):
        cuda_softmax.softmax_rows(x, out, stream=self.stream)

    def softmax_grad_rows(self, g, y, out):
        cuda_softmax.softmax_grad_rows(g, y, out, stream=self.stream)

    def split_target(self, target, K, classes, slots):
        cuda_hsoftmax.split_target(target, K, classes, slots, stream=self.stream)

    def target_forward(self, p_class, p_slot, classes, slots, out):
        cuda_hsoftmax.target_forward(p_class, p_slot, classes, slots, out, stream=self.stream)

    def target_backward(self, g, p_class, p_slot, classes, slots, d_class, d_slot):
        cuda_hsoftmax.target_backward(g, p_class, p_slot, classes, slots, d_class, d_slot,
                                      stream=self.stream)

    def nll_forward(self, a_class, a_slot, classes, slots, out):
        cuda_hsoftmax.nll_forward(a_class, a_slot, classes, slots, out, stream=self.stream)

    def nll_backward(self, g, a_class, a_slot, classes, slots, d_class, d_slot):
        cuda_hsoftmax.nll_backward(g, a_class, a_slot, classes, slots, d_class, d_slot,
                                   stream=self.stream)

    def h_softmax_topk(self, p, k):
        """``(indices, log_probs, classes_read)`` of ``_cuda.topk.topk`` on the problem ``p`` (no target)."""
        a_class = p.class_activations()
        indices = self.empty((p.batch, k), np.intp)
        log_probs = self.empty((p.batch, k), p.dtype)
        classes_read = self.empty((p.batch,), np.intp)
        cuda_topk.topk(a_class, p.h.reshape(p.batch, p.n_in), p.W2.reshape(p.n_classes, p.n_in, p.K), p.b2,
                       p.n_outputs, indices, log_probs, classes_read, stream=self.stream)
        return indices, log_probs, classes_read

    def h_softmax_full(self, p):
        """Full-mode ``h_softmax``: both levels' probabilities by the block-sparse
        kernels, joined by ``full_forward`` (one thread per output)."""
        p_class, p_slot = p.class_probs(), p.slot_probs()
        out = self.empty((p.batch, p.n_outputs), p.dtype)
        cuda_hsoftmax.full_forward(p_class, p_slot, out, stream=self.stream)
        return out

    def h_softmax_logprob(self, p, candidates):
        """``log P(candidates[n, j] | x[n])``: the class level, then ``logprob``, a thread per candidate."""
        batch, m = candidates.shape
        out = self.empty((batch, m), p.dtype)
        cuda_inference.logprob(p.class_activations(), p.h.reshape(batch, p.n_in),
                               p.W2.reshape(p.n_classes, p.n_in, p.K), p.b2, candidates, p.K, out,
                               stream=self.stream)
        return out

    def h_softmax_sample(self, p, seed):
        """One output per row drawn by ``sample``, a thread per row (SplitMix64 uniforms, as on the CPU)."""
        out = self.empty((p.batch,), np.intp)
        cuda_inference.sample(p.class_activations(), p.h.reshape(p.batch, p.n_in),
                              p.W2.reshape(p.n_classes, p.n_in, p.K), p.b2, p.K, p.n_outputs, np.uint64(seed), out,
                              stream=self.stream)
        return out

    def h_softmax_full_grad(self, p, g):
        """Full-mode ``h_softmax_grad``: ``full_backward`` on both levels' probabilities,
        then back through the block-sparse products."""
        p_class, p_slot = p.class_probs(), p.slot_probs()
        d_class = self.empty(p_class.shape, p.dtype)
        d_slot = self.empty(p_slot.shape, p.dtype)
        cuda_hsoftmax.full_backward(g, p_class, p_slot, d_class, d_slot, stream=self.stream)
        return p.backward_through_products(d_class, d_slot)
