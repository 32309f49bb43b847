"""Where a call runs: the array kind of its inputs picks the backend.

NumPy arrays run on the host (the Numba CPU kernels). Objects exposing
``__cuda_array_interface__`` (CuPy, Numba device arrays, PyTorch CUDA tensors)
or flagged ``__cuda_ndarray__`` (Numba's CUDA-simulator arrays) are device
arrays. Detection is by attribute only, so it imports nothing and never copies a
device array to the host.

Dask arrays take a detour before any of this: :func:`dask_module` sends a call
with a ``dask.array.Array`` argument to ``nbsparse._dask``, which builds a graph
whose tasks call the public functions again, one chunk at a time.
"""

import sys

import numpy as np

from . import _hugepages, _threads
from . import _validate as v

HOST = "host"
DEVICE = "device"

_SIDE = {HOST: "on the host (NumPy)", DEVICE: "on the GPU (CUDA)"}


def array_kind(name, a):
    """Return ``HOST`` or ``DEVICE`` for the array ``a``; TypeError for anything else.

    Python lists and scalars are refused rather than converted, so that a call
    never guesses the backend or copies data behind the caller's back.
    """
    if isinstance(a, np.ndarray):
        return HOST
    if hasattr(a, "__cuda_array_interface__") or getattr(a, "__cuda_ndarray__", False):
        return DEVICE
    raise TypeError(
        f"{name} must be a NumPy array or a CUDA array (CuPy, Numba device array), "
        f"got {type(a).__name__}"
    )


def dask_module(*arrays):
    """``nbsparse._dask`` when any of ``arrays`` is a Dask array, else None.

    While Dask is not imported this costs one dict lookup: nbsparse never imports
    Dask itself, and a Dask array cannot exist before ``dask.array`` is imported.
    """
    da = sys.modules.get("dask.array")
    if da is not None:
        lazy = da.Array
        for a in arrays:  # a loop, not any(<generator>): 2.5x faster for five arguments
            if isinstance(a, lazy):
                from . import _dask

                return _dask
    return None


def check_sides(optional=(), **arrays):
    """Return ``{HOST: names, DEVICE: names}`` for ``arrays``; TypeError if both sides are used.

    Arguments named in ``optional`` may be None and are then skipped.
    """
    sides = {HOST: [], DEVICE: []}
    for name, a in arrays.items():
        if a is None and name in optional:
            continue
        sides[array_kind(name, a)].append(name)
    if sides[HOST] and sides[DEVICE]:
        raise TypeError(
            "cannot mix host and device arrays in one call: "
            + "; ".join(f"{', '.join(names)} {_SIDE[kind]}" for kind, names in sides.items())
            + ". Move them to one side first (e.g. cupy.asarray / .get())."
        )
    return sides


def select(optional=(), deterministic=False, **arrays):
    """Return the backend for a call whose array arguments are ``arrays``.

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
    sides = check_sides(optional, **arrays)
    if sides[DEVICE]:
        from ._device import DeviceBackend  # loads numba.cuda: only when a device array comes

        return DeviceBackend([arrays[name] for name in sides[DEVICE]], deterministic)
    return HOST_BACKEND


class HostBackend:
    """The CPU backend: NumPy allocation and the ``nbsparse._cpu`` kernels."""

    name = "cpu"

    @property
    def kernels(self):
        """``nbsparse._cpu``, serialised while Numba's threading layer may be ``workqueue``."""
        return _threads.cpu_kernels()

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
    def moveaxis(a, source, destination):
        return np.moveaxis(a, source, destination)

    @staticmethod
    def empty(shape, dtype):
        return _hugepages.empty(shape, dtype)  # large results and temporaries: recycled mappings

    @staticmethod
    def zeros(shape, dtype):
        return _hugepages.zeros(shape, dtype)  # the gradients: fresh, sometimes large

    def weight_gradient(self, shape, x, y, x_idx, y_idx):
        """A new ``shape`` array holding ``sum outer(x[b, i], y[b, j])`` at block ``(x_idx[b, i], y_idx[b, j])``.

        On recycled huge pages when large; ``nbsparse._cpu.outer.weight_gradient``
        fills it (choosing the kernel, with no separate zeroing pass where it can).
        """
        o = _hugepages.empty(shape, x.dtype)
        self.kernels.outer.weight_gradient(o, x, y, x_idx, y_idx)
        return o

    @staticmethod
    def copy(a, dtype):
        """A new C-contiguous ``dtype`` copy of ``a`` that the kernels may write into (recycled memory when large)."""
        out = _hugepages.empty(a.shape, dtype)
        out[...] = a
        return out

    @staticmethod
    def is_writeable(a):
        return a.flags.writeable

    @staticmethod
    def overlaps(a, others):
        """True when ``a`` may share memory with any of ``others`` (see ``nbsparse._memory``)."""
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


HOST_BACKEND = HostBackend()
