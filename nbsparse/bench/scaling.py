"""``python -m nbsparse.bench --scaling``: one training step of the ``h_softmax`` output layer as the vocabulary grows.

A step is the forward loss (``h_softmax_nll``), its gradient
(``h_softmax_nll_grad``) and an Adam step of ``W1``, ``b1``, ``W2``, ``b2``, at
batch 256, ``n_in`` 256 and ``n_classes = K = sqrt(V)``, two ways:

- **dense**: the dense gradient, then Adam over every element of every
  parameter written in NumPy, as a NumPy user writes it
  (``m *= beta1; m += (1 - beta1) * g; ...``);
- **sparse**: ``sparse=True`` (``W2``, ``b2`` as ``BlockGrad`` of the target
  classes), then ``nbsparse.optim.adam``: lazy over the listed blocks of
  ``W2``/``b2``, dense over ``W1``/``b1``.

**Touched** is the bytes of the ``W2``/``b2`` blocks the batch's targets select
plus all of ``W1``/``b1``. **Must move** is what any step has to move at least:
the forward reads the touched weights once, and the Adam step reads and writes
each touched parameter element and its two moments once (the gradient itself
could stay in cache in a fused step): 7 x touched. ``x roofline`` is the
measured time over ``max(must move / read bandwidth, FLOPs / GEMM peak)``,
with the FLOPs of the forward and the gradient (three products per level).
**Peak extra** is how far the process's peak resident memory rose above the
memory held before the step (``/proc/self/status`` ``VmHWM``, reset through
``/proc/self/clear_refs``; Linux only, else not shown): the temporaries of the
step, gradients included.

The dense path is skipped where ``W2``, its gradient and its two moments would
take more than half the memory available (at V = 4x10^6 float32: 16 GB), the
sparse path where ``W2`` and its moments would not fit in 80 % of it.
"""

import math
import os

import numpy as np

from .. import h_softmax_nll, h_softmax_nll_grad
from . import machine, timing

BATCH, N_IN = 256, 256
VOCABULARIES = ((10**4, ("float32", "float64")), (10**5, ("float32", "float64")),
                (10**6, ("float32", "float64")), (4 * 10**6, ("float32",)))
QUICK_VOCABULARIES = ((10**4, ("float32",)), (10**5, ("float32",)))
BETA1, BETA2, EPS, LR = 0.9, 0.999, 1e-8, 1e-3


class Layer:
    """The output layer's parameters, Adam state and one batch, for vocabulary ``V``."""

    def __init__(self, V, dtype, seed=0):
        rng = np.random.default_rng(seed)
        self.C = self.K = math.isqrt(V)
        self.V, self.dtype = self.C * self.K, np.dtype(dtype)
        scale = 1.0 / math.sqrt(N_IN)
        self.x = rng.standard_normal((BATCH, N_IN), dtype=np.float32).astype(dtype)
        self.W1 = (scale * rng.standard_normal((N_IN, self.C), dtype=np.float32)).astype(dtype)
        self.b1 = np.zeros(self.C, dtype)
        self.W2 = np.empty((self.C, N_IN, self.K), dtype)
        for c in range(0, self.C, 64):  # in slices: no float32 temporary of W2's size
            self.W2[c:c + 64] = scale * rng.standard_normal((min(64, self.C - c), N_IN, self.K), dtype=np.float32)
        self.b2 = np.zeros((self.C, self.K), dtype)
        self.target = rng.integers(0, self.V, BATCH)
        self.g = np.full(BATCH, 1.0 / BATCH, dtype)
        self.params = {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}
        self.moments = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in self.params.items()}
        self.step = 0

    def args(self):
        return (self.x, BATCH, self.V, self.C, self.K, self.W1, self.b1, self.W2, self.b2, self.target)

    @property
    def touched_bytes(self):
        classes = np.unique(self.target // self.K).size
        return self.dtype.itemsize * (classes * (N_IN * self.K + self.K) + self.W1.size + self.b1.size)

    @property
    def flops(self):
        per_level = 2.0 * BATCH * N_IN * (self.C + self.K)  # one product of each level
        return 3 * per_level  # forward, and the gradient's two products

    def dense_step(self):
        h_softmax_nll(*self.args())
        grads = h_softmax_nll_grad(self.g, *self.args())
        self.step += 1
        c1, c2 = 1 - BETA1**self.step, 1 - BETA2**self.step
        for name, param in self.params.items():  # NumPy's Adam, as a user writes it
            g = getattr(grads, name)
            m, v = self.moments[name]
            m *= BETA1
            m += (1 - BETA1) * g
            v *= BETA2
            v += (1 - BETA2) * g * g
            param -= LR * (m / c1) / (np.sqrt(v / c2) + EPS)

    def sparse_step(self, states):
        from .. import optim

        h_softmax_nll(*self.args())
        grads = h_softmax_nll_grad(self.g, *self.args(), sparse=True)
        for name, param in self.params.items():
            optim.adam(param, getattr(grads, name), states[name], LR, BETA1, BETA2, EPS)

    def adam_states(self):
        from .. import optim

        return {name: optim.AdamState(m, v, 0) for name, (m, v) in self.moments.items()}


def _peak_rss_reset():
    """Reset the process's peak resident memory; False where Linux's ``clear_refs`` is not available."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def time_step(step, repeat):
    """``(median seconds, peak extra bytes or None)`` of ``repeat`` calls of ``step`` after a warm-up call.

    The peak is taken on one more call, after nbsparse's recycled memory is
    given back (``nbsparse.memory.free_cached_memory``): a dense gradient kept
    mapped from the call before would otherwise hide in the baseline.
    """
    from ..memory import free_cached_memory

    step()
    samples = timing.time_calls(step, repeat, pause=0)
    free_cached_memory()
    tracked = _peak_rss_reset()
    before = _rss_kb("VmRSS")
    step()
    peak = (_rss_kb("VmHWM") - before) * 1024 if tracked else None
    return timing.median(samples), peak


HEADER = (f"{'V':>9s} {'dtype':8s} {'path':7s} {'ms':>9s} {'x sparse':>8s} {'W2 MB':>8s} {'touched MB':>10s} "
          f"{'must move MB':>12s} {'x roofline':>10s} {'peak extra MB':>13s}")


def run(quick=False, repeat=5, vocabularies=None, print=print):
    """Time both paths at every vocabulary; return the rows as JSON-ready dicts.

    ``vocabularies``: ``((V, dtypes), ...)``, by default :data:`VOCABULARIES`
    (:data:`QUICK_VOCABULARIES` when ``quick``).
    """
    bandwidth = machine.read_bandwidth()
    peaks = {}
    print(f"nbsparse.bench --scaling: batch {BATCH}, n_in {N_IN}, n_classes = K = sqrt(V), Adam; "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s")
    print(HEADER)
    rows = []
    if vocabularies is None:
        vocabularies = QUICK_VOCABULARIES if quick else VOCABULARIES
    for V, dtypes in vocabularies:
        for dtype in dtypes:
            if dtype not in peaks:
                peaks[dtype] = machine.gemm_peak(dtype, n=512 if quick else 2048)
            itemsize = np.dtype(dtype).itemsize
            w2_bytes = itemsize * V * N_IN
            if 3.2 * w2_bytes > 0.8 * _available_bytes():  # parameters and moments
                print(f"{V:9d} {dtype:8s} skipped: W2 and its moments would not fit in the memory available")
                continue
            layer = Layer(V, dtype)
            must_move = 7 * layer.touched_bytes
            bound = max(must_move / bandwidth, layer.flops / peaks[dtype])
            results = {}
            states = layer.adam_states()
            results["sparse"] = time_step(lambda: layer.sparse_step(states), repeat)
            if 4.2 * w2_bytes <= _available_bytes() / 2:  # ... and the dense gradient
                results["dense"] = time_step(layer.dense_step, repeat)
            else:
                print(f"{V:9d} {dtype:8s} dense   skipped: it would take more than half the memory")
            for path in ("dense", "sparse"):
                if path not in results:
                    continue
                seconds, peak = results[path]
                row = {"V": layer.V, "dtype": dtype, "path": path, "ms": seconds * 1e3,
                       "x_sparse": seconds / results["sparse"][0], "W2_MB": w2_bytes / 1e6,
                       "touched_MB": layer.touched_bytes / 1e6, "must_move_MB": must_move / 1e6,
                       "x_roofline": seconds / bound, "peak_extra_MB": None if peak is None else peak / 1e6}
                rows.append(row)
                peak_text = "-" if peak is None else f"{peak / 1e6:13.1f}"
                print(f"{layer.V:9d} {dtype:8s} {path:7s} {seconds * 1e3:9.2f} {row['x_sparse']:8.2f} "
                      f"{w2_bytes / 1e6:8.1f} {layer.touched_bytes / 1e6:10.1f} {must_move / 1e6:12.1f} "
                      f"{row['x_roofline']:10.2f} {peak_text:>13s}")
            layer = states = None  # give W2 and its moments back before the next size allocates its own
    return {"batch": BATCH, "n_in": N_IN, "read_bandwidth": bandwidth, "gemm_peak": peaks, "rows": rows}
