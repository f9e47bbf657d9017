#!/usr/bin/env bash
# Reproduce the published results in results/: each job is `kebench run` with --resume, so the
# script can be interrupted and started again. Usage: bash benchmarks/reference_runs.sh [JOBFILE]
# A job line: <editor> <dataset> <scale> [extra kebench run options...]
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/job_output.sh
source benchmarks/job_output.sh
jobs_file="${1:-benchmarks/reference_jobs.txt}"
while read -r editor dataset scale extra; do
  [[ -z "$editor" || "$editor" == \#* ]] && continue
  out=$(job_output "results/smollm2-135m" "$editor" "$dataset" "$scale" "$extra")
  measured_today "$out" && { echo "done: $out"; continue; }
  echo "$(date -u +%H:%M:%S) start: $out"
  # shellcheck disable=SC2086
  kebench run --editor "$editor" --dataset "$dataset" --scale "$scale" --out "$out" --resume $extra \
    || echo "FAILED: $out"
done < "$jobs_file"
