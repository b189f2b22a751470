"""The one timing rule of the peer scripts: one warm-up call, then the median of `repeats`
wall-clock runs, in milliseconds (the same rule as `sst bench`)."""
import statistics
import time


def median_ms(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
