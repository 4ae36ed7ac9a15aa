#!/usr/bin/env bash
# Worker scaling of the model stages (issue 18): in a workspace where `uv run dvc repro` is current, remove the
# outputs of a few model stages, rerun them with `dvc repro --no-run-cache` (the engine submits the stale ones
# together) under GENBENCH_WORKERS=1 and =2, alternating, and print each whole-process wall time (a run may
# find its cluster still up from the run before last, which exits after 120 s idle; the warm-ups start both).
#
#   bash benchmarks/worker_scaling.sh [dataset] [rounds] [model ...]      # default: digits 2 gmm dbn hmm rbm
#
# Afterwards `uv run dvc repro` brings the summaries, compare and report up to date (the costs changed).
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:-digits}; rounds=${2:-2}; shift $(( $# < 2 ? $# : 2 ))
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(gmm dbn hmm rbm)
targets=(); for m in "${models[@]}"; do targets+=("pipelines/$dataset/dvc.yaml:$m"); done
run() {
    for m in "${models[@]}"; do rm -rf "results/$dataset/$m/model" "results/$dataset/$m/raw" "results/$dataset/$m/samples"; done
    local start=$EPOCHREALTIME
    GENBENCH_WORKERS=$1 uv run dvc repro --no-run-cache "${targets[@]}" > "/tmp/worker_scaling_$1_$2.log" 2>&1 ||
        { echo "dvc repro failed under $1 worker(s): see /tmp/worker_scaling_$1_$2.log" >&2; exit 1; }
    awk -v w="$1" -v tag="$2" -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "workers=%s %s %.1f s\n", w, tag, e - s }'
}
run 1 warm-up; run 2 warm-up
for i in $(seq "$rounds"); do run 1 "run$i"; run 2 "run$i"; done
