#!/usr/bin/env bash
# The paper's BoLT runs (Ruan et al. 2025) on ONE node with 8 GPUs, step by step.
#
#   bash runs/paper_single_node.sh --dry-run    # print every command (the graph in runs/README.md)
#   bash runs/paper_single_node.sh              # run it (days: see the cost below)
#
# What it reproduces (docs/method.md §1, §5, §6; ryoungj/BoLT bin/exp_setups/bootstrap_fixed_data.sh):
#   0. FineMath-4+ -> validation (i % 1000 == 0), warm-start (j % 20 == 0, ~480M tokens) and
#      bootstrap (13 <= j % 20 < 17, ~1.92B tokens) splits        runs/prepare_finemath.py
#   1. teacher thoughts for the warm-start split (gpt-4o-mini, T=0.7, OpenAI Batch API as in the
#      reference: half price, results within 24 h), 20 shards, merged
#   2. warm start: TinyLlama-1.1B + the 4 latent tokens, 0.8B tokens, batch 96 x 2048 (4,069 steps;
#      every lt train here warms up 1,000 steps, its default and the reference's)
#   3. three BoLT iterations with K=4, each on the same bootstrap split, with the previous model:
#        E-step  8 x lt sample-thoughts --shard g/8, one per GPU (vLLM; a 1.1B model is data-parallel,
#                not tensor-parallel), then lt merge (checks every shard) and lt select
#        M-step  torchrun on 8 GPUs (FSDP2): the BASE model on the augmented data, 13B tokens,
#                batch 192 x 2048 (33,060 steps)
#   4. raw baselines on the bootstrap split: token-matched (3.84B tokens, 9,765 steps) and
#      FLOPs-matched (13B tokens, 33,060 steps)
#   5. few-shot MATH and GSM8K for every model (latent prompts for BoLT models, raw for baselines)
# The reference's 3 trials per M-step are TRIALS=3 (seeds 42, 43, 44); trial 0 feeds the next E-step.
#
# Expected cost (runs/cost.py; measure your throughputs with a pilot and rerun it):
#   assumptions per H100-class GPU: training 40,000 tok/s (TinyLlama-1.1B, seq 2048, FSDP2: ~7.2
#   GFLOP/token -> ~290 TFLOP/s); vLLM decode 20,000 tok/s; vLLM prefill 160,000 tok/s; latents
#   2.3 tokens per raw token (the GPT-4o-mini ratio).
#   warm start      0.8e9 / 40,000 / 3600                                   =     5.6 GPU-h
#   E-step (each)   decode 4 x 2.3 x 1.92e9 = 17.7e9 / 20,000 / 3600        =   245.3
#                   prefill (3 + 1 + 4 x 3.3) x 1.92e9 = 33.0e9 / 160,000   =    57.3
#   M-step (each)   13e9 / 40,000 / 3600                                    =    90.3
#   3 iterations    3 x (302.7 + 90.3)                                      = 1,178.8
#   raw baselines   (3.84e9 + 13e9) / 40,000 / 3600                         =   116.9
#   evaluation      6 models x 8.8e6 tokens / 20,000 / 3600                 =     0.7
#   total                                                                   ~ 1,302 GPU-h
#   = 163 hours (6.8 days) on this 8-GPU node; TRIALS=3 adds 2 x 3 x 90.3 + 2 x 5.6 = 553 GPU-h.
#   The teacher step uses no GPU: ~3M chunk requests to the OpenAI Batch API.
#
# Settings (environment variables, defaults in brackets):
#   FINEMATH  FineMath-4+ parquet folder (HuggingFaceTB/finemath, finemath-4plus/) [finemath-4plus]
#   DATA [data/finemath]  OUT [lt-runs/paper]  BASE_MODEL [TinyLlama/TinyLlama_v1.1]
#   TEACHER [gpt-4o-mini-2024-07-18] (needs LT_API_KEY or OPENAI_API_KEY)  NGPU [8]  K [4]  ITERS [3]  TRIALS [1]
#   SYNTH_SHARDS [20]  REFERENCE_QUIRKS [1]: reproduce the reference's E-step prompts exactly
# Every stage resumes when rerun (lt writes outputs atomically, keeps .partial progress, and train
# resumes from its last checkpoint), so after a crash run the script again.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh" "$@"

FINEMATH=${FINEMATH:-finemath-4plus}
DATA=${DATA:-data/finemath}
OUT=${OUT:-lt-runs/paper}
BASE_MODEL=${BASE_MODEL:-TinyLlama/TinyLlama_v1.1}
TEACHER=${TEACHER:-gpt-4o-mini-2024-07-18}
NGPU=${NGPU:-8}
K=${K:-4}
ITERS=${ITERS:-3}
TRIALS=${TRIALS:-1}
SYNTH_SHARDS=${SYNTH_SHARDS:-20}
REFERENCE_QUIRKS=${REFERENCE_QUIRKS:-1}
QUIRKS=()
if (( REFERENCE_QUIRKS )); then QUIRKS=(--reference-quirks); fi

TORCHRUN=(torchrun --standalone --nproc_per_node "$NGPU" -m lt_cli)
TRAIN_COMMON=(--seq-len 2048 --lr 1e-4 --strategy fsdp)

# ---------------------------------------------------------------- 0. data
run python runs/prepare_finemath.py --input "$FINEMATH" --out "$DATA" --shuffle-seed 42

# ---------------------------------------------------------------- 1. teacher thoughts (API, no GPU)
for (( s = 0; s < SYNTH_SHARDS; s++ )); do
  run_bg lt synthesize --backend api --batch --model "$TEACHER" --shard "$s/$SYNTH_SHARDS" "$DATA/warmstart.jsonl" -o "$OUT/teacher/warmstart.$s.jsonl"
done
wait_all
run lt merge --num-shards "$SYNTH_SHARDS" -o "$OUT/teacher/warmstart.jsonl" "$OUT/teacher/warmstart.{i}.jsonl"

# ---------------------------------------------------------------- 2. warm start (0.8B tokens)
for (( trial = 0; trial < TRIALS; trial++ )); do
  run "${TORCHRUN[@]}" train --model "$BASE_MODEL" --data "$OUT/teacher/warmstart.jsonl" --layout random \
    --batch-size 96 --tokens 0.8e9 --save-every 1000 --seed $((42 + trial)) "${TRAIN_COMMON[@]}" --output "$OUT/warm/trial$trial"
done

# ---------------------------------------------------------------- 3. BoLT iterations
model="$OUT/warm/trial0"
for (( t = 1; t <= ITERS; t++ )); do
  it="$OUT/iter$t"
  # E-step: one sample-thoughts process per GPU, each on every NGPU-th document; iteration t samples
  # and selects with seed 42 + t, as lt bootstrap does (runs/paper/bolt.toml is this run as one file)
  for (( g = 0; g < NGPU; g++ )); do
    run_bg env CUDA_VISIBLE_DEVICES=$g lt sample-thoughts --model "$model" --backend vllm --k "$K" --max-new-tokens 1024 \
      --prefix-chunks 3 --max-model-len 2048 ${QUIRKS[@]+"${QUIRKS[@]}"} --seed $((42 + t)) --shard "$g/$NGPU" "$DATA/bootstrap.jsonl" -o "$it/candidates.$g.jsonl"
  done
  wait_all
  run lt merge --num-shards "$NGPU" -o "$it/candidates.jsonl" "$it/candidates.{i}.jsonl"
  run lt select "$it/candidates.jsonl" -o "$it/augmented.jsonl" --seed $((42 + t))
  # M-step: from the BASE model (not model t-1), 13B tokens
  for (( trial = 0; trial < TRIALS; trial++ )); do
    run "${TORCHRUN[@]}" train --model "$BASE_MODEL" --data "$it/augmented.jsonl" --layout random \
      --batch-size 192 --tokens 13e9 --save-every 1000 --seed $((42 + trial)) "${TRAIN_COMMON[@]}" --output "$it/trial$trial"
  done
  model="$it/trial0"
done

# ---------------------------------------------------------------- 4. raw baselines
run "${TORCHRUN[@]}" train --model "$BASE_MODEL" --data "$DATA/bootstrap.jsonl" --layout raw \
  --batch-size 192 --tokens 3.84e9 --save-every 1000 --seed 42 "${TRAIN_COMMON[@]}" --output "$OUT/raw-token-matched"
run "${TORCHRUN[@]}" train --model "$BASE_MODEL" --data "$DATA/bootstrap.jsonl" --layout raw \
  --batch-size 192 --tokens 13e9 --save-every 1000 --seed 42 "${TRAIN_COMMON[@]}" --output "$OUT/raw-flops-matched"

# ---------------------------------------------------------------- 5. evaluation (greedy, vLLM)
evaluate() {  # evaluate MODEL VARIANT
  local task
  for task in math gsm8k; do
    run lt eval --model "$1" --task "$task" --variant "$2" --backend vllm -o "$1/eval.$task.json" --log-samples "$1/eval.$task.samples.jsonl"
  done
}
for (( trial = 0; trial < TRIALS; trial++ )); do
  evaluate "$OUT/warm/trial$trial" latent
  for (( t = 1; t <= ITERS; t++ )); do evaluate "$OUT/iter$t/trial$trial" latent; done
done
evaluate "$OUT/raw-token-matched" raw
evaluate "$OUT/raw-flops-matched" raw
