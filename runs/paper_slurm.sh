#!/usr/bin/env bash
# The paper's BoLT runs (Ruan et al. 2025) on a Slurm cluster: the whole graph submitted at once.
#
#   bash runs/paper_slurm.sh --dry-run    # print every sbatch line (the graph in runs/README.md)
#   SBATCH_ARGS="--partition gpu --account myproj" bash runs/paper_slurm.sh
#
# Same stages and settings as runs/paper_single_node.sh (read that one first), spread over jobs
# that wait for each other with --dependency=afterok (a failure cancels everything downstream,
# --kill-on-invalid-dep=yes):
#
#   prep ──> synth[0..19] ──> synth-merge ──> warm ──> estep-1[0..199] ──> merge-1 ──> select-1 ──> train-1 ──> estep-2 ...
#     │                                        └──> eval-warm                                      └──> eval-1
#     └──> raw-token ──> eval-raw-token,  raw-flops ──> eval-raw-flops
#
# * synth, estep-T: array jobs; task I runs `--shard I/N` (N = SYNTH_SHARDS, E_SHARDS) and writes
#   its own file with a completion marker. The paper ran the E-step as 200 one-GPU jobs.
# * merge-T: `lt merge` refuses a missing or half-written shard, and interleaves the shards back
#   into the unsharded record order; select-T then resamples one latent per chunk.
# * warm, train-T, raw-*: `srun` starts one torchrun per node (c10d rendezvous on the first node),
#   torchrun starts GPUS_PER_NODE workers (FSDP2). TRAIN_NODES=4 trains on 32 GPUs with the same
#   global batch (lt keeps batch 192 whatever the world size).
# Every job is resumable: resubmitting the script after a failure redoes only unfinished work
# (outputs are atomic, sampling keeps .partial progress and a sample cache, train resumes from
# its last checkpoint; use --time limits that fit your partition and resubmit).
#
# Expected cost: the same GPU-hours as the single node (runs/cost.py, assumptions there):
#   warm start 5.6 + 3 x (E-step 302.7 + M-step 90.3) + raw baselines 116.9 + eval 0.7
#   = 1,302 GPU-hours. Wall clock per iteration with 200 E-step GPUs and one 8-GPU training node:
#   E-step 302.7 / 200 = 1.5 h (plus queueing), M-step 90.3 / 8 = 11.3 h; about 40 h for the three
#   iterations, with the baselines running alongside.
#
# Settings (environment variables, defaults in brackets): as runs/paper_single_node.sh, plus
#   TRIALS [1]: extra seeds 43, 44 as separate jobs (the paper ran 3)
#   E_SHARDS [200]  SYNTH_SHARDS [20]  TRAIN_NODES [1]  GPUS_PER_NODE [8]  LOGS [$OUT/logs]
#   SBATCH_ARGS: options added to every sbatch (partition, account, qos, --time)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh" "$@"

FINEMATH=${FINEMATH:-finemath-4plus}
DATA=${DATA:-data/finemath}
OUT=${OUT:-lt-runs/paper}
LOGS=${LOGS:-$OUT/logs}
BASE_MODEL=${BASE_MODEL:-TinyLlama/TinyLlama_v1.1}
TEACHER=${TEACHER:-gpt-4o-mini-2024-07-18}
K=${K:-4}
ITERS=${ITERS:-3}
TRIALS=${TRIALS:-1}
E_SHARDS=${E_SHARDS:-200}
SYNTH_SHARDS=${SYNTH_SHARDS:-20}
TRAIN_NODES=${TRAIN_NODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
REFERENCE_QUIRKS=${REFERENCE_QUIRKS:-1}
QUIRKS=()
if (( REFERENCE_QUIRKS )); then QUIRKS=(--reference-quirks); fi
TASK='$SLURM_ARRAY_TASK_ID'

# One torchrun per node under srun; the rendezvous host is the allocation's first node.
TORCHRUN='srun --ntasks-per-node=1 torchrun --nnodes "$SLURM_JOB_NUM_NODES" --nproc_per_node '"$GPUS_PER_NODE"' --rdzv_backend c10d --rdzv_endpoint "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):29500" --rdzv_id "$SLURM_JOB_ID" -m lt_cli'
TRAIN_JOB=(--nodes="$TRAIN_NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS_PER_NODE" --cpus-per-task=32 --time=24:00:00)
TRAIN_COMMON=(--seq-len 2048 --lr 1e-4 --strategy fsdp)
GPU_JOB=(--gpus-per-node=1 --cpus-per-task=8 --time=04:00:00)

train_job() {  # train_job NAME DEPENDENCIES LT-TRAIN-ARGS...
  local name=$1 deps=$2; shift 2
  submit "$name" "$deps" "${TRAIN_JOB[@]}" -- "$TORCHRUN $(q train --model "$BASE_MODEL" "${TRAIN_COMMON[@]}" "$@")"
}
eval_job() {  # eval_job NAME DEPENDENCY MODEL VARIANT
  local cmds=() task
  for task in math gsm8k; do
    cmds+=("$(q lt eval --model "$3" --task "$task" --variant "$4" --backend vllm -o "$3/eval.$task.json" --log-samples "$3/eval.$task.samples.jsonl")")
  done
  submit "$1" "$2" "${GPU_JOB[@]}" -- "${cmds[0]} && ${cmds[1]}"
}

run mkdir -p "$LOGS"  # sbatch needs the folder of --output to exist

# ---------------------------------------------------------------- 0. data (CPU)
submit prep "" --cpus-per-task=4 --mem=64G --time=12:00:00 -- \
  "$(q python runs/prepare_finemath.py --input "$FINEMATH" --out "$DATA" --shuffle-seed 42)"

# ---------------------------------------------------------------- 1. teacher thoughts (API, CPU)
submit synth prep --array=0-$((SYNTH_SHARDS - 1)) --cpus-per-task=2 --time=48:00:00 -- \
  "$(q lt synthesize --backend api --batch --model "$TEACHER" --shard "$TASK/$SYNTH_SHARDS" "$DATA/warmstart.jsonl" -o "$OUT/teacher/warmstart.$TASK.jsonl")"
submit synth-merge synth --cpus-per-task=2 --time=02:00:00 -- \
  "$(q lt merge --num-shards "$SYNTH_SHARDS" -o "$OUT/teacher/warmstart.jsonl" "$OUT/teacher/warmstart.{i}.jsonl")"

# ---------------------------------------------------------------- 2. warm start
train_job warm synth-merge --data "$OUT/teacher/warmstart.jsonl" --layout random --batch-size 96 --tokens 0.8e9 \
  --save-every 1000 --seed 42 --output "$OUT/warm/trial0"
eval_job eval-warm warm "$OUT/warm/trial0" latent
for (( trial = 1; trial < TRIALS; trial++ )); do  # extra seeds: reported, not used by the E-step
  train_job "warm-trial$trial" synth-merge --data "$OUT/teacher/warmstart.jsonl" --layout random --batch-size 96 --tokens 0.8e9 \
    --save-every 1000 --seed $((42 + trial)) --output "$OUT/warm/trial$trial"
  eval_job "eval-warm-trial$trial" "warm-trial$trial" "$OUT/warm/trial$trial" latent
done

# ---------------------------------------------------------------- 3. BoLT iterations
model="$OUT/warm/trial0"
after=warm
for (( t = 1; t <= ITERS; t++ )); do
  it="$OUT/iter$t"
  # iteration t samples and selects with seed 42 + t, as lt bootstrap does (runs/paper/bolt.toml)
  submit "estep-$t" "$after" --array=0-$((E_SHARDS - 1)) "${GPU_JOB[@]}" -- \
    "$(q lt sample-thoughts --model "$model" --backend vllm --k "$K" --max-new-tokens 1024 --prefix-chunks 3 --max-model-len 2048 \
      ${QUIRKS[@]+"${QUIRKS[@]}"} --seed $((42 + t)) --shard "$TASK/$E_SHARDS" "$DATA/bootstrap.jsonl" -o "$it/candidates.$TASK.jsonl")"
  submit "merge-$t" "estep-$t" --cpus-per-task=2 --time=04:00:00 -- \
    "$(q lt merge --num-shards "$E_SHARDS" -o "$it/candidates.jsonl" "$it/candidates.{i}.jsonl")"
  submit "select-$t" "merge-$t" --cpus-per-task=2 --time=04:00:00 -- \
    "$(q lt select "$it/candidates.jsonl" -o "$it/augmented.jsonl" --seed $((42 + t)))"
  train_job "train-$t" "select-$t" --data "$it/augmented.jsonl" --layout random --batch-size 192 --tokens 13e9 \
    --save-every 1000 --seed 42 --output "$it/trial0"
  eval_job "eval-$t" "train-$t" "$it/trial0" latent
  for (( trial = 1; trial < TRIALS; trial++ )); do
    train_job "train-$t-trial$trial" "select-$t" --data "$it/augmented.jsonl" --layout random --batch-size 192 --tokens 13e9 \
      --save-every 1000 --seed $((42 + trial)) --output "$it/trial$trial"
    eval_job "eval-$t-trial$trial" "train-$t-trial$trial" "$it/trial$trial" latent
  done
  model="$it/trial0"
  after="train-$t"
done

# ---------------------------------------------------------------- 4. raw baselines (need only the data)
train_job raw-token prep --data "$DATA/bootstrap.jsonl" --layout raw --batch-size 192 --tokens 3.84e9 \
  --save-every 1000 --seed 42 --output "$OUT/raw-token-matched"
eval_job eval-raw-token raw-token "$OUT/raw-token-matched" raw
train_job raw-flops prep --data "$DATA/bootstrap.jsonl" --layout raw --batch-size 192 --tokens 13e9 \
  --save-every 1000 --seed 42 --output "$OUT/raw-flops-matched"
eval_job eval-raw-flops raw-flops "$OUT/raw-flops-matched" raw
