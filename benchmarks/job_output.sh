# Sourced by reference_runs.sh and gpu_runs.sh: the results file a job line writes, so that CPU and
# GPU runs of the same job carry the same name. Usage: job_output ROOT EDITOR DATASET SCALE "EXTRA OPTIONS"
# --mode sequential --batch-size N -> seq-bN; --hparam k=v -> k-v; --filter known -> known. --eval-at adds
# evaluations between steps but leaves the final numbers as they are: no mark. Pure throughput knobs leave no
# mark: --eval-batch-size, and the --hparam names in kebench.results.THROUGHPUT_HPARAMS (edits fitted
# together; each keeps its own optimiser state, so grouping changes only floating-point rounding).
# The results file still records them.
_throughput_hparams=$(python3 -c 'from kebench.results import THROUGHPUT_HPARAMS as t; print("|".join(sorted(t)))') \
  || { echo "job_output.sh: cannot import kebench; install it first (pip install -e .)" >&2; return 1; }
job_output() {
  local root="$1" editor="$2" dataset="$3" scale="$4" extra="$5" tag
  tag=$(echo "$extra" | sed -E "s/--hparam (${_throughput_hparams})=[0-9]+//g; s/--mode sequential --batch-size ([0-9]+)/seq-b\1/; s/--filter ([a-z]+)/\1/; s/--eval-at [^ ]+//; s/--hparam ([A-Za-z0-9_]+)=([^ ]+)/\1-\2/g; s/--eval-batch-size [0-9]+//; s/^ +| +$//g; s/ +/_/g")
  echo "$root/${dataset}/${editor}-n${scale}${tag:+-$tag}.json"
}

# True when results file $1 exists and was measured under today's protocols (general ability is part of every
# run since issue #23): the job is done. An older file is re-run in place (--resume; replaced at the end).
measured_today() {
  [[ -f "$1" ]] && python3 -c 'import json,sys; sys.exit(0 if "general" in json.load(open(sys.argv[1]))["metrics"] else 1)' "$1"
}
