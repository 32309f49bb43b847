"""Calls under a shrinking address-space limit; run as a script by tests/robustness/test_alloc_failure.py.

For one op, a warm call first (kernels loaded, threads started, every
allocation's memory mapped once), then the same call again and again under
``RLIMIT_AS`` set to the process's address space now plus a margin that sweeps
from the call's whole need down to nothing. Each call must either succeed with
the reference's results or raise ``MemoryError`` with every argument as it was;
nothing else (no ``SystemError``, no half-written ``o``).

As a script: ``python -m tests.support.alloc_workload STEPS [call ...]`` prints one
JSON line, for each call (all of :data:`CALLS` by default)
``{"outcomes": {"ok": n, "MemoryError": n, ...}, "bad": [what went wrong]}``.
"""

import json
import resource
import sys

import numpy as np

from nbsparse import _hugepages
from nbsparse._optable import OP, Sizes, problem, tolerance

SIZES = Sizes(batch=256, i_win=4, o_win=4, i_blocks=8, o_blocks=8, i_size=64, o_size=64, n_in=128,
              n_classes=64, n_outputs_per_class=64, n_outputs=4000, softmax_width=4096)
"""Large enough that the kernels' own buffers (their scratch, the gradients) are megabytes."""

BELOW = 32 << 20
"""The sweep ends this far below the address space of the warm process: no new mapping at all,
only the memory the allocators hold free already."""

CALLS = {
    "sparse_block_gemv(inplace)": ("sparse_block_gemv", {"inplace": True}),
    "sparse_block_outer(inplace)": ("sparse_block_outer", {"inplace": True}),
    "sparse_block_dot_grad": ("sparse_block_dot_grad", {}),
    "h_softmax_grad(target)": ("h_softmax_grad[target]", {}),
    "h_softmax_nll_grad": ("h_softmax_nll_grad", {}),
}


def address_space():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _matches(result, expected, dtype):
    pairs = zip(result, expected) if isinstance(result, tuple) else [(result, expected)]
    return all(np.allclose(got, want, **tolerance(dtype)) for got, want in pairs)


def sweep(name, steps):
    op_name, extra = CALLS[name]
    op = OP[op_name]
    dtype = np.float64
    arrays = problem(SIZES, dtype, np.random.default_rng(0))
    args = op.kwargs(arrays)
    originals = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    expected = op.reference(**args)
    fresh = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    op.func(**fresh, **extra)  # warm: compiled, threads started
    _hugepages.free_cached_memory()
    base = address_space()
    need = 6 * sum(a.nbytes for a in originals.values()) + (64 << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    outcomes, bad = {}, []
    for step in range(steps):
        margin = need - (need + BELOW) * step // max(1, steps - 1)
        call_args = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
        before = {k: call_args[k].copy() for k in originals}
        resource.setrlimit(resource.RLIMIT_AS, (base + margin, hard))
        try:
            result = op.func(**call_args, **extra)
            outcome = "ok"
        except MemoryError:
            outcome, result = "MemoryError", None
        except Exception as e:  # anything else is a bug: recorded
            outcome, result = type(e).__name__, None
            bad.append(f"margin {margin >> 20} MiB: {type(e).__name__}: {str(e)[:200]}")
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "ok" and not _matches(result, expected, dtype):
            bad.append(f"margin {margin >> 20} MiB: wrong results")
        if outcome != "ok":
            touched = [k for k in originals if not np.array_equal(call_args[k], before[k], equal_nan=True)]
            if touched:
                bad.append(f"margin {margin >> 20} MiB: {outcome} with {touched} changed")
        del result
        _hugepages.free_cached_memory()
    return {"outcomes": outcomes, "bad": bad}


if __name__ == "__main__":
    steps = int(sys.argv[1])
    print(json.dumps({name: sweep(name, steps) for name in sys.argv[2:] or CALLS}))
