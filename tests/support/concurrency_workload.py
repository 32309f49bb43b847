"""Concurrent calls of every op, checked bit for bit: imported by tests/robustness/test_concurrency.py
and run as a script in child processes, one per Numba threading layer.

Each of ``threads`` Python threads sets its own Numba thread count (1, 2, ... up
to ``NUMBA_NUM_THREADS``, cycling), waits at a barrier so that all start
together, then makes ``repeats`` rounds of calls of every op and mode (each
thread starting at a different op, so different kernels overlap). Every result
must equal, bit for bit, the result of the same call made before, alone, on one
Numba thread: the CPU kernels promise results independent of the thread count.
The accumulating ops get heavily repeated index pairs (every product lands on one
block), and the outer update and the weight/bias gradients also get
integer-valued inputs, whose sums are exact in any order: those must equal the
NumPy oracle exactly.

As a script it prints one JSON line: the threading layer Numba used, whether
nbsparse serialised its launches, the number of calls, and the mismatches.
"""

import json
import sys
import threading

import numba
import numpy as np

import nbsparse as nbs
from nbsparse import _reference, _threads

BATCH, WIN, BLOCKS, SIZE = 48, 4, 3, 6


def _repeated_pairs(rng, dtype):
    """Block-sparse arguments whose every (input, output) pair is block (1, 2)."""
    W = rng.standard_normal((BLOCKS, BLOCKS, SIZE, SIZE)).astype(dtype)
    h = rng.standard_normal((BATCH, WIN, SIZE)).astype(dtype)
    b = rng.standard_normal((BLOCKS, SIZE)).astype(dtype)
    g = rng.standard_normal((BATCH, WIN, SIZE)).astype(dtype)
    ones = np.ones((BATCH, WIN), np.int64)
    return W, h, ones, b, 2 * ones, g


def calls(seed=0):
    """``{name: thunk}``: every public op and mode on small problems, float32 and float64."""
    rng = np.random.default_rng(seed)
    out = {}
    for dtype in (np.float32, np.float64):
        tag = np.dtype(dtype).name
        W, h, i_idx, b, o_idx, g = _repeated_pairs(rng, dtype)
        o = rng.standard_normal((BATCH, WIN, SIZE)).astype(dtype)
        outer_o = np.zeros(W.shape, dtype)
        x = rng.standard_normal((BATCH, 7)).astype(dtype)
        W1, b1 = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)
        W2 = rng.standard_normal((5, 7, 4)).astype(dtype)
        b2 = rng.standard_normal((5, 4)).astype(dtype)
        target = np.full(BATCH, 9)  # every row in class 2: the W2/b2 gradients repeat a block
        hsm = (x, BATCH, 18, 5, 4, W1, b1, W2, b2)
        g_full, g_target = rng.standard_normal((BATCH, 18)), rng.standard_normal(BATCH)
        logits = 3 * rng.standard_normal((BATCH, 33)).astype(dtype)
        y = nbs.softmax(logits, axis=0)
        out.update({
            f"gemv[{tag}]": lambda a=(o, W, h, i_idx, o_idx): nbs.sparse_block_gemv(*a),
            f"dot[{tag}]": lambda a=(W, h, i_idx, b, o_idx): nbs.sparse_block_dot(*a),
            f"outer[{tag}]": lambda a=(outer_o, h, g, i_idx, o_idx): nbs.sparse_block_outer(*a, 0.5),
            f"dot_grad[{tag}]": lambda a=(g, W, h, i_idx, b, o_idx): nbs.sparse_block_dot_grad(*a),
            f"softmax[{tag}]": lambda a=logits: nbs.softmax(a, axis=0),
            f"softmax_grad[{tag}]": lambda a=(logits, y): nbs.softmax_grad(*a, axis=0),
            f"h_softmax[{tag}]": lambda a=hsm: nbs.h_softmax(*a),
            f"h_softmax[target,{tag}]": lambda a=hsm: nbs.h_softmax(*a, target=target),
            f"h_softmax_grad[{tag}]": lambda a=hsm, g=g_full: nbs.h_softmax_grad(g, *a),
            f"h_softmax_grad[target,{tag}]":
                lambda a=hsm, g=g_target: nbs.h_softmax_grad(g, *a, target=target),
        })
    out.update(exact_calls())
    return out


def _exact_arrays():
    """Integer-valued float64 arguments whose every pair is one block (their own seed)."""
    rng = np.random.default_rng(99)
    return tuple(np.round(4 * a) if a.dtype.kind == "f" else a
                 for a in _repeated_pairs(rng, np.float64))


def exact_calls():
    """Accumulations of integer values on one block: exact sums, any order, any thread count."""
    W, h, i_idx, b, o_idx, g = _exact_arrays()
    return {
        "outer[exact]": lambda: nbs.sparse_block_outer(np.zeros(W.shape), h, g, i_idx, o_idx, 2.0),
        "dot_grad[exact]": lambda: nbs.sparse_block_dot_grad(g, W, h, i_idx, b, o_idx),
    }


def exact_expectations():
    """The oracle's results for :func:`exact_calls`."""
    W, h, i_idx, b, o_idx, g = _exact_arrays()
    return {
        "outer[exact]": _reference.sparse_block_outer(np.zeros(W.shape), h, g, i_idx, o_idx, 2.0),
        "dot_grad[exact]": _reference.sparse_block_dot_grad(g, W, h, i_idx, b, o_idx),
    }


def as_tuple(value):
    return tuple(value) if isinstance(value, tuple) else (value,)


def same_bits(a, b):
    return all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
               for x, y in zip(as_tuple(a), as_tuple(b), strict=True))


def serial_results(work):
    """Each call once, on one Numba thread, in this thread."""
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return {name: thunk() for name, thunk in work.items()}
    finally:
        numba.set_num_threads(previous)


def run(threads, repeats, seed=0):
    """Hammer every op from ``threads`` Python threads; return a report dict (see module doc)."""
    work = calls(seed)
    expected = serial_results(work)
    names = list(work)
    barrier = threading.Barrier(threads)
    mismatches, errors, counts = [], [], [0] * threads
    max_threads = numba.config.NUMBA_NUM_THREADS

    def worker(k):
        try:
            numba.set_num_threads(1 + k % max_threads)  # per Python thread
            barrier.wait()
            for _ in range(repeats):
                for step in range(len(names)):
                    name = names[(k + step) % len(names)]
                    if not same_bits(work[name](), expected[name]):
                        mismatches.append((k, name))
                    counts[k] += 1
        except Exception as exc:  # reported, not swallowed: the test asserts there is none
            errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "layer": numba.threading_layer(),
        "numba_threads": max_threads,
        "serialised": _threads.launches_serialised(),
        "threads": threads,
        "repeats": repeats,
        "calls": sum(counts),
        "mismatches": sorted(set(mismatches)),
        "errors": errors,
        "exact": exact_mismatches(expected),
    }


def exact_mismatches(results):
    """Names of the exact calls whose serial result differs from the oracle in any bit."""
    want = exact_expectations()
    return [name for name in want if not same_bits(results[name], want[name])]


if __name__ == "__main__":
    report = run(threads=int(sys.argv[1]), repeats=int(sys.argv[2]))
    print(json.dumps(report))
