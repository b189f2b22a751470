#!/usr/bin/env bash
# Sinkhorn at low temperature through `sst eval`, two builds side by side on one core:
#   bench/sinkhorn_low_temperature.sh OLD_SST NEW_SST
# One soft request of permutation(n), default sinkhorn(iters = 1000, tol = 1e-9), θ uniform in
# [-2, 2] (Python's random.seed(2)), Gumbel noise seed 1; prints wall seconds and
# [iterations, final residual, warned or ok] per build, alternated. Not part of CI.
set -euo pipefail
old=$1 new=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" <<'PY'
import json, random, sys
random.seed(2)
for n in (100, 300, 1000):
    theta = [[random.uniform(-2, 2) for _ in range(n)] for _ in range(n)]
    for t in (1, 0.1, 0.01):
        request = {"theta": theta, "mode": "soft", "temperature": t, "noise": {"seed": 1}}
        json.dump(request, open(f"{sys.argv[1]}/perm{n}_{t}.json", "w"))
PY
summary='import json,sys; r=json.load(sys.stdin); d=r["diagnostics"]; print(d["sinkhorn_iterations"], "%.1e" % d["sinkhorn_residual"], "warn" if r["warnings"] else "ok")'
for n in 100 300 1000; do
  printf 'layer l: permutation(%s)\n' "$n" > "$dir/p$n.sst"
  for t in 1 0.1 0.01; do
    for which in new old; do
      bin=$new; [ "$which" = old ] && bin=$old
      start=$(date +%s.%N)
      out=$(timeout 600 taskset -c 0 "$bin" eval "$dir/p$n.sst" < "$dir/perm${n}_$t.json" | python3 -c "$summary" || echo "stopped")
      end=$(date +%s.%N)
      echo "n=$n T=$t $which: $(echo "$end - $start" | bc) s [$out]"
    done
  done
done
