"""The machine's own limits, measured in the same run as the kernels: read bandwidth and GEMM peak."""

import time

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _read_all(a):
    """Sum of ``a`` in one parallel pass: every byte read once, nothing written."""
    total = 0.0
    for k in prange(a.size):
        total += a[k]
    return total


def read_bandwidth(n_bytes=256 << 20, repeat=5):
    """Best read bandwidth (bytes/s) of a parallel sum over ``n_bytes``, far past the L3 cache."""
    a = np.ones(n_bytes // 8)
    _read_all(a)
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        _read_all(a)
        best = min(best, time.perf_counter() - start)
    return a.nbytes / best


def gemm_peak(dtype, n=2048, repeat=5):
    """Best FLOP/s of an ``n x n x n`` BLAS GEMM in ``dtype`` (NumPy's BLAS, all its threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = a @ b
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def describe():
    """Versions and thread counts to record beside the timings."""
    import platform

    import numba

    return {
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "threading_layer": _threading_layer(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
    }


def _threading_layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "unknown"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()
