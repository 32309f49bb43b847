"""Timing: a warm-up call (the checked one), then the median of several calls."""

import statistics
import time

# OpenBLAS threads busy-wait after each call and steal the 2 cores from whatever
# runs next; a pause between peers lets them go to sleep first.
PAUSE_S = 0.2


def time_calls(func, repeat=5, pause=PAUSE_S):
    """Seconds of ``repeat`` calls of ``func()``, after a ``pause``; the caller has warmed it up."""
    time.sleep(pause)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples


def median(samples):
    return statistics.median(samples)
