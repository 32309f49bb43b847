"""The GPU side of the dispatch: zero-copy device views, the caller's stream, the caller's kind.

Imported only when a call receives a device array, so ``import nbsparse`` never
loads ``numba.cuda``. CuPy is never imported here: a caller passing CuPy arrays
has imported it already, so it is looked up in ``sys.modules``.
"""

import functools
import importlib.util
import sys

import numpy as np

from . import _memory
from . import _validate as v

if importlib.util.find_spec("numba_cuda") is None:
    raise ImportError(
        "nbsparse's GPU backend needs the numba-cuda package, which is not installed: "
        "pip install 'nbsparse[cuda]' (add CuPy and the CUDA 12 compiler with 'nbsparse[cu12]')"
    )

from numba import cuda  # noqa: E402  (after the check above, which names the missing extra)

from . import _cuda  # noqa: E402
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
    """The byte range of the device memory that ``a`` views (see ``nbsparse._memory``)."""
    d = as_device(a)
    # The simulator's arrays wrap host NumPy arrays and have no CUDA array interface.
    return _memory.byte_extent(d._ary.__array_interface__ if SIM else d.__cuda_array_interface__)


def _launch_stream(arrays):
    """CuPy's current stream when a CuPy array is involved, else the default stream."""
    if SIM:
        return 0
    cp = _cupy()
    if cp is not None and any(_is_cupy(a) for a in arrays):
        return cuda.external_stream(cp.cuda.get_current_stream().ptr)
    return 0


class _BoundKernels:
    """A kernel module whose launchers run on one stream (and, for the accumulating
    ones, in the requested determinism mode)."""

    _ACCUMULATING = frozenset({"outer", "bias_grad"})

    def __init__(self, module, stream, deterministic):
        self._module, self._stream, self._deterministic = module, stream, deterministic

    def __getattr__(self, name):
        launcher = getattr(self._module, name)
        if name in self._ACCUMULATING:
            return functools.partial(launcher, stream=self._stream,
                                     deterministic=self._deterministic)
        return functools.partial(launcher, stream=self._stream)


class _Kernels:
    def __init__(self, stream, deterministic):
        for name in ("blocksparse", "softmax", "hsoftmax"):
            setattr(self, name, _BoundKernels(getattr(_cuda, name), stream, deterministic))


def _assign(dst, src, stream):
    """``dst[...] = src`` on the device, on ``stream`` (any strides; converts the dtype on read)."""
    if SIM:
        dst._ary[...] = src._ary
    else:
        # Numba's strided assignment kernel; a non-zero stream makes it asynchronous.
        dst.setitem(Ellipsis, src, stream=stream)


class DeviceBackend:
    """The GPU backend: ``nbsparse._cuda`` kernels on Numba device arrays.

    Results come back in the kind of the caller's arrays: CuPy in, CuPy out;
    Numba device arrays in, device arrays out.
    """

    name = "cuda"

    def __init__(self, arrays, deterministic=False):
        self.stream = _launch_stream(arrays)
        self.return_cupy = any(_is_cupy(a) for a in arrays)
        self.kernels = _Kernels(self.stream, deterministic)

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
            host = d.copy_to_host(stream=self.stream)
            if self.stream:  # the copy is asynchronous on a non-default stream
                self.stream.synchronize()
            v.check_index_range(name, host, n, what)

    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype=dtype, stream=self.stream)

    def zeros(self, shape, dtype):
        out = self.empty(shape, dtype)
        _cuda.arrays.fill(out, 0, stream=self.stream)
        return out

    def weight_gradient(self, shape, x, y, x_idx, y_idx):
        """A new ``shape`` array holding ``sum outer(x[b, i], y[b, j])`` at block ``(x_idx[b, i], y_idx[b, j])``."""
        o = self.empty(shape, x.dtype)
        self.kernels.blocksparse.outer(o, x, y, x_idx, y_idx, x.dtype.type(1.0), True)
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
        return _memory.may_overlap(_extent(a), [_extent(b) for b in others])

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
