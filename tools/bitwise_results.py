"""Record every op's results on the benchmark workloads, or compare two recordings bit for bit.

A behaviour-preserving change (a refactoring, a move of code) must leave every
CPU result bit-identical. Record on the old checkout, record on the new one,
compare::

    PYTHONPATH=/path/to/old python tools/bitwise_results.py record old.json
    python tools/bitwise_results.py record new.json
    python tools/bitwise_results.py compare old.json new.json

Every public op runs on every benchmark workload (full and ``--quick`` sizes),
float32 and float64, with the workloads' seeded arrays. Record with warm
kernel caches (run ``record`` twice, keep the second): a kernel compiled in the
recording process can round differently from the same kernel loaded from the
disk cache (seen for the float64 softmax and the float32 tiny-block product),
so a cold recording differs from a warm one of the same code. A recording holds each
result's dtype, shape and SHA-256 of its bytes (the full-size results are
gigabytes).
"""

import hashlib
import json
import sys

import numpy as np

import nbsparse as nbs
from nbsparse.bench import workloads as wl


def _block_results(w, dtype):
    a = w.arrays(dtype)
    W, h, b, g, ii, oi = a["W"], a["h"], a["b"], a["grad"], a["input_idx"], a["output_idx"]
    yield "dot", nbs.sparse_block_dot(W, h, ii, b, oi)
    yield "gemv", nbs.sparse_block_gemv(g, W, h, ii, oi)
    yield "outer", nbs.sparse_block_outer(np.ones_like(W), h, g, ii, oi, 0.5)
    yield "dot_grad", nbs.sparse_block_dot_grad(g, W, h, ii, b, oi)
    yield "softmax", nbs.softmax(g, axis=-1)
    yield "softmax_axis1", nbs.softmax(g, axis=1)
    y = nbs.softmax(g)
    yield "softmax_grad", nbs.softmax_grad(g, y)


def _hsoftmax_results(w, dtype):
    a = w.arrays(dtype)
    args = (a["x"], w.batch, w.n_outputs, w.n_classes, w.K, a["W1"], a["b1"], a["W2"], a["b2"])
    target = a["target"]
    yield "h_softmax", nbs.h_softmax(*args, target=target)
    yield "h_softmax_grad", nbs.h_softmax_grad(a["grad"], *args, target=target)
    if target is not None:
        yield "nll", nbs.h_softmax_nll(*args, target)
        yield "nll_grad", nbs.h_softmax_nll_grad(a["grad"], *args, target)
        yield "h_softmax_truncated", nbs.h_softmax(a["x"], w.batch, w.n_outputs - 5, w.n_classes, w.K,
                                                   a["W1"], a["b1"], a["W2"], a["b2"])


def record(path):
    results = {}
    for quick in (True, False):
        for name in wl.WORKLOADS:
            w = wl.get(name, quick=quick)
            make = _block_results if name in wl.BLOCK_WORKLOADS else _hsoftmax_results
            for dtype in ("float32", "float64"):
                for op, out in make(w, dtype):
                    fields = out if isinstance(out, tuple) else (out,)
                    for k, arr in enumerate(fields):
                        arr = np.ascontiguousarray(arr)
                        digest = hashlib.sha256(arr.tobytes()).hexdigest()
                        key = f"{name}/{'quick' if quick else 'full'}/{dtype}/{op}/{k}"
                        results[key] = [arr.dtype.str, list(arr.shape), digest]
    with open(path, "w") as f:
        json.dump(results, f, indent=0, sort_keys=True)
    print(f"{len(results)} arrays recorded in {path}")


def compare(old_path, new_path):
    with open(old_path) as f:
        old = json.load(f)
    with open(new_path) as f:
        new = json.load(f)
    differ = sorted(set(old) ^ set(new))
    differ += [key for key in sorted(set(old) & set(new)) if old[key] != new[key]]
    print(f"{len(old)} arrays compared: {len(differ)} differ")
    for key in differ:
        print("  differs:", key)
    return 1 if differ else 0


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
