"""asv benchmarks for nbsparse: run from ``asv_bench/`` with ``asv run --python=same``.

The cases come from ``nbsparse.bench`` at its reduced (``--quick``) sizes: the same
workloads, NumPy peers and dense-GEMM yardstick as ``python -m nbsparse.bench``,
small enough for asv's many repeats. The full-size, one-run comparison is
``python -m nbsparse.bench``.
"""

from nbsparse.bench import cases

DTYPES = ["float32", "float64"]


def make_case(op, workload, dtype):
    """The reduced-size ``nbsparse.bench`` case, with nbsparse compiled (or loaded from cache)."""
    case = cases.make(op, workload, dtype, quick=True)
    case.ours()  # compile outside the timing
    return case
