"""The intrinsics of :mod:`.codegen` in plain Python, for kernels that run as Python.

With ``NUMBA_DISABLE_JIT=1`` (Numba's debugging switch) every ``njit`` function
is the Python function itself, and an ``@intrinsic`` cannot be called from
Python. :mod:`.codegen` then gives the kernels these functions instead: each does
what its intrinsic's docstring says, on the same arguments (offsets in elements
of C-contiguous arrays), slowly; the hints (prefetches, fences) do nothing.
"""

import numpy as np


def lanes(a):
    """Elements of ``a``'s dtype in a 256-bit vector (the width the intrinsics use)."""
    return 32 // a.itemsize


def set_chunksize(n):
    """No chunks to size: a Python ``prange`` is a ``range``. Returns 0, the default size."""
    return 0


def num_threads():
    """One: a kernel that runs as Python runs on the calling thread."""
    return 1


def thread_id():
    """Zero: the calling thread is the only one."""
    return 0


def prefetch(a, offset):
    """A hint: nothing to do in Python."""


def sfence():
    """Nothing to order in Python."""


def lead_to_alignment(a):
    """Elements from the start of ``a`` to its first 32-byte boundary, -1 when none is on one."""
    gap = -a.ctypes.data % 32
    return gap // a.itemsize if gap % a.itemsize == 0 else -1


def stream_store(dst, at, src, start, n_vectors):
    """``dst.flat[at:][:m] = src.flat[start:][:m]``, ``m = n_vectors * lanes``."""
    m = n_vectors * lanes(dst)
    dst.reshape(-1)[at:at + m] = src.reshape(-1)[start:start + m]


def make_tile(mr, vectors, accumulate):
    """:func:`.codegen._make_tile`'s ``tile`` for ``mr`` rows of ``vectors`` vectors."""
    def tile(c, c_offs, a, a_offs, s, k0, a_at, a_step, b, b0, ldb, n, ahead):
        width = vectors * lanes(c)
        cf, af, bf = c.reshape(-1), a.reshape(-1), b.reshape(-1)
        for t in range(mr):
            c_t, a_t = c_offs[s + t] + k0, a_offs[s + t] + a_at
            total = np.zeros(width, c.dtype)
            for step in range(n):
                row = b0 + step * ldb
                total += af[a_t + step * a_step] * bf[row:row + width]
            if accumulate:
                cf[c_t:c_t + width] += total
            else:
                cf[c_t:c_t + width] = total

    return tile


def make_dot_tile(mr, nr):
    """:func:`.codegen._make_dot_tile`'s ``dots`` for an ``mr x nr`` tile."""
    def dots(c, c_offs, s, r, a, a0, lda, b, b_offs, n):
        length = n - n % lanes(c)
        cf, af, bf = c.reshape(-1), a.reshape(-1), b.reshape(-1)
        for t in range(mr):
            c_t, b_t = c_offs[s + t] + r, b_offs[s + t]
            for v in range(nr):
                row = a0 + v * lda
                cf[c_t + v] += np.dot(af[row:row + length], bf[b_t:b_t + length])

    return dots
