#!/usr/bin/env bash
# Worker scaling of the model stages (issue 18): in a workspace where `uv run dvc repro` is current, remove the
# outputs of a few model stages, rerun them with `dvc repro --no-run-cache` (the engine submits the stale ones
# together) under GENBENCH_WORKERS=1 and =2, alternating, and print each whole-process wall time. Each run
# includes its cluster's start (an idle cluster exits after 120 s, and the other run takes longer than that).
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
    local t0 t1; t0=$(date +%s.%N)
    GENBENCH_WORKERS=$1 uv run dvc repro --no-run-cache "${targets[@]}" > "/tmp/worker_scaling_$1_$2.log" 2>&1
    t1=$(date +%s.%N); printf 'workers=%s %s %.1f s\n' "$1" "$2" "$(echo "$t1 - $t0" | bc)"
}
run 1 warm-up; run 2 warm-up
for i in $(seq "$rounds"); do run 1 "run$i"; run 2 "run$i"; done
