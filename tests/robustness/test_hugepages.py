"""The zeroed host arrays behind the gradients: correct, writeable, independent."""

import numpy as np
import pytest

from nbsparse import _hugepages
from nbsparse._optable import tolerance


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


needs_mappings = pytest.mark.skipif(not _hugepages._SUPPORTED, reason="huge-page mappings are Linux only")
LARGE = (_hugepages.MIN_BYTES // 8 + 3,)  # float64: just above MIN_BYTES


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.delenv(_hugepages.CACHE_LIMIT_VARIABLE, raising=False)
    _hugepages.free_cached_memory()
    yield
    _hugepages.free_cached_memory()


@needs_mappings
def test_a_dropped_array_is_recycled_and_zeros_clears_it(empty_cache):
    a = _hugepages.empty(LARGE, np.float64)
    address = a.ctypes.data
    a[:] = np.nan
    del a
    assert _hugepages.cached_bytes() >= _hugepages.MIN_BYTES
    b = _hugepages.zeros(LARGE, np.float64)
    assert b.ctypes.data == address  # the same mapping, cleared
    assert not b.any()
    assert _hugepages.cached_bytes() == 0


@needs_mappings
def test_a_mapping_is_not_recycled_while_a_view_of_it_lives(empty_cache):
    a = _hugepages.empty(LARGE, np.float64)
    a[:] = 3.0
    view = a[5:10]
    del a
    assert _hugepages.cached_bytes() == 0
    b = _hugepages.empty(LARGE, np.float64)
    b[:] = -1.0
    assert not np.shares_memory(b, view)
    np.testing.assert_array_equal(view, 3.0)
    del view
    assert _hugepages.cached_bytes() >= _hugepages.MIN_BYTES


@needs_mappings
def test_free_cached_memory_unmaps_and_reports_bytes(empty_cache):
    a = _hugepages.empty(LARGE, np.float64)
    del a
    held = _hugepages.cached_bytes()
    assert held >= _hugepages.MIN_BYTES
    assert _hugepages.free_cached_memory() == held
    assert _hugepages.cached_bytes() == 0


@needs_mappings
def test_a_zero_limit_turns_recycling_off(empty_cache, monkeypatch):
    monkeypatch.setenv(_hugepages.CACHE_LIMIT_VARIABLE, "0")
    a = _hugepages.empty(LARGE, np.float64)
    del a
    assert _hugepages.cached_bytes() == 0


@needs_mappings
def test_a_malformed_limit_is_a_clear_error(empty_cache, monkeypatch):
    monkeypatch.setenv(_hugepages.CACHE_LIMIT_VARIABLE, "lots")
    with pytest.raises(ValueError, match=_hugepages.CACHE_LIMIT_VARIABLE):
        _hugepages.empty(LARGE, np.float64)


@needs_mappings
@pytest.mark.parametrize("shape, batch, windows", [
    ((6, 5, 192, 256), 40, (2, 1)),  # 5.9 MB, ~3 terms per block pair: outer with clear
    ((64, 64, 16, 16), 8, (1, 2)),  # 4.2 MB, most blocks untouched: outer_scattered_new
], ids=["grouped", "scattered"])
def test_gradients_written_into_recycled_memory_hold_nothing_of_it(empty_cache, shape, batch, windows):
    # W is at least MIN_BYTES, so its gradient lands on the mapping poisoned with NaN here.
    import nbsparse as nbs
    from nbsparse import _reference

    i_blocks, o_blocks, i_size, o_size = shape
    rng = np.random.default_rng(5)
    W = rng.standard_normal(shape).astype(np.float32)
    h = rng.standard_normal((batch, windows[0], i_size)).astype(np.float32)
    g = rng.standard_normal((batch, windows[1], o_size)).astype(np.float32)
    b = np.zeros((o_blocks, o_size), np.float32)
    input_idx = rng.integers(0, i_blocks, (batch, windows[0]))
    output_idx = rng.integers(0, o_blocks - 1, (batch, windows[1]))  # the last block column idle
    assert W.nbytes >= _hugepages.MIN_BYTES
    poison = _hugepages.empty(W.shape, np.float32)
    poison[...] = np.nan
    address = poison.ctypes.data
    del poison
    got = nbs.sparse_block_dot_grad(g, W, h, input_idx, b, output_idx)
    assert got.W.ctypes.data == address
    want = _reference.sparse_block_dot_grad(g, W, h, input_idx, b, output_idx)
    np.testing.assert_allclose(got.W, want.W, **tolerance(np.float32))
