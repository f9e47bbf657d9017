# Sourced by reference_runs.sh and gpu_runs.sh: the results file a job line writes, so that CPU and
# GPU runs of the same job carry the same name. Usage: job_output ROOT EDITOR DATASET SCALE "EXTRA OPTIONS"
# --mode sequential --batch-size N -> seq-bN; --hparam k=v -> k-v; --eval-batch-size (no effect on
# the metrics' meaning) leaves no mark.
job_output() {
  local root="$1" editor="$2" dataset="$3" scale="$4" extra="$5" tag
  tag=$(echo "$extra" | sed -E 's/--mode sequential --batch-size ([0-9]+)/seq-b\1/; s/--hparam ([a-z_]+)=([^ ]+)/\1-\2/g; s/--eval-batch-size [0-9]+//; s/^ +| +$//g; s/ +/_/g')
  echo "$root/${dataset}/${editor}-n${scale}${tag:+-$tag}.json"
}
