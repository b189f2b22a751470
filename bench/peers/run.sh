#!/usr/bin/env bash
# Times sst and its peers (NumPy, JAX, and PyTorch when it is installed) on the same workloads
# in one run and prints the ratios sst / peer (> 1: sst is slower). Optional: never part of CI.
# Installs the peers into bench/peers/.venv on first use.
#   bash bench/peers/run.sh                  # numpy + jax, one thread, pinned to core 0
#   PEERS_THREADS=4 bash bench/peers/run.sh  # 4 threads each, pinned to cores 0-3
#   PEERS_REPEATS=5 bash bench/peers/run.sh  # timed runs per workload (default 15)
#   PEERS_TORCH=1 bash bench/peers/run.sh    # also install torch (large download)
#   PEERS_ONLY=arborescence bash bench/peers/run.sh  # only the workloads whose name has this
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet numpy scipy "jax[cpu]" networkx ott-jax
fi
if [ "${PEERS_TORCH:-0}" = 1 ] && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    "$venv/bin/pip" install --quiet torch
fi
(cd "$root" && cargo build --release --quiet)

threads="${PEERS_THREADS:-1}"
repeats="${PEERS_REPEATS:-15}"
export PEERS_THREADS="$threads" PEERS_REPEATS="$repeats"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
# XLA has no flag for its thread count (`intra_op_parallelism_threads` is not one): taskset
# below confines it, like sst and the other peers. One thread: no multi-threaded Eigen either.
if [ "$threads" = 1 ]; then
    export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false"
fi
# sst and every peer on the same cores: core 0 alone for one thread, else cores 0..threads-1.
cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # plain nproc obeys OMP_NUM_THREADS
pin=()
if command -v taskset >/dev/null && [ "$threads" -le "$cpus" ]; then
    if [ "$threads" = 1 ]; then pin=(taskset -c 0); else pin=(taskset -c "0-$((threads - 1))"); fi
else
    echo "run.sh: not pinned (no taskset, or PEERS_THREADS=$threads > $cpus CPUs)" >&2
fi
${pin[@]+"${pin[@]}"} "$root/target/release/sst" bench --json --threads "$threads" --repeats "$repeats" \
    --only "${PEERS_ONLY:-}" > "$here/.sst.json"
${pin[@]+"${pin[@]}"} "$venv/bin/python" "$here/peers.py" "$here/.sst.json"
