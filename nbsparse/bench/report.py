"""Per-case ratios and the printed table."""

from .timing import median


def summarise(case, timings, first_call_s, bandwidth, peak):
    """A JSON-ready dict of one case: every sample and the derived ratios."""
    ours = median(timings["ours"])
    peers = {name: median(s) for name, s in timings["peers"].items()}
    yards = {name: median(s) for name, s in timings["yardsticks"].items()}
    roofline = max(case.flops / peak, case.min_bytes / bandwidth)
    best = min(peers, key=peers.get) if peers else None
    theano = peers.get("theano_loop", peers.get("theano_graph"))
    return {
        "op": case.op, "workload": case.workload, "dtype": case.dtype,
        "ours_ms": 1e3 * ours,
        "first_call_ms": 1e3 * first_call_s,
        "gflops": case.flops / ours / 1e9,
        "x_dense_gemm": ours / (case.dense_flops / case.flops * yards["dense_gemm"]),
        "x_roofline": ours / roofline,
        "roofline_ms": 1e3 * roofline,
        "flops": case.flops,
        "min_bytes": case.min_bytes,
        "best_peer": best,
        "best_peer_ms": 1e3 * peers[best] if best else None,
        "speedup_best_peer": peers[best] / ours if best else None,
        "speedup_theano": theano / ours if theano else None,
        "x_flat_layer": ours / yards["flat_layer"] if "flat_layer" in yards else None,
        "peers_ms": {k: 1e3 * v for k, v in peers.items()},
        "yardsticks_ms": {k: 1e3 * v for k, v in yards.items()},
        "samples_s": timings,
        "notes": case.notes,
    }


def rebound(r, bandwidth, peak):
    """Recompute ``r``'s roofline with a better bandwidth and GEMM peak."""
    roofline = max(r["flops"] / peak, r["min_bytes"] / bandwidth)
    r["roofline_ms"] = 1e3 * roofline
    r["x_roofline"] = r["ours_ms"] / r["roofline_ms"]


HEADER = (f"{'op':15s} {'workload':16s} {'dtype':7s} {'ms':>9s} {'GF/s':>6s} {'xGEMM':>6s} "
          f"{'xroof':>6s} {'best peer':>14s} {'peer ms':>9s} {'speedup':>7s} {'xTheano':>8s}")


LEGEND = """\
columns: ms      nbsparse's median time of one call
         GF/s    its useful FLOPs per second
         xGEMM   its time over that of a dense BLAS GEMM doing the same FLOPs (below 1: faster)
         xroof   its time over the roofline, max(FLOPs / GEMM peak, least bytes / read bandwidth)
                 (1: at the machine's limit; below 1 where the data stays in cache)
         best peer, peer ms  the fastest of the NumPy-user implementations, and its time
         speedup peer ms / ms (above 1: nbsparse is faster)
         xTheano Theano's algorithm (its Python loop of small dots; for h_softmax its graph in
                 NumPy) over ms; - where it was not timed"""


def row(r):
    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"

    return (f"{r['op']:15s} {r['workload']:16s} {r['dtype']:7s} {r['ours_ms']:9.2f} {r['gflops']:6.1f} "
            f"{r['x_dense_gemm']:6.2f} {r['x_roofline']:6.2f} {str(r['best_peer']):>14s} "
            f"{num(r['best_peer_ms'], '9.2f')} {num(r['speedup_best_peer'], '7.2f')} "
            f"{num(r['speedup_theano'], '8.1f')}")


def gradient_ratios(results):
    """``[(op, workload, dtype, grad ms / forward ms)]`` for the gradients whose forward also ran."""
    forward = {("dot_grad", r["workload"], r["dtype"]): r["ours_ms"] for r in results if r["op"] == "dot"}
    forward.update({("h_softmax_grad", r["workload"], r["dtype"]): r["ours_ms"]
                    for r in results if r["op"] == "h_softmax"})
    return [(r["op"], r["workload"], r["dtype"], r["ours_ms"] / forward[key])
            for r in results if (key := (r["op"], r["workload"], r["dtype"])) in forward]
