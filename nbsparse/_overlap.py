"""Which bytes an array touches: the overlap test behind nbsparse's aliasing rule.

``inplace=True`` writes into ``o``. When ``o`` shares memory with an argument the
kernel reads (``o`` a view of ``W``, of ``h``, even of an index array), writing
in place would change that argument while the kernel still reads it: wrong
results, and out-of-range block indices (memory corruption) if ``o`` overlaps an
index array. The public functions therefore compute into a private copy when
:func:`may_overlap` says the memory may be shared, and copy the result into ``o``
afterwards, so results always equal those computed on copies of the arguments.

The test is by byte range, like ``np.may_share_memory``: it may report an
overlap that is not real (two interleaved views), which only costs a copy, and
never misses a real one. Nothing here imports Numba.
"""

import numpy as np


def byte_extent(interface):
    """``(low, high)``: the half-open byte range an array interface's elements occupy.

    Parameters
    ----------
    interface : dict
        An ``__array_interface__`` or ``__cuda_array_interface__`` dict: ``data``
        (pointer, read-only flag), ``shape``, ``typestr`` and optional ``strides``
        (None or absent for C-contiguous).

    Returns
    -------
    tuple of int
        ``(low, high)`` addresses; ``low == high`` for an array without elements.

    Examples
    --------
    >>> a = np.zeros((3, 4))
    >>> low, high = byte_extent(a[:, ::-1].__array_interface__)
    >>> (low - a.ctypes.data, high - a.ctypes.data)
    (0, 96)
    """
    pointer = interface["data"][0]
    shape = tuple(interface["shape"])
    itemsize = np.dtype(interface["typestr"]).itemsize
    if 0 in shape:
        return pointer, pointer
    strides = interface.get("strides")
    if strides is None:  # C-contiguous
        strides, step = [], itemsize
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
    low = pointer + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    high = pointer + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + itemsize
    return low, high


def extents_overlap(a, b):
    """True when the byte ranges ``a`` and ``b`` (from :func:`byte_extent`) intersect."""
    return a[0] < b[1] and b[0] < a[1] and a[0] != a[1] and b[0] != b[1]


def may_overlap(extent, others):
    """True when the byte range ``extent`` may share memory with any range in ``others``."""
    return any(extents_overlap(extent, other) for other in others)
