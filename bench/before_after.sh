#!/usr/bin/env bash
# Every criterion benchmark of benches/ at two revisions, alternated, on one core:
#   bench/before_after.sh OLD_REV NEW_REV [ROUNDS]
# Builds each revision's bench binaries in its own git worktree and target dir (under one temp
# dir), then runs ROUNDS (3) rounds of old-then-new, each binary pinned to core 0
# (`taskset -c 0`, warm-up 1 s, measurement 3 s), and prints a markdown table: each benchmark's
# median over the rounds of criterion's point estimate, old and new, and new / old (above 1.10
# means more than 10 % slower). BENCH_FILTER (a criterion filter regex) runs only the matching
# benchmarks. Both builds use one codegen unit (CARGO_PROFILE_BENCH_CODEGEN_UNITS=1, whatever
# the revision's Cargo.toml says): with the default 16, code placement alone moved unchanged
# kernels by up to 1.6× between builds. Not part of CI: two cold builds and 25–45 minutes of runs
# for everything.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/before_after.sh OLD_REV NEW_REV [ROUNDS]" >&2; exit 2; }
old=$1 new=$2 rounds=${3:-3}
root=$(git rev-parse --show-toplevel)
dir=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$dir/old" 2>/dev/null || true;
      git -C "$root" worktree remove --force "$dir/new" 2>/dev/null || true; rm -rf "$dir"' EXIT

build() { # build NAME REV: the bench binaries of REV, listed in $dir/NAME.bins
    git -C "$root" worktree add --detach "$dir/$1" "$2" >/dev/null 2>&1
    (cd "$dir/$1" && CARGO_TARGET_DIR="$dir/$1-target" CARGO_PROFILE_BENCH_CODEGEN_UNITS=1 \
        cargo bench --no-run --message-format=json 2>/dev/null) |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and "bench" in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])' > "$dir/$1.bins"
}
echo "building $old and $new ..." >&2
build old "$old"
build new "$new"

for round in $(seq "$rounds"); do
    for which in old new; do
        while read -r bin; do
            taskset -c 0 "$bin" --bench --warm-up-time 1 --measurement-time 3 --noplot \
                ${BENCH_FILTER:+"$BENCH_FILTER"} >> "$dir/$which.$round.txt" 2>/dev/null
        done < "$dir/$which.bins"
        echo "round $round $which done" >&2
    done
done

python3 - "$dir" "$rounds" "$old" "$new" <<'PY'
import re, statistics, sys
d, rounds, old, new = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
unit = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
def parse(path):
    """Criterion's point estimates by benchmark: a name line (or the text before `time:`)
    followed by `time: [low unit estimate unit high unit]`."""
    times, name = {}, None
    skip = ("Found", "Warning", "Benchmarking", "Gnuplot", "Performance", "No change", "Change")
    for line in open(path):
        head = line.split("time:")[0].strip()
        if head and not line.startswith(" ") and not head.startswith(skip):
            name = head
        t = re.search(r"time:\s*\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if t and name:
            times[name] = float(t.group(1)) * unit[t.group(2)]
    return times
runs = {w: [parse(f"{d}/{w}.{r}.txt") for r in range(1, rounds + 1)] for w in ("old", "new")}
names = [n for n in runs["old"][0] if all(n in r for w in runs for r in runs[w])]
print(f"| benchmark | {old} (ms) | {new} (ms) | new / old |")
print("| --- | ---: | ---: | ---: |")
worst = 0.0
for n in names:
    o = statistics.median(r[n] for r in runs["old"])
    w = statistics.median(r[n] for r in runs["new"])
    worst = max(worst, w / o)
    print(f"| {n} | {o:.4g} | {w:.4g} | {w / o:.2f} |")
print(f"\nslowest ratio: {worst:.2f} over {len(names)} benchmarks, median of {rounds} alternated rounds")
PY
