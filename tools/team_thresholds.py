"""Measure, per CPU kernel, the work from which a second thread pays: ``MIN_ITEMS_PER_THREAD``.

Runs every public op (the rows of ``nbsparse._optable``, and the inference
functions on their ``h_softmax`` problem) on problems of growing batch, in two
block shapes (the self-check's 24 x 40 blocks and 8 x 8 blocks), and times
each kernel launch on a team of one thread and of two, alternating, on an idle
machine (``NBSPARSE_ADAPT_THREADS`` is bypassed: the team is forced)::

    python tools/team_thresholds.py            # float32; add --dtype float64

For each kernel and block shape it prints, by launch size (``items``, the unit of its entry in
``nbsparse._cpu.tuning.MIN_ITEMS_PER_THREAD``), the median time on one and two
threads and their ratio, and suggests the entry: half the smallest size from
which two threads took at most ``PAYS`` of one thread's time, as at most
larger sizes measured (a team of ``items // entry`` threads then gets two threads from
there on).
"""

import argparse
import collections
import dataclasses
import statistics
import time

import numpy as np

import nbsparse
from nbsparse import _team
from nbsparse._optable import OPS, problem
from nbsparse._selfcheck import SIZES

PAYS = 0.8
MAJORITY = 0.8
# With its workers spinning, a team of two pays from a few microseconds of work; a
# worker that has gone to sleep takes 50-150 µs to wake on this machine (more when the
# hypervisor has given its core away), and a launch on two threads keeps the second
# core spinning for 5 ms after it. Below this much work one thread keeps it.
MIN_ONE_THREAD_S = 20e-6
REPEAT = 15
HSOFTMAX_MODEL = ("x", "batch_size", "n_outputs", "n_classes", "n_outputs_per_class", "W1", "b1", "W2", "b2")


def inference_calls(arrays):
    """``h_softmax_topk`` (k = 10), ``h_softmax_logprob`` (5 candidates) and ``h_softmax_sample`` on
    the problem's ``h_softmax`` model, as argument-less calls."""
    model = [arrays[name] for name in HSOFTMAX_MODEL]
    candidates = np.random.default_rng(1).integers(0, arrays["n_outputs"], (arrays["batch_size"], 5))
    k = min(10, arrays["n_outputs"])
    return [lambda: nbsparse.h_softmax_topk(*model, k),
            lambda: nbsparse.h_softmax_logprob(*model, candidates),
            lambda: nbsparse.h_softmax_sample(*model, seed=0)]


def op_calls(arrays):
    """Every public op's call on ``arrays``, as argument-less calls."""
    return [lambda op=op: op.func(**op.kwargs(arrays)) for op in OPS] + inference_calls(arrays)
BATCHES = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SHAPES = {
    "self-check blocks": SIZES,
    "8 x 8 blocks": dataclasses.replace(SIZES, i_blocks=128, o_blocks=128, i_size=8, o_size=8, i_win=8, o_win=8),
}


def measure(dtype, print=print):
    """``{kernel: {items: (one-thread seconds, two-thread seconds)}}`` (medians)."""
    samples = collections.defaultdict(lambda: collections.defaultdict(lambda: ([], [])))
    forced = [1]
    run = _team.run

    def timed_run(kernel, args, items, min_items_per_thread):  # the kernel alone: not the setting of the thread count
        get_threads, set_threads = _team.thread_count_functions()
        callers = get_threads()
        set_threads(forced[0])
        try:
            start = time.perf_counter()
            result = kernel(*args)
            elapsed = time.perf_counter() - start
        finally:
            set_threads(callers)
        samples[(kernel.__name__, shape_name)][items][forced[0] - 1].append(elapsed)
        return result

    _team.run = timed_run
    try:
        for shape_name, base in SHAPES.items():
            for batch in BATCHES:
                sizes = dataclasses.replace(base, batch=batch)
                arrays = problem(sizes, dtype, np.random.default_rng(0))
                for call in op_calls(arrays):
                    for threads in (1, 2):  # warm-up (compile) on both team sizes
                        forced[0] = threads
                        call()
                    for _ in range(REPEAT):
                        for threads in (1, 2):
                            forced[0] = threads
                            call()
                print(f"  {shape_name}, batch {batch}: done", flush=True)
    finally:
        _team.run = run
    return {k: {n: (statistics.median(t1), statistics.median(t2)) for n, (t1, t2) in sorted(by.items())
                if t1 and t2}
            for k, by in samples.items()}


def suggest(by_items):
    """Half the smallest ``items`` at which one thread took at least ``MIN_ONE_THREAD_S`` and
    two threads at most ``PAYS`` of its time, as at ``MAJORITY`` of the larger sizes (single
    timings are noisy)."""
    sizes = sorted(by_items)
    pays = [by_items[s][1] <= PAYS * by_items[s][0] and by_items[s][0] >= MIN_ONE_THREAD_S for s in sizes]
    for n, items in enumerate(sizes):
        if pays[n] and sum(pays[n:]) >= MAJORITY * (len(sizes) - n):
            return max(1, items // 2)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args()
    import numba

    if numba.get_num_threads() < 2:
        raise SystemExit("needs at least 2 Numba threads")
    results = measure(np.dtype(args.dtype))
    entries = {}
    for (kernel, shape), by_items in sorted(results.items()):
        entry = suggest(by_items)
        if entry is not None:
            entries[kernel] = min(entries.get(kernel, entry), entry)
        print(f"\n{kernel} ({shape}): suggested MIN_ITEMS_PER_THREAD {entry}")
        print(f"  {'items':>12s} {'1 thread':>10s} {'2 threads':>10s} {'ratio':>6s}")
        for items, (t1, t2) in by_items.items():
            print(f"  {items:12d} {t1 * 1e6:8.1f}us {t2 * 1e6:8.1f}us {t2 / t1:6.2f}")
    print("\nMIN_ITEMS_PER_THREAD (the smaller over the block shapes):")
    for kernel, entry in sorted(entries.items()):
        print(f"    {kernel!r}: {entry},")


if __name__ == "__main__":
    main()
