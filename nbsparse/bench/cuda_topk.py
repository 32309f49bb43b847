"""``python -m nbsparse.bench --device cuda --topk``: top-10 through the hierarchy on the GPU.

The cases of ``--topk`` (batch 256, ``n_in`` 256, ``n_classes = K = sqrt(V)``,
float32, flat and peaked class distributions) on device arrays: ``h_softmax_topk``
against ``h_softmax``'s full mode then CuPy's ``argpartition`` and a sort of the 10
(the peer needs CuPy; without it, it is listed as skipped). Each result is
checked against the CPU's ``h_softmax_topk`` on the same host arrays (the same
indices; log-probabilities to the float32 tolerance), then timed between CUDA
events (median of ``repeat``). Under the CUDA simulator the harness runs at one
tiny size and its times mean nothing.
"""

import statistics

import numpy as np

import nbsparse as nbs

from . import cases, topk
from .cuda import REPEAT, Device

#: (V, batch, n_in) under the simulator: a few hundred simulated threads per launch.
TINY = (16, 3, 4)


def _full_then_argpartition(cp, args):
    """The peer: every probability on the device, then the top ``topk.TOP`` of each row, sorted."""
    probs = nbs.h_softmax(*args)
    part = cp.argpartition(-probs, topk.TOP - 1, axis=1)[:, :topk.TOP]
    order = cp.argsort(-cp.take_along_axis(probs, part, axis=1), axis=1)
    return cp.take_along_axis(part, order, axis=1)


def _check(name, dev, got, want):
    """``got`` (device indices, and log-probabilities for nbsparse) equals the CPU's top-k ``want``."""
    if isinstance(got, tuple):
        indices, log_probs = (dev.get(a) for a in got)
        if not np.allclose(log_probs, want.log_probs, rtol=1e-4, atol=1e-6):
            raise cases.CheckError(f"{name}: log-probabilities differ from the CPU's h_softmax_topk")
    else:
        indices = dev.get(got)
    if not np.array_equal(indices, want.indices):
        raise cases.CheckError(f"{name}: top-{topk.TOP} indices differ from the CPU's h_softmax_topk")


def run(quick=False, repeat=REPEAT, print=print):
    """Time top-10 on the GPU at every vocabulary and class distribution; the JSON-ready rows."""
    dev = Device()
    if dev.sim:
        sizes = [TINY]
    else:
        sizes = [(V, topk.BATCH, topk.N_IN) for V in (topk.QUICK_VOCABULARIES if quick else topk.VOCABULARIES)]
    print(f"nbsparse.bench --device cuda --topk: {dev.name()}" + (" (times are not speeds)" if dev.sim else ""))
    print(f"{'V':>9s} {'classes':8s} {'topk ms':>9s} {'full+argpart ms':>15s} {'x faster':>8s}")
    rows, skipped = [], {}
    for V, batch, n_in in sizes:
        for name, spread in topk.SPREADS.items():
            host = topk.problem(V, spread, batch=batch, n_in=n_in)
            k = min(topk.TOP, host[2])
            want = nbs.h_softmax_topk(*host, k)
            args = tuple(dev.put(a) for a in host)
            ours = lambda args=args, k=k: tuple(nbs.h_softmax_topk(*args, k))  # noqa: E731
            _check("nbsparse", dev, ours(), want)
            ours_s = statistics.median(dev.time_calls(ours, repeat))
            row = {"V": host[2], "classes": name, "topk_ms": 1e3 * ours_s, "full_argpartition_ms": None,
                   "x_faster": None}
            if dev.cp is not None and k == topk.TOP:
                peer = lambda args=args: _full_then_argpartition(dev.cp, args)  # noqa: E731
                _check("full + cupy.argpartition", dev, peer(), want)
                peer_s = statistics.median(dev.time_calls(peer, repeat))
                row.update(full_argpartition_ms=1e3 * peer_s, x_faster=peer_s / ours_s)
            else:
                skipped["full + cupy.argpartition"] = "needs CuPy on a GPU"
            rows.append(row)
            peer_ms = "-" if row["full_argpartition_ms"] is None else f"{row['full_argpartition_ms']:.3f}"
            ratio = "-" if row["x_faster"] is None else f"{row['x_faster']:.1f}"
            print(f"{row['V']:9d} {name:8s} {row['topk_ms']:9.3f} {peer_ms:>15s} {ratio:>8s}")
    for peer, reason in skipped.items():
        print(f"skipped peer {peer}: {reason}")
    return {"device": dev.name(), "k": topk.TOP, "rows": rows, "skipped_peers": skipped}
