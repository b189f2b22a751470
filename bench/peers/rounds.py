"""Runs `run.sh` (sst, then its peers) several rounds in a row and summarizes each workload over
the rounds, so that a drift of the machine's load between the sst run and the peers' run of one
round (±20-30 % within minutes on a shared machine) does not decide a comparison:

    python3 bench/peers/rounds.py ROUNDS [ONLY]   # ONLY: PEERS_ONLY's filter (default: all)

For sst and every peer it prints the best of the per-round medians, the ratio sst / fastest
peer of those bests, and the median and range of the per-round ratios sst / fastest peer of that
round. The environment is run.sh's (PEERS_TORCH=1 is set here; PEERS_THREADS, PEERS_REPEATS are
passed on).
"""
import collections
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = {"numpy": 2, "scipy": 4, "jax": 6, "torch": 8}  # field of each peer's ms in a row


def one_round(only):
    """`{workload: {"sst": ms, peer: ms, ...}}` of one run.sh, from its table."""
    env = dict(os.environ, PEERS_TORCH=os.environ.get("PEERS_TORCH", "1"), PEERS_ONLY=only)
    out = subprocess.run(["bash", os.path.join(HERE, "run.sh")], env=env, check=True,
                         capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 12 or f[0] == "workload" or f[1] == "-":
            continue
        row = {"sst": float(f[1])}
        row.update({p: float(f[c]) for p, c in COLUMNS.items() if f[c] != "-"})
        rows[f[0]] = row
    return rows


def main():
    rounds = int(sys.argv[1])
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    seen = collections.defaultdict(list)
    for _ in range(rounds):
        for workload, row in one_round(only).items():
            seen[workload].append(row)
    print(f"{'workload':<43} {'sst best':>9}  peers' best  sst/best-peer  per-round sst/best: median [range]")
    for workload, rows in seen.items():
        sst = min(r["sst"] for r in rows)
        peers = {p: min(r[p] for r in rows) for p in COLUMNS if p in rows[0]}
        if not peers:
            print(f"{workload:<43} {sst:>9.3f}")
            continue
        best = min(peers, key=peers.get)
        ratios = [r["sst"] / min(r[p] for p in peers) for r in rows]
        listed = " ".join(f"{p} {ms:.3f}" for p, ms in peers.items())
        print(f"{workload:<43} {sst:>9.3f}  {listed}  {sst / peers[best]:.2f} ({best})  "
              f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]")


if __name__ == "__main__":
    main()
