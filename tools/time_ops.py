"""Median time of every op on the benchmark workloads, for an A/B comparison of two checkouts.

``python -m nbsparse.bench`` also times the peers and checks the reference (ten
minutes); this times nbsparse alone, so two checkouts can alternate in one
window of machine load::

    for run in 1 2 3; do
        PYTHONPATH=/path/to/old python tools/time_ops.py old-$run.json
        python tools/time_ops.py new-$run.json
    done
    python tools/time_ops.py --compare old-*.json -- new-*.json

Each figure is the median of ``REPEAT`` calls after one warm-up call; the
comparison prints, per case, the median over runs of each side and their ratio.
"""

import json
import statistics
import sys
import time

import numpy as np

import nbsparse as nbs
from nbsparse.bench import workloads as wl

REPEAT = 7


def _calls(w, dtype):
    if w.name in wl.BLOCK_WORKLOADS:
        a = w.arrays(dtype)
        W, h, b, g, ii, oi = a["W"], a["h"], a["b"], a["grad"], a["input_idx"], a["output_idx"]
        o = np.zeros_like(W)
        yield "dot", lambda: nbs.sparse_block_dot(W, h, ii, b, oi)
        yield "outer", lambda: nbs.sparse_block_outer(o, h, g, ii, oi, inplace=True)
        yield "dot_grad", lambda: nbs.sparse_block_dot_grad(g, W, h, ii, b, oi)
    else:
        a = w.arrays(dtype)
        args = (a["x"], w.batch, w.n_outputs, w.n_classes, w.K, a["W1"], a["b1"], a["W2"], a["b2"])
        yield "h_softmax", lambda: nbs.h_softmax(*args, target=a["target"])
        yield "h_softmax_grad", lambda: nbs.h_softmax_grad(a["grad"], *args, target=a["target"])


def _median_time(func):
    func()
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def record(path, quick=False):
    results = {}
    for name in wl.WORKLOADS:
        w = wl.get(name, quick=quick)
        for dtype in ("float32", "float64"):
            for op, func in _calls(w, dtype):
                results[f"{op}/{name}/{dtype}"] = _median_time(func)
    with open(path, "w") as f:
        json.dump(results, f, indent=0)


def compare(old_paths, new_paths):
    def load(paths):
        runs = [json.load(open(p)) for p in paths]
        return {key: statistics.median(run[key] for run in runs) for key in runs[0]}

    old, new = load(old_paths), load(new_paths)
    print(f"{'case':36s} {'old ms':>8s} {'new ms':>8s} {'new/old':>8s}")
    for key in old:
        print(f"{key:36s} {old[key] * 1e3:8.2f} {new[key] * 1e3:8.2f} {new[key] / old[key]:8.2f}")
    ratios = [new[key] / old[key] for key in old]
    print(f"median ratio {statistics.median(ratios):.3f}, range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        split = sys.argv.index("--")
        compare(sys.argv[2:split], sys.argv[split + 1:])
    else:
        record(sys.argv[1], quick="--quick" in sys.argv)
