"""``python -m nbsparse check``: run every public op once and compare it with the reference."""

import time

import numpy as np

from . import _load
from ._optable import OPS, Sizes, problem, tolerance

SIZES = Sizes(batch=32, i_win=3, o_win=2, i_blocks=8, o_blocks=16, i_size=24, o_size=40, n_in=48,
              n_classes=12, n_outputs_per_class=16, n_outputs=180, softmax_width=1000)
"""A small problem of every op (one softmax row of 1000)."""


def other_runnable_tasks(samples=9, pause_s=0.005):
    """The median, over ``samples`` readings ``pause_s`` apart, of the runnable tasks other than this thread."""
    counts = []
    for _ in range(samples):
        time.sleep(pause_s)  # longer than _load.SAMPLE_S: each reading is fresh
        counts.append(max(0, _load.runnable_tasks() - 1))
    return sorted(counts)[len(counts) // 2]


def _time(func, args, repeat=20):
    start = time.perf_counter()
    for _ in range(repeat):
        func(**args)
    return (time.perf_counter() - start) / repeat


def _on_device(sizes, repeat):
    """The GPU's ``Device`` helper, and the sizes and repeats to use on it (tiny under the simulator)."""
    from .bench.cuda import Device
    from .bench.timing import median

    gpu = Device()
    if gpu.sim:  # a simulated thread costs about 0.25 ms: the smallest problem, one warm call
        sizes, repeat = Sizes(), 1
    return gpu, sizes, repeat, median


def run(print=print, device="cpu", sizes=SIZES, repeat=20):
    """Run the check on ``device`` ("cpu" or "cuda"); return True when every op matched the reference.

    ``max err`` is the largest absolute difference from the reference divided by
    the largest reference magnitude; ``reference`` times the NumPy loops. On
    "cuda" every array goes to the GPU first (CuPy arrays when CuPy is
    installed), the first call is timed to its end (it includes the kernels'
    compilation) and the warm calls with CUDA events (median of ``repeat``).
    """
    import numba

    gpu = None
    if device == "cuda":
        gpu, sizes, repeat, median = _on_device(sizes, repeat)
        kind = "CuPy" if gpu.cp is not None else "Numba device"
        print(f"nbsparse self-check on the GPU: {gpu.name()}{' (times are not speeds)' if gpu.sim else ''}, "
              f"numba {numba.__version__}, numpy {np.__version__}, {kind} arrays")
    else:
        print(f"nbsparse self-check: numba {numba.__version__}, numpy {np.__version__}, "
              f"{numba.get_num_threads()} threads")
        if numba.config.DISABLE_JIT:
            repeat = 1
            print("NUMBA_DISABLE_JIT=1: the kernels run as Python (hundreds of times slower); one warm call timed")
    others = other_runnable_tasks()
    if others:
        print(f"warning: the machine is busy ({others} other runnable task{'s' if others > 1 else ''} on "
              f"{_load.available_cores()} cores): the times below are not an idle machine's; "
              "nbsparse runs its kernels on fewer threads while it lasts")
    print(f"{'op':26s} {'dtype':8s} {'first call':>11s} {'warm call':>10s} "
          f"{'reference':>10s} {'max err':>10s}")
    ok = True
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        arrays = problem(sizes, dtype, rng)
        for op in OPS:
            func, reference, args = op.func, op.reference, op.kwargs(arrays)
            call_args = args if gpu is None else {k: gpu.put(a) for k, a in args.items()}
            start = time.perf_counter()
            result = func(**call_args)
            if gpu is not None:
                gpu.sync()
                result = gpu.get(result)
            first = time.perf_counter() - start
            if gpu is None:
                warm = _time(func, args, repeat)
            else:
                warm = median(gpu.time_calls(lambda: func(**call_args), repeat))  # noqa: B023
            expected = reference(**args)
            pairs = zip(result, expected) if isinstance(result, tuple) else [(result, expected)]
            err = 0.0
            for got, want in pairs:
                scale = float(np.max(np.abs(want), initial=0.0)) or 1.0
                err = max(err, float(np.max(np.abs(got - want), initial=0.0)) / scale)
                ok &= bool(np.allclose(got, want, **tolerance(dtype)))
            print(f"{op.label:26s} {np.dtype(dtype).name:8s} {first * 1e3:9.1f}ms "
                  f"{warm * 1e3:8.3f}ms {_time(reference, args, 3) * 1e3:8.2f}ms "
                  f"{err:10.1e}")
    print("all ops match the NumPy reference" if ok else "MISMATCH: see the rows above")
    return ok

