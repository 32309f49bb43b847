"""Running out of memory during a call: a ``MemoryError``, and the caller's arrays as they were.

The sweep runs in a child process (tests/support/alloc_workload.py) whose
allocator is made to map every buffer of 64 KiB or more afresh
(``MALLOC_MMAP_THRESHOLD_``, one arena), so that an address-space limit
(``RLIMIT_AS``) lowered step by step makes one allocation after another fail:
the results first, then the kernels' own scratch, then everything new. Every
call must give the reference's results or raise ``MemoryError`` with its
arguments unchanged.

A kernel's scratch allocation can also fail inside a parallel loop after other
iterations have written their part of the output; the in-process tests make a
kernel do exactly that (``gemv``, whose in-place ``o`` is then restored from a
copy). The in-place outer update keeps no copy of its weight-sized ``o``: its
kernel allocates everything before it writes, which a child running the
kernels as Python checks allocation by allocation
(tests/support/kernel_alloc_order.py).
"""

import json

import numpy as np
import pytest

from nbsparse import _threads
from nbsparse._optable import OP, OPS, problem
from nbsparse._selfcheck import SIZES
from tests.support.alloc_workload import CALLS
from tests.support.children import run_python

STEPS = 24


@pytest.fixture(scope="module")
def sweeps():
    proc = run_python(["-W", "error", "-m", "tests.support.alloc_workload", str(STEPS)], timeout=300,
                      env={"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("call", list(CALLS))
def test_a_shrinking_memory_limit_gives_results_or_memory_error_and_nothing_written(sweeps, call):
    sweep = sweeps[call]
    assert sweep["bad"] == []
    assert set(sweep["outcomes"]) == {"ok", "MemoryError"}  # the sweep crossed the call's allocations
    assert sum(sweep["outcomes"].values()) == STEPS


def _out_of_memory(kernel, *args, **kwargs):
    """A launch that fails as Numba reports a failed allocation inside a parallel loop."""
    try:
        raise MemoryError("Allocation failed (probably too large).")
    except MemoryError as cause:
        raise SystemError(f"CPUDispatcher({kernel.__name__}) returned a result with an exception set") from cause


def _out_of_memory_after_writing(kernel, *args, **kwargs):
    """:func:`_out_of_memory` after writing into the launch's first argument (the output)."""
    args[0][...] = 12345.0
    _out_of_memory(kernel, *args)


def _inplace_call(name):
    op = OP[name]
    args = op.kwargs(problem(SIZES, np.float64, np.random.default_rng(0)))
    return op.func, args


def test_a_kernel_out_of_memory_after_writing_leaves_inplace_o_as_it_was(monkeypatch):
    """``sparse_block_gemv``'s kernel allocates inside its parallel loop: ``o`` is restored."""
    func, args = _inplace_call("sparse_block_gemv")
    before = args["o"].copy()
    monkeypatch.setattr(_threads, "launch", _out_of_memory_after_writing)
    with pytest.raises(MemoryError, match="scratch buffers of the CPU kernel"):
        func(**args, inplace=True)
    np.testing.assert_array_equal(args["o"], before)


def test_the_inplace_outer_kernel_allocates_everything_before_it_writes_o():
    """``sparse_block_outer(inplace=True)`` keeps no copy of its W-sized ``o``: each allocation of
    its kernel, made to fail in turn, must fail before anything is written (every strategy)."""
    proc = run_python(["-W", "error", "-m", "tests.support.kernel_alloc_order"], timeout=120,
                      env={"NUMBA_DISABLE_JIT": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case, result in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        assert result["bad"] == [], case
        assert result["allocations"] >= 2, case  # the sweep failed allocations of the kernel


@pytest.mark.parametrize("op", OPS, ids=str)
def test_a_kernel_out_of_memory_is_a_memory_error(monkeypatch, op):
    args = op.kwargs(problem(SIZES, np.float64, np.random.default_rng(0)))
    monkeypatch.setattr(_threads, "launch", _out_of_memory)
    with pytest.raises(MemoryError, match="scratch buffers of the CPU kernel"):
        op.func(**args)
