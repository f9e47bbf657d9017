#!/usr/bin/env bash
# Reference runs on a CUDA device, within a wall-clock budget.
# Usage: bash benchmarks/gpu_runs.sh JOBFILE OUTDIR [SECONDS]
# JOBFILE lines as in reference_jobs.txt (<editor> <dataset> <scale> [options]). Each job runs
# `kebench run --device cuda --resume` into results/smollm2-135m-cuda/<dataset>/; jobs that would
# start with under a minute of the budget left are skipped, a job that outruns it is stopped (its
# checkpoint stays resumable). After each job OUTDIR/results.tar.gz holds every finished file.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/job_output.sh
source benchmarks/job_output.sh
[[ $# -ge 2 && -f "$1" ]] || { echo "usage: bash benchmarks/gpu_runs.sh JOBFILE OUTDIR [SECONDS] (JOBFILE must exist)" >&2; exit 2; }
jobs_file="$1"; out_dir="$2"; budget="${3:-3600}"
deadline=$(( $(date +%s) + budget ))
results="results/smollm2-135m-cuda"
mkdir -p "$results" "$out_dir"
while read -r editor dataset scale extra; do
  [[ -z "$editor" || "$editor" == \#* ]] && continue
  out=$(job_output "$results" "$editor" "$dataset" "$scale" "$extra")
  measured_today "$out" && { echo "done: $out"; continue; }
  left=$(( deadline - $(date +%s) ))
  (( left < 60 )) && { echo "skipped (budget): $out"; continue; }
  echo "$(date -u +%H:%M:%S) start: $out (${left}s left)"
  # shellcheck disable=SC2086
  timeout --signal=INT --kill-after=20 "$left" python3 -m kebench run --editor "$editor" --dataset "$dataset" \
    --scale "$scale" --out "$out" --resume --device cuda $extra || echo "FAILED or stopped: $out"
  tar czf "$out_dir/results.tar.gz" --exclude="*.ckpt" "$results"  # finished files only: a checkpoint can be large
done < "$jobs_file"
