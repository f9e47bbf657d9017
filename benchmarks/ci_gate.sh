#!/usr/bin/env bash
# The CI regression gate: re-run results/ci/jobs.txt and compare with the committed reference.
#   bash benchmarks/ci_gate.sh            -> runs into runs/ci, then `kebench report` (exit 1 on regression)
#   bash benchmarks/ci_gate.sh --update   -> rewrite the reference results in results/ci
# Tolerance: an absolute drop of 0.05 (5 points) in any headline metric. The runs are seeded and
# deterministic on one machine; the margin absorbs float differences between CPUs, which can flip
# a case or two at these small scales (1 of 50 cases = 2 points).
set -euo pipefail
cd "$(dirname "$0")/.."
TOLERANCE=0.05
dest=runs/ci
[[ "${1:-}" == "--update" ]] && dest=results/ci
while read -r editor dataset scale extra; do
  [[ -z "$editor" || "$editor" == \#* ]] && continue
  # shellcheck disable=SC2086
  kebench run --editor "$editor" --dataset "$dataset" --scale "$scale" --seed 0 --quiet --overwrite \
    --out "$dest/${dataset}-${editor}-n${scale}.json" $extra
done < results/ci/jobs.txt
if [[ "$dest" == runs/ci ]]; then
  kebench report --baseline results/ci --candidate runs/ci --tolerance "$TOLERANCE" --out runs/ci/report.md
fi
