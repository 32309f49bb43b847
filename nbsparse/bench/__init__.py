"""``python -m nbsparse.bench``: nbsparse beside its peers, in one process and one run.

For each op and workload (``workloads``), the benchmark builds a case
(``cases``), computes the reference result once, checks nbsparse and every peer
against it (that call is also the warm-up), then times each ``repeat`` times
with a pause between implementations and reports medians. The machine's read
bandwidth and GEMM peak are measured in the same run, for the roofline
(``max(FLOPs / peak, minimum bytes / bandwidth)``) and dense-GEMM ratios.
"""

import gc
import json
import time

from . import cases, load, machine, report, scaling, timing, topk, workloads

DTYPES = ("float32", "float64")


def run_case(case, bandwidth, peak, repeat=5, pause=timing.PAUSE_S):
    """Check and time one case; return its summary dict (see ``report.summarise``)."""
    expected = case.expected()

    def checked_call(name, func):
        time.sleep(pause)
        if case.reset is not None:
            case.reset()
        start = time.perf_counter()
        got = func()
        elapsed = time.perf_counter() - start
        cases.check(name, case.result() if case.result is not None else got, expected, case.dtype)
        return elapsed

    first_call = checked_call("nbsparse", case.ours)
    timings = {"ours": timing.time_calls(case.ours, repeat, pause), "peers": {}, "yardsticks": {}}
    for name, func in case.peers.items():
        checked_call(name, func)
        timings["peers"][name] = timing.time_calls(func, repeat, pause)
    for name, func in case.yardsticks.items():
        func()
        timings["yardsticks"][name] = timing.time_calls(func, repeat, pause)
    return report.summarise(case, timings, first_call, bandwidth, peak)


def run(ops=cases.OPS, names=tuple(workloads.WORKLOADS), dtypes=DTYPES, quick=False, repeat=5,
        pause=timing.PAUSE_S, print=print):
    """Run every applicable (op, workload, dtype) case; return the results as a JSON-ready dict.

    Raises ``cases.CheckError`` if any implementation disagrees with the reference.
    """
    info = machine.describe()
    gemm_n = 512 if quick else 2048
    bandwidth = machine.read_bandwidth()
    peaks = {dtype: machine.gemm_peak(dtype, n=gemm_n) for dtype in dtypes}
    info["threading_layer"] = machine._threading_layer()
    print(f"nbsparse.bench: {info['processor']}, numba {info['numba']} ({info['numba_threads']} threads, "
          f"{info['threading_layer']}), numpy {info['numpy']}{', quick sizes' if quick else ''}")
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s; GEMM peak "
          + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items()))
    print(report.LEGEND)
    print(report.HEADER)
    results = []
    for dtype in dtypes:
        for op in ops:
            for name in names:
                case = cases.make(op, name, dtype, quick)
                if case is None:
                    continue
                results.append(run_case(case, bandwidth, peaks[dtype], repeat, pause))
                print(report.row(results[-1]))
                del case
                gc.collect()
    # Measured again at the end: on a shared machine either measurement can be low,
    # and a low bound flatters the roofline ratios. The ratios use the best of both.
    end_bandwidth = machine.read_bandwidth()
    end_peaks = {dtype: machine.gemm_peak(dtype, n=gemm_n) for dtype in dtypes}
    warning = machine.unsteady_warning(machine.limits(bandwidth, peaks), machine.limits(end_bandwidth, end_peaks))
    if warning:
        print(warning)
    if end_bandwidth > bandwidth or any(end_peaks[d] > peaks[d] for d in dtypes):
        bandwidth = max(bandwidth, end_bandwidth)
        peaks = {d: max(peaks[d], end_peaks[d]) for d in dtypes}
        for r in results:
            report.rebound(r, bandwidth, peaks[r["dtype"]])
        print(f"best of start and end: read bandwidth {bandwidth / 1e9:.1f} GB/s; GEMM peak "
              + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items()) + " (x roofline recomputed)")
    for op, name, dtype, ratio in report.gradient_ratios(results):
        print(f"{op} {name} {dtype}: {ratio:.2f}x its forward")
    return {"machine": info, "read_bandwidth": bandwidth, "gemm_peak": peaks, "quick": quick,
            "repeat": repeat, "pause_s": pause, "results": results}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nbsparse.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--op", action="append", choices=cases.OPS,
                        help="op to run (repeat the option for several; default: all)")
    parser.add_argument("--workload", action="append", choices=list(workloads.WORKLOADS),
                        help="workload to run (repeatable; default: all that fit the ops)")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="float dtype (repeatable; default: both)")
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run (about 30 s on 2 cores, "
                                                                "longer on a busy machine)")
    parser.add_argument("--repeat", type=int, help="timed calls per implementation (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write every sample and ratio to PATH")
    parser.add_argument("--load", type=int, metavar="N",
                        help="start N busy processes beside the run and time each op (also at the "
                             "self-check size) against itself on one thread, instead of the peers "
                             f"(0 to {load.MAX_LOAD}; calls per median: --repeat, default 21)")
    parser.add_argument("--scaling", action="store_true",
                        help="one training step of the h_softmax output layer (loss, gradient, Adam), dense "
                             "against sparse, at V = 10^4 to 4x10^6 (--quick: 10^4 and 10^5), instead of the peers")
    parser.add_argument("--topk", action="store_true",
                        help="top-10 through the hierarchy against full mode + argpartition, at V = 10^4 to 10^6 "
                             "(--quick: 10^4), flat and peaked class distributions, instead of the peers")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the cases on the GPU (CuPy arrays, CUDA events, median of --repeat "
                             "calls, default 10) beside CuPy and PyTorch peers")
    parser.add_argument("--cuda-resources", action="store_true",
                        help="registers, spills, shared memory and occupancy of every CUDA kernel on "
                             "sm_70/80/90, from ptxas; needs no GPU")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.cuda_resources or args.device == "cuda":
        return _gpu_main(args)
    if args.topk:
        out = topk.run(quick=args.quick, repeat=args.repeat or 3)
        _write_json(args.json, out)
        return 0
    if args.scaling:
        out = scaling.run(quick=args.quick, repeat=args.repeat or 5)
        _write_json(args.json, out)
        return 0
    if args.load is not None:
        if not 0 <= args.load <= load.MAX_LOAD:
            parser.error(f"--load must be between 0 and {load.MAX_LOAD}")
        out = load.run(args.load, ops=tuple(args.op or cases.OPS), names=tuple(args.workload or workloads.WORKLOADS),
                       dtypes=tuple(args.dtype or DTYPES), quick=args.quick, repeat=args.repeat or 21)
        _write_json(args.json, out)
        return 0
    try:
        out = run(ops=tuple(args.op or cases.OPS), names=tuple(args.workload or workloads.WORKLOADS),
                  dtypes=tuple(args.dtype or DTYPES), quick=args.quick, repeat=args.repeat or 5,
                  pause=0.05 if args.quick else timing.PAUSE_S)
    except cases.CheckError as err:
        print(f"CHECK FAILED: {err}")
        return 1
    _write_json(args.json, out)
    return 0


def _write_json(path, out):
    """``--json PATH``: every sample and ratio of the run, when a path was given."""
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


def _gpu_main(args):
    """``--cuda-resources`` and ``--device cuda`` (modules :mod:`.resources`, :mod:`.cuda`, :mod:`.cuda_topk`)."""
    try:
        if args.cuda_resources:
            from . import resources

            out = resources.run()
        elif args.topk:
            from . import cuda_topk

            out = cuda_topk.run(quick=args.quick, repeat=args.repeat or cuda_topk.REPEAT)
        else:
            from . import cuda

            out = cuda.run(ops=tuple(args.op or cases.OPS), names=tuple(args.workload or workloads.WORKLOADS),
                           dtypes=tuple(args.dtype or DTYPES), size="quick" if args.quick else "full",
                           repeat=args.repeat or cuda.REPEAT)
    except cases.CheckError as err:
        print(f"CHECK FAILED: {err}")
        return 1
    except (RuntimeError, FileNotFoundError) as err:  # no GPU, the simulator, no ptxas: say which
        print(f"cannot run: {err}")
        return 2
    code = 1 if out.get("problems") else 0
    _write_json(args.json, out)
    return code
