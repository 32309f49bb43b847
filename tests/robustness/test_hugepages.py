"""The zeroed host arrays behind the gradients: correct, writeable, independent, and a cache that does not hoard."""

import json
import os
import subprocess
import sys

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
@pytest.mark.parametrize("value", ["lots", "inf", "-inf", "nan", "-1", "1e400"])
def test_a_malformed_limit_is_a_clear_error(empty_cache, monkeypatch, value):
    monkeypatch.setenv(_hugepages.CACHE_LIMIT_VARIABLE, value)
    with pytest.raises(ValueError, match=_hugepages.CACHE_LIMIT_VARIABLE):
        _hugepages.cache_limit()
    with pytest.raises(ValueError, match=_hugepages.CACHE_LIMIT_VARIABLE):
        _hugepages.empty(LARGE, np.float64)


@pytest.mark.parametrize("value, mib", [("0", 0), ("1.5", 1.5), (" 64 ", 64)])
def test_a_limit_is_a_number_of_mib(monkeypatch, value, mib):
    monkeypatch.setenv(_hugepages.CACHE_LIMIT_VARIABLE, value)
    assert _hugepages.cache_limit() == int(mib * 2**20)


def write_cgroups(tmp_path, membership, files):
    (tmp_path / "cgroup").write_text(membership)
    for name, value in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return str(tmp_path / "cgroup"), str(tmp_path / "fs")


@pytest.mark.parametrize("membership, files, limit", [
    ("0::/pod/app\n", {"memory.max": "max", "pod/memory.max": "3221225472", "pod/app/memory.max": "max"}, 3 << 30),
    ("0::/\n", {"memory.max": "max"}, None),
    ("4:memory:/job\n2:cpu,cpuacct:/job\n", {"memory/memory.limit_in_bytes": "9223372036854771712",
                                               "memory/job/memory.limit_in_bytes": "1073741824"}, 1 << 30),
    ("4:memory:/job\n", {}, None),
], ids=["v2-ancestor", "v2-none", "v1", "unreadable"])
def test_the_cgroup_memory_limit_is_the_lowest_on_the_path(tmp_path, membership, files, limit):
    proc_cgroup, root = write_cgroups(tmp_path, membership, files)
    assert _hugepages.cgroup_memory_limit(proc_cgroup, root) == limit


def test_the_default_limit_is_a_quarter_of_the_cgroup_limit_when_lower(monkeypatch):
    monkeypatch.delenv(_hugepages.CACHE_LIMIT_VARIABLE, raising=False)
    monkeypatch.setattr(_hugepages, "cgroup_memory_limit", lambda: 1 << 30)
    _hugepages.usable_memory.cache_clear()
    try:
        assert _hugepages.cache_limit() == 1 << 28
    finally:
        _hugepages.usable_memory.cache_clear()


@needs_mappings
def test_a_larger_cached_mapping_serves_a_smaller_request(empty_cache):
    a = _hugepages.empty((2 * _hugepages.MIN_BYTES,), np.uint8)
    address = a.ctypes.data
    del a
    b = _hugepages.zeros((_hugepages.MIN_BYTES + 1,), np.uint8)  # just over half: fits
    assert b.ctypes.data == address and not b.any()
    del b
    c = _hugepages.empty((_hugepages.MIN_BYTES // 2 * 3,), np.uint16)  # larger: a fresh mapping
    assert c.ctypes.data != address


def run_child(code, env=None):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# A loop of varying batch sizes whose results are dropped: 4.8 to 33 MB each.
VARYING_SHAPES = """
import json, resource
import numpy as np
import nbsparse
rng = np.random.default_rng(0)
x = rng.standard_normal((4096, 1000))
nbsparse.softmax(x[:8])
for step in range(60):
    y = nbsparse.softmax(x[:int(rng.integers(600, 4096))])
    del y
print(json.dumps({"max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@needs_mappings
def test_a_loop_of_varying_shapes_keeps_its_memory_near_that_without_recycling():
    off = run_child(VARYING_SHAPES, {_hugepages.CACHE_LIMIT_VARIABLE: "0"})["max_rss"]
    on = run_child(VARYING_SHAPES, {_hugepages.CACHE_LIMIT_VARIABLE: ""})["max_rss"]
    assert on <= 1.5 * off, (on, off)


# Four 64 MiB arrays dropped, so the cache holds 256 MiB; then an address-space
# limit of 100 MiB more leaves room for a 160 MiB array only once the cache is given back.
ALLOCATION_FAILS = """
import json, resource
import numpy as np
from nbsparse import _hugepages
arrays = [_hugepages.empty((64 << 20,), np.uint8) for _ in range(4)]
del arrays
cached = _hugepages.cached_bytes()
with open("/proc/self/statm") as f:
    mapped = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + (100 << 20), resource.RLIM_INFINITY))
a = _hugepages.zeros((160 << 20,), np.uint8)
print(json.dumps({"cached_before": cached, "cached_after": _hugepages.cached_bytes(), "zero": not a.any(),
                  "mapping": a.ctypes.data % _hugepages.HUGE_PAGE == 0}))
"""


@needs_mappings
def test_an_allocation_that_fails_gives_the_cache_back_and_retries():
    result = run_child(ALLOCATION_FAILS, {_hugepages.CACHE_LIMIT_VARIABLE: ""})
    assert result == {"cached_before": 256 << 20, "cached_after": 0, "zero": True, "mapping": True}


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
