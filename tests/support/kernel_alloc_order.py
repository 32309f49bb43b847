"""Each allocation of an in-place call's CPU kernels made to fail in turn; run as a script under
``NUMBA_DISABLE_JIT=1`` by tests/robustness/test_alloc_failure.py.

With the kernels running as Python, every NumPy allocation function they call
(``np.empty``, ``np.zeros``, ...) goes through the modules' ``np``, which is
replaced here by one that counts the calls and raises ``MemoryError`` at call
number ``k``. A ``prange`` runs as a ``range``, one unit after another, so a
unit that allocated its own scratch would fail after the units before it had
written into ``o``. For ``k = 1, 2, ...`` until a call runs through, the call
must raise ``MemoryError`` with ``o`` as it was; the call that runs through must
give the reference's results.

As a script: ``python -m tests.support.kernel_alloc_order`` prints one JSON line,
for each case of :data:`CASES` ``{"allocations": n, "bad": [what went wrong]}``.
"""

import json
import sys

import numpy as np

import nbsparse as nbs
from nbsparse import _cpu, _reference

CASES = {
    # name: (batch, x_win, y_win, x_blocks, y_blocks, x_size, y_size)
    "tiles": (48, 2, 2, 2, 3, 12, 20),  # many terms per block: every unit on register tiles
    "tiles and scattered": (6, 2, 2, 4, 3, 9, 20),  # two buckets on tiles, one of few terms per block
    "few terms": (2, 1, 2, 8, 8, 4, 4),  # the few-terms kernel
}

_ALLOCATORS = ("empty", "zeros", "ones", "full", "arange", "empty_like", "zeros_like", "full_like")


class _FailingNumpy:
    """``numpy``, except that allocation number ``fail_at`` (counted from 1) raises ``MemoryError``."""

    def __init__(self):
        self.fail_at, self.count = 0, 0

    def __getattr__(self, name):
        attr = getattr(np, name)
        if name not in _ALLOCATORS:
            return attr

        def allocate(*args, **kwargs):
            self.count += 1
            if self.count == self.fail_at:
                raise MemoryError("Allocation failed (injected).")
            return attr(*args, **kwargs)

        return allocate


def _install():
    """The counting ``np`` in every kernel module (not in :mod:`nbsparse._cpu.pure`, the Python
    stand-ins for the intrinsics, whose arrays are registers in compiled code)."""
    fake = _FailingNumpy()
    for module in vars(_cpu).values():
        if getattr(module, "np", None) is np and module.__name__ != "nbsparse._cpu.pure":
            module.np = fake
    return fake


def sweep(fake, shape):
    batch, x_win, y_win, x_blocks, y_blocks, x_size, y_size = shape
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((batch, x_win, x_size)), rng.standard_normal((batch, y_win, y_size))
    x_idx, y_idx = rng.integers(0, x_blocks, (batch, x_win)), rng.integers(0, y_blocks, (batch, y_win))
    o0 = rng.standard_normal((x_blocks, y_blocks, x_size, y_size))
    expected = _reference.sparse_block_outer(o0.copy(), x, y, x_idx, y_idx, 0.5)
    bad = []
    for k in range(1, 200):
        o = o0.copy()
        fake.fail_at, fake.count = k, 0
        try:
            nbs.sparse_block_outer(o, x, y, x_idx, y_idx, alpha=0.5, inplace=True)
        except MemoryError:
            if not np.array_equal(o, o0):
                bad.append(f"allocation {k} failed after o was written")
            continue
        if not np.allclose(o, expected, rtol=1e-12, atol=1e-12):
            bad.append("wrong results")
        return {"allocations": k - 1, "bad": bad}
    return {"allocations": None, "bad": bad + ["the call never ran through"]}


if __name__ == "__main__":
    fake = _install()
    print(json.dumps({name: sweep(fake, CASES[name]) for name in sys.argv[1:] or CASES}))
