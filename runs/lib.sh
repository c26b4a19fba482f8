# runs/lib.sh: helpers the recipes source (not a recipe itself).
#
# Every command of a recipe goes through `run` (or `run_bg`, `submit`), so `--dry-run` / DRY_RUN=1
# prints the whole command graph, one shell line per command, and runs nothing. The printed lines
# are quoted like Python's shlex.quote, so they can be copied into a shell or parsed by a test.

if [[ ! -f runs/lib.sh ]]; then
  echo "$(basename "$0"): run the recipes from the lt repository root (bash runs/$(basename "$0"))" >&2
  exit 2
fi
DRY_RUN=${DRY_RUN:-0}
for _arg in "$@"; do
  case "$_arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//' | grep -v '^set -euo'; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument $_arg (only --dry-run)" >&2; exit 2 ;;
  esac
done
unset _arg

# q WORD...: the words as one shell line, each quoted only when it needs it. A word made of safe
# characters and $ (a variable meant for the job's shell, like $SLURM_ARRAY_TASK_ID or $JOB_warm)
# is double-quoted so that it still expands when the line is pasted into a shell.
q() {
  local out=() w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$w")
    elif [[ $w =~ ^[A-Za-z0-9_@%+=:,./\$-]+$ ]]; then
      out+=("\"$w\"")
    else
      out+=("'${w//\'/\'\"\'\"\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}

# run CMD...: run a command (echoed to stderr), or print it under --dry-run.
run() {
  if (( DRY_RUN )); then q "$@"; return 0; fi
  echo "+ $(q "$@")" >&2
  "$@"
}

# run_bg CMD...: start a command in the background (collect with wait_all).
_BG_PIDS=()
run_bg() {
  if (( DRY_RUN )); then echo "$(q "$@") &"; return 0; fi
  echo "+ $(q "$@") &" >&2
  "$@" &
  _BG_PIDS+=("$!")
}

# wait_all: wait for every run_bg command; fail if any of them failed.
wait_all() {
  if (( DRY_RUN )); then echo "wait"; return 0; fi
  local pid failed=0
  for pid in "${_BG_PIDS[@]}"; do wait "$pid" || failed=1; done
  _BG_PIDS=()
  if (( failed )); then echo "a background job failed (see its log)" >&2; return 1; fi
}

# submit NAME DEPENDENCIES SBATCH_OPTION... -- COMMAND: sbatch a job running COMMAND (one string,
# expanded by the job's shell, so $SLURM_ARRAY_TASK_ID works) after the jobs named in
# DEPENDENCIES (space-separated NAMEs, "" for none) succeeded. Sets JOB_<NAME> to the job id;
# under --dry-run to the literal "$JOB_<NAME>", so the printed graph shows the dependencies by name.
submit() {
  local name=$1 deps=$2; shift 2
  local opts=()
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  local cmd=$1 dep_ids=() d var
  for d in $deps; do var="JOB_${d//-/_}"; dep_ids+=("${!var}"); done
  local log="$LOGS/$name-%j.log"
  if [[ " ${opts[*]} " == *" --array="* ]]; then log="$LOGS/$name-%A_%a.log"; fi
  local args=(sbatch --parsable --job-name="lt-$name" --output="$log")
  if (( ${#dep_ids[@]} )); then args+=(--dependency="afterok:$(IFS=:; echo "${dep_ids[*]}")" --kill-on-invalid-dep=yes); fi
  args+=(${SBATCH_ARGS:-} "${opts[@]}" --wrap="$cmd")
  var="JOB_${name//-/_}"
  if (( DRY_RUN )); then
    echo "$var=\$($(q "${args[@]}"))"
    printf -v "$var" '%s' "\$$var"
    return 0
  fi
  mkdir -p "$LOGS"
  local id
  id=$("${args[@]}") || { echo "sbatch failed for $name" >&2; return 1; }
  id=${id%%;*}
  printf -v "$var" '%s' "$id"
  echo "submitted $name as job $id" >&2
}
