"""``python -m nbsparse.bench --topk``: top-10 through the hierarchy against the full distribution.

At batch 256, ``n_in`` 256 and ``n_classes = K = sqrt(V)``, ``h_softmax_topk(k=10)``
against two ways a user gets the same answer without it: ``h_softmax``'s full
mode then ``np.argpartition`` (and a sort of the 10), and a dense NumPy layer
of the same model (``x @ W`` with ``W`` the ``(n_in, V)`` concatenation of the
classes' blocks, the same for every row as the hierarchy's probabilities
are not: it is a yardstick of reading every weight once) then ``argpartition``.

Two class distributions: **flat** (random weights, class logits of standard
deviation about 1: pruning cannot help) and **peaked** (class logits of
standard deviation 8, as a trained model's: the likeliest class of a row
takes most of its mass). Each row prints the mean number of class blocks
read per row (of ``sqrt(V)``). The results are checked against full mode.
"""

import math

import numpy as np

from .. import _host, h_softmax, h_softmax_topk
from .._hierarchy import Problem
from . import timing

BATCH, N_IN, TOP = 256, 256, 10
VOCABULARIES = (10**4, 10**5, 10**6)
QUICK_VOCABULARIES = (10**4,)
SPREADS = {"flat": 1.0, "peaked": 8.0}


def problem(V, spread, dtype="float32", seed=0, batch=BATCH, n_in=N_IN):
    """The arguments of ``h_softmax`` (without target) for vocabulary ``V`` and class-logit ``spread``."""
    rng = np.random.default_rng(seed)
    C = K = math.isqrt(V)
    scale = 1.0 / math.sqrt(n_in)
    x = rng.standard_normal((batch, n_in), dtype=np.float32).astype(dtype)
    W1 = (spread * scale * rng.standard_normal((n_in, C), dtype=np.float32)).astype(dtype)
    W2 = np.empty((C, n_in, K), dtype)
    for c in range(0, C, 64):
        W2[c:c + 64] = scale * rng.standard_normal((min(64, C - c), n_in, K), dtype=np.float32)
    return (x, batch, C * K, C, K, W1, np.zeros(C, dtype), W2, np.zeros((C, K), dtype))


def full_then_argpartition(args):
    probs = h_softmax(*args)
    part = np.argpartition(-probs, TOP - 1, axis=1)[:, :TOP]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def dense_then_argpartition(x, W_flat):
    logits = x @ W_flat
    part = np.argpartition(-logits, TOP - 1, axis=1)[:, :TOP]
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def median_time(func, repeat):
    """Median seconds of ``repeat`` calls of ``func`` after a warm-up call."""
    func()
    return timing.median(timing.time_calls(func, repeat, pause=0))


HEADER = (f"{'V':>9s} {'classes':8s} {'topk ms':>9s} {'full+argpart ms':>15s} {'x faster':>8s} "
          f"{'dense+argpart ms':>16s} {'classes read/row':>16s} {'of':>5s}")


def run(quick=False, repeat=3, vocabularies=None, print=print):
    """Time the three at every vocabulary and spread; return the rows as JSON-ready dicts."""
    vocabularies = vocabularies or (QUICK_VOCABULARIES if quick else VOCABULARIES)
    print(f"nbsparse.bench --topk: batch {BATCH}, n_in {N_IN}, n_classes = K = sqrt(V), k = {TOP}, float32")
    print(HEADER)
    rows = []
    for V in vocabularies:
        for name, spread in SPREADS.items():
            args = problem(V, spread)
            got = h_softmax_topk(*args, TOP)
            want = full_then_argpartition(args)
            probs_of = np.take_along_axis(h_softmax(*args), want, axis=1)
            got_probs = np.exp(got.log_probs)
            if not np.allclose(got_probs, probs_of, rtol=1e-4, atol=1e-7):
                raise AssertionError(f"h_softmax_topk disagrees with full mode at V={V}, {name}")
            p = Problem(_host.HOST_BACKEND, np.dtype(args[0].dtype), args[0], args[2], args[3], args[4],
                        *args[5:9], None)
            read = float(_host.HOST_BACKEND.h_softmax_topk(p, TOP)[2].mean())
            ours = median_time(lambda args=args: h_softmax_topk(*args, TOP), repeat)
            full = median_time(lambda args=args: full_then_argpartition(args), repeat)
            W_flat = np.ascontiguousarray(args[7].transpose(1, 0, 2).reshape(N_IN, -1))
            dense = median_time(lambda: dense_then_argpartition(args[0], W_flat), repeat)
            row = {"V": args[2], "classes": name, "topk_ms": ours * 1e3, "full_argpartition_ms": full * 1e3,
                   "x_faster": full / ours, "dense_argpartition_ms": dense * 1e3, "classes_read": read,
                   "n_classes": args[3]}
            rows.append(row)
            print(f"{args[2]:9d} {name:8s} {ours * 1e3:9.2f} {full * 1e3:15.2f} {full / ours:8.1f} "
                  f"{dense * 1e3:16.2f} {read:16.1f} {args[3]:5d}")
            args = W_flat = None
    return {"batch": BATCH, "n_in": N_IN, "k": TOP, "rows": rows}
