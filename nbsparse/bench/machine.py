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


UNSTEADY = 1.5  # a limit measured this much higher at one end than at the other


def limits(bandwidth, peaks):
    """``{name: value}`` of a read bandwidth (bytes/s) and GEMM peaks (``{dtype: FLOP/s}``), in GB/s and GFLOP/s."""
    return {"read bandwidth (GB/s)": bandwidth / 1e9, **{f"{d} GEMM peak (GFLOP/s)": p / 1e9 for d, p in peaks.items()}}


def unsteady_warning(start, end, ratio=UNSTEADY):
    """A warning line when a limit measured at the start and at the end of a run differs by ``ratio`` or more.

    ``start`` and ``end`` map a name (``"read bandwidth"``, ``"float32 GEMM peak"``)
    to the value measured then. Other work on the machine slows one measurement and
    every timing of the run with it (a GEMM peak of 21 GFLOP/s at the start and 144
    at the end was seen here with other jobs running). None when every limit is steady.
    """
    moved = [f"{name} {start[name]:.3g} at the start, {end[name]:.3g} at the end"
             for name in start if max(start[name], end[name]) >= ratio * min(start[name], end[name])]
    if not moved:
        return None
    return ("WARNING: the machine was busy or its clock changed during the run (" + "; ".join(moved)
            + "): its timings are noisy; rerun on an idle machine and compare ratios taken within one run")


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
