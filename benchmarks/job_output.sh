# Sourced by reference_runs.sh and gpu_runs.sh: the results file a job line writes, so that CPU and
# GPU runs of the same job carry the same name. Usage: job_output ROOT EDITOR DATASET SCALE "EXTRA OPTIONS"
# --mode sequential --batch-size N -> seq-bN; --hparam k=v -> k-v. Pure throughput knobs leave no
# mark: --eval-batch-size, and --hparam v_edits_per_batch=N / fit_batch_size=N (MEMIT/AlphaEdit
# values and MeG neurons fitted together; each edit keeps its own optimiser state, kebench.optim,
# so grouping changes only floating-point rounding; the same list as kebench.compare.THROUGHPUT_HPARAMS).
# The results file still records them.
job_output() {
  local root="$1" editor="$2" dataset="$3" scale="$4" extra="$5" tag
  tag=$(echo "$extra" | sed -E 's/--hparam (v_edits_per_batch|fit_batch_size)=[0-9]+//g; s/--mode sequential --batch-size ([0-9]+)/seq-b\1/; s/--hparam ([A-Za-z0-9_]+)=([^ ]+)/\1-\2/g; s/--eval-batch-size [0-9]+//; s/^ +| +$//g; s/ +/_/g')
  echo "$root/${dataset}/${editor}-n${scale}${tag:+-$tag}.json"
}
