#!/usr/bin/env bash
# Times sst and its peers (NumPy, JAX, and PyTorch when it is installed) on the same workloads
# in one run and prints the ratios. Optional: never part of CI. Installs the peers into
# bench/peers/.venv on first use.
#   bash bench/peers/run.sh            # numpy + jax
#   PEERS_TORCH=1 bash bench/peers/run.sh   # also install torch (large download)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet numpy scipy "jax[cpu]"
fi
if [ "${PEERS_TORCH:-0}" = 1 ] && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    "$venv/bin/pip" install --quiet torch
fi
(cd "$root" && cargo build --release --quiet)
threads="${PEERS_THREADS:-1}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=$threads"
"$root/target/release/sst" bench --json > "$here/.sst.json"
"$venv/bin/python" "$here/peers.py" "$here/.sst.json"
