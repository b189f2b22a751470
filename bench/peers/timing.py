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


def alternating_medians_ms(fns, repeats):
    """The same rule for several functions of one workload ({name: f}), their runs interleaved
    (one run of each per round) so that a slow stretch of the machine hits them all alike.
    Returns {name: median ms}."""
    for f in fns.values():
        f()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            start = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}
