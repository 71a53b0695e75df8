#!/usr/bin/env bash
# The paper's setting, scripted: synthesize with a strong teacher, refinement-tune Llama-3-8B-Instruct on
# GPUs, serve with vLLM, evaluate on the held-out tasks next to the untuned model. Read README.md first:
# this costs real money (teacher tokens) and GPU hours. Every step resumes when re-run.
set -euo pipefail

OUT=${OUT:-runs/paper}
N=${N:-32000}                                   # accepted trajectories (the released sets: 32k / 64k)
TEACHER=${TEACHER:-openai:gpt-4o}               # needs OPENAI_API_KEY
: "${PERSONAS:?set PERSONAS to a Persona Hub JSONL file, one persona object per line}"
BASE=${BASE:-meta-llama/Meta-Llama-3-8B-Instruct}
VLLM_BIN=${VLLM_BIN:-vllm}                      # vLLM lives in its own environment
SHARDS=${SHARDS:-4}                             # parallel synthesis processes (one event loop each)

# 1. Synthesis: persona -> script -> trajectory -> rule verification, sharded, each shard resumable.
for i in $(seq 0 $((SHARDS - 1))); do
  agentrefine synthesize --teacher "$TEACHER" --personas "$PERSONAS" --n $((N / SHARDS)) \
      --shard "$i/$SHARDS" --concurrency 32 --out "$OUT/data/shard$i" &
done
wait
agentrefine synthesize --merge "$OUT"/data/shard* --out "$OUT/data/all"
agentrefine check -q "$OUT/data/all/samples.jsonl"

# 2. Refinement tuning: full fine-tuning with DeepSpeed ZeRO-3 on 8 GPUs (erroneous turns masked).
accelerate launch --config_file training/configs/deepspeed_zero3.yaml -m training.sft \
    --config training/configs/paper_llama3_8b.yaml \
    --model "$BASE" --data "$OUT/data/all/samples.jsonl" --output_dir "$OUT/train"

# 3 + 4. Serve the tuned model and the base with vLLM, evaluate both on the same held-out tasks.
for arm in tuned base; do
  model="$OUT/train/merged"; [ "$arm" = base ] && model="$BASE"
  agentrefine serve --backend vllm --vllm-bin "$VLLM_BIN" --model "$model" --port 8000 --api-key local &
  server=$!
  until curl -sf http://127.0.0.1:8000/health >/dev/null; do sleep 5; done
  agentrefine eval --base-url http://127.0.0.1:8000/v1 --model agentrefine --api-key local \
      --tasks babyai,sciworld,pddl,alfworld,jericho --episodes 100 --max-steps 30 --workers 8 \
      --out "$OUT/eval/$arm"
  kill "$server"; wait "$server" || true
done
echo "reports: $OUT/eval/tuned/summary.md and $OUT/eval/base/summary.md"
