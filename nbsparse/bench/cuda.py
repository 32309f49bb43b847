"""``python -m nbsparse.bench --device cuda``: the benchmark's cases on the GPU, beside CuPy and PyTorch.

Each case (the block-sparse ops and ``h_softmax`` with its gradient, on the
workloads of :mod:`.workloads`) runs on device arrays: CuPy arrays on a GPU
with CuPy, Numba device arrays otherwise (and under the CUDA simulator, where
this harness is tested at tiny sizes). The first call of nbsparse and of every
peer is checked against ``nbsparse._reference`` (and is the warm-up); then each
is timed ``repeat`` times with CUDA events, and the median reported. The GPU's
copy bandwidth and GEMM peak are measured in the same run for "x roofline":
``max(FLOPs / peak, minimum bytes / bandwidth)``. Peers that cannot run here
(no CuPy, no PyTorch with CUDA) are listed as skipped with the reason. Under the
simulator the times are the simulator's wall time, meaningless as speed.
"""

import dataclasses
import importlib.util
import statistics
import time

import numpy as np

import nbsparse as nbs

from . import cases, cuda_peers, workloads

#: Sizes under the CUDA simulator (a few hundred simulated threads per launch).
TINY = {
    "block": dict(i_blocks=3, o_blocks=3, i_size=4, o_size=5, batch=3, i_win=2, o_win=2),
    "hsoftmax": dict(n_in=4, n_classes=3, K=3, batch=3),
}
#: Calls per median; the issue's minimum is 10 after the warm-up.
REPEAT = 10


class Device:
    """Device arrays, synchronisation and CUDA-event timing: CuPy's when importable off the simulator, else Numba's."""

    def __init__(self):
        from numba import cuda

        from nbsparse._cuda.launch import SIM

        self.cuda, self.sim = cuda, SIM
        if not SIM and not cuda.is_available():
            raise RuntimeError("no CUDA GPU is available to Numba (numba.cuda.is_available() is False): "
                               "see numba.cuda.detect(), and pip install 'nbsparse[cu12]'")
        self.cp = None
        if not SIM and importlib.util.find_spec("cupy") is not None:
            import cupy

            self.cp = cupy
        self.torch = None if SIM or self.cp is None else cuda_peers.torch_cuda()

    def name(self):
        """The GPU's name and compute capability, or "CUDA simulator"."""
        if self.sim:
            return "CUDA simulator"
        d = self.cuda.get_current_device()
        name = d.name.decode() if isinstance(d.name, bytes) else d.name
        return f"{name} (compute capability {d.compute_capability[0]}.{d.compute_capability[1]})"

    def put(self, a):
        if a is None or not isinstance(a, np.ndarray):
            return a
        return self.cp.asarray(a) if self.cp is not None else self.cuda.to_device(a)

    def get(self, a):
        if isinstance(a, tuple):
            return tuple(self.get(v) for v in a)
        if self.cp is not None and isinstance(a, self.cp.ndarray):
            return self.cp.asnumpy(a)
        if hasattr(a, "copy_to_host"):
            return a.copy_to_host()
        if hasattr(a, "cpu"):  # a torch tensor
            return a.cpu().numpy()
        return np.asarray(a)

    def sync(self):
        if self.cp is not None:
            self.cp.cuda.get_current_stream().synchronize()
        else:
            self.cuda.synchronize()

    def time_calls(self, func, repeat=REPEAT):
        """Seconds of each of ``repeat`` calls, between CUDA events (wall time under the simulator)."""
        samples = []
        for _ in range(repeat):
            if self.sim:
                start = time.perf_counter()
                func()
                samples.append(time.perf_counter() - start)
                continue
            events = (self.cp.cuda.Event(), self.cp.cuda.Event()) if self.cp else (self.cuda.event(), self.cuda.event())
            events[0].record()
            func()
            events[1].record()
            events[1].synchronize()
            if self.cp is not None:
                samples.append(self.cp.cuda.get_elapsed_time(*events) / 1e3)
            else:
                samples.append(self.cuda.event_elapsed_time(*events) / 1e3)
        return samples

    def bandwidth(self, n_bytes=256 << 20, repeat=REPEAT):
        """Device-to-device copy bandwidth, bytes/s (read plus write), best of ``repeat``."""
        n = n_bytes // 8
        if self.cp is not None:
            src, dst = self.cp.ones(n), self.cp.empty(n)
            copy = lambda: dst.__setitem__(Ellipsis, src)  # noqa: E731
        else:
            src, dst = self.cuda.to_device(np.ones(n)), self.cuda.device_array(n)
            copy = lambda: dst.copy_to_device(src)  # noqa: E731
        copy()
        self.sync()
        return 2 * 8 * n / min(self.time_calls(copy, repeat))

    def gemm_peak(self, dtype, n=4096, repeat=REPEAT):
        """Best FLOP/s of an ``n^3`` CuPy GEMM in ``dtype``; None without CuPy."""
        if self.cp is None:
            return None
        a = self.cp.ones((n, n), dtype)
        out = a @ a
        self.sync()
        return 2.0 * n**3 / min(self.time_calls(lambda: self.cp.matmul(a, a, out=out), repeat))


@dataclasses.dataclass
class DeviceCase:
    op: str
    workload: str
    dtype: str
    flops: float
    min_bytes: float
    expected: object
    ours: object
    peers: dict
    skipped: dict
    notes: list


def _workload(name, size):
    w = workloads.get(name, quick=size == "quick")
    if size == "tiny":
        kind = "block" if isinstance(w, workloads.BlockWorkload) else "hsoftmax"
        w = dataclasses.replace(w, **TINY[kind])
    return w


def make_case(dev, op, name, dtype, size="full"):
    """The :class:`DeviceCase` of ``op`` on workload ``name`` (``size``: "full", "quick" or "tiny"), or None."""
    w = _workload(name, size)
    if op in cases.BLOCK_OPS and isinstance(w, workloads.BlockWorkload):
        host = cases.block_case(op, w, dtype)  # the flops, bytes and reference of the CPU benchmark
    elif op in cases.HSOFTMAX_OPS and isinstance(w, workloads.HSoftmaxWorkload):
        host = cases.hsoftmax_case(op, w, dtype)
    else:
        return None
    a = {k: dev.put(v) for k, v in w.arrays(dtype).items()}
    peers, notes = {}, []
    skipped = cuda_peers.unavailable(op, dev.cp, dev.torch)
    if op in cases.BLOCK_OPS:
        W, h, b, g, ii, oi = (a[k] for k in ("W", "h", "b", "grad", "input_idx", "output_idx"))
        if op == "dot":
            ours = lambda: nbs.sparse_block_dot(W, h, ii, b, oi)  # noqa: E731
            if dev.cp is not None:
                peers.update(cuda_peers.dot_peers(dev.cp, W, h, ii, b, oi))
            if dev.torch is not None:
                peers.update(cuda_peers.torch_peers(op, dev.torch, {"W": W, "h": h, "b": b, "input_idx": ii,
                                                                    "output_idx": oi}))
        elif op == "outer":
            o = dev.put(np.zeros(W.shape, W.dtype))
            ours = lambda: nbs.sparse_block_outer(o, h, g, ii, oi, 0.5)  # noqa: E731
            if dev.cp is not None:
                peers.update(cuda_peers.outer_peers(dev.cp, o, h, g, ii, oi, 0.5))
            if dev.torch is not None:
                peers.update(cuda_peers.torch_peers(op, dev.torch, {"o": o, "x": h, "y": g, "x_idx": ii,
                                                                    "y_idx": oi, "alpha": 0.5}))
        else:
            ours = lambda: tuple(nbs.sparse_block_dot_grad(g, W, h, ii, b, oi))  # noqa: E731
            notes.append("no GPU peer computes the three gradients in one call")
    else:
        x, W1, b1, W2, b2, target, g = (a[k] for k in ("x", "W1", "b1", "W2", "b2", "target", "grad"))
        sizes = (x, w.batch, w.n_outputs, w.n_classes, w.K, W1, b1, W2, b2)
        tgt = () if target is None else (target,)
        if op == "h_softmax":
            ours = lambda: nbs.h_softmax(*sizes, *tgt)  # noqa: E731
            if dev.cp is not None:
                peers.update(cuda_peers.hsoftmax_peers(dev.cp, x, w.K, W1, b1, W2, b2, target, w.n_outputs))
            if dev.torch is not None:
                peers.update(cuda_peers.torch_peers(op, dev.torch, {"x": x, "W1": W1, "b1": b1, "W2": W2,
                                                                    "b2": b2, "target": target, "K": w.K}))
            notes.append(cuda_peers.ADAPTIVE_NOTE)
        else:
            ours = lambda: tuple(nbs.h_softmax_grad(g, *sizes, *tgt))  # noqa: E731
            notes.append("no GPU peer computes the five gradients in one call")
    return DeviceCase(op, w.name, np.dtype(dtype).name, host.flops, host.min_bytes, host.expected, ours,
                      peers, skipped, notes)


def run_case(dev, case, bandwidth, peak, repeat=REPEAT):
    """Check, then time, nbsparse and every peer of ``case``; the JSON-ready row."""
    expected = case.expected()

    def checked(name, func):
        dev.sync()
        start = time.perf_counter()
        got = func()
        dev.sync()
        elapsed = time.perf_counter() - start
        cases.check(name, dev.get(got), expected, case.dtype)
        return elapsed

    first = checked("nbsparse", case.ours)
    ours = statistics.median(dev.time_calls(case.ours, repeat))
    peers = {}
    for name, func in case.peers.items():
        checked(name, func)
        peers[name] = statistics.median(dev.time_calls(func, repeat))
    roofline = max(case.flops / peak if peak else 0.0, case.min_bytes / bandwidth)
    best = min(peers, key=peers.get) if peers else None
    return {"op": case.op, "workload": case.workload, "dtype": case.dtype, "ours_ms": 1e3 * ours,
            "first_call_ms": 1e3 * first, "gflops": case.flops / ours / 1e9,
            "x_roofline": ours / roofline, "roofline_ms": 1e3 * roofline,
            "best_peer": best, "best_peer_ms": 1e3 * peers[best] if best else None,
            "speedup_best_peer": peers[best] / ours if best else None,
            "peers_ms": {k: 1e3 * v for k, v in peers.items()}, "skipped": case.skipped, "notes": case.notes}


HEADER = (f"{'op':15s} {'workload':16s} {'dtype':7s} {'ms':>9s} {'first ms':>9s} {'GF/s':>7s} {'xroof':>6s} "
          f"{'best peer':>19s} {'peer ms':>9s} {'speedup':>7s}")


def row(r):
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    return (f"{r['op']:15s} {r['workload']:16s} {r['dtype']:7s} {r['ours_ms']:9.3f} {r['first_call_ms']:9.1f} "
            f"{r['gflops']:7.1f} {r['x_roofline']:6.2f} {str(r['best_peer']):>19s} "
            f"{num(r['best_peer_ms'], '9.3f')} {num(r['speedup_best_peer'], '7.2f')}")


def run(ops=cases.OPS, names=tuple(workloads.WORKLOADS), dtypes=("float32", "float64"), size="full",
        repeat=REPEAT, print=print):
    """Every applicable (op, workload, dtype) case on the GPU; the JSON-ready result.

    ``size`` is "full", "quick" (the reduced sizes) or "tiny" (always under the simulator).
    Raises ``cases.CheckError`` when nbsparse or a peer disagrees with the reference.
    """
    dev = Device()
    size = "tiny" if dev.sim else size  # a simulated thread costs about 0.25 ms
    info = _describe(dev)
    bandwidth = dev.bandwidth(n_bytes=(1 << 12) if dev.sim else (256 << 20), repeat=2 if dev.sim else repeat)
    peaks = {dtype: dev.gemm_peak(dtype) for dtype in dtypes}
    print(f"nbsparse.bench --device cuda: {info['device']}" + (" (times are not speeds)" if dev.sim else ""))
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; GEMM peak "
          + ", ".join(f"{d} {p / 1e12:.1f} TFLOP/s" if p else f"{d} - (needs CuPy)" for d, p in peaks.items()))
    print(HEADER)
    results, skipped = [], {}
    for dtype in dtypes:
        for op in ops:
            for name in names:
                case = make_case(dev, op, name, dtype, size)
                if case is None:
                    continue
                results.append(run_case(dev, case, bandwidth, peaks[dtype], repeat))
                print(row(results[-1]))
                skipped.update(case.skipped)
    for name, reason in skipped.items():
        print(f"skipped peer {name}: {reason}")
    for note in dict.fromkeys(n for r in results for n in r["notes"]):
        print(f"note: {note}")
    return {"machine": info, "bandwidth": bandwidth, "gemm_peak": peaks, "size": size, "repeat": repeat,
            "results": results, "skipped_peers": skipped}


def _describe(dev):
    import numba

    info = {"numba": numba.__version__, "numpy": np.__version__, "simulator": dev.sim,
            "cupy": dev.cp.__version__ if dev.cp is not None else None,
            "torch": dev.torch.__version__ if dev.torch is not None else None}
    info["device"] = dev.name()
    return info
