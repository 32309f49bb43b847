"""The zeroed host arrays behind the gradients: correct, writeable, independent."""

import numpy as np
import pytest

from nbsparse import _hugepages


@pytest.mark.parametrize("shape", [(3, 5), (0, 7), (3, 4096, 64)])  # the last is 3-6 MiB: above MIN_BYTES as float64
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zeros_is_a_zeroed_writeable_c_array(shape, dtype):
    a = _hugepages.zeros(shape, dtype)
    assert a.shape == shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert not a.any()
    a[...] = 1
    assert a.sum() == a.size


def test_large_arrays_are_aligned_to_huge_pages_and_independent():
    shape = (_hugepages.MIN_BYTES // 8 + 3,)
    a, b = _hugepages.zeros(shape, np.float64), _hugepages.zeros(shape, np.float64)
    if _hugepages._SUPPORTED:
        assert a.ctypes.data % _hugepages.HUGE_PAGE == 0
    a[:] = 2.0
    assert not b.any() and not np.shares_memory(a, b)


def test_small_arrays_are_plain_numpy():
    a = _hugepages.zeros((4, 4), np.float32)
    assert a.flags.owndata
