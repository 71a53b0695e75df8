#!/usr/bin/env bash
# Traces -> refinement tuning -> serving, offline on CPU (minutes).
#   1. the refine agent works tickets and appends each episode to a JSONL trace (refine_agent_in_your_app.py;
#      with AGENTREFINE_BASE_URL set the served model acts, else a scripted stand-in);
#   2. python -m training.sft trains a LoRA adapter on the traces (erroneous turns get no loss);
#   3. agentrefine serve --backend transformers serves base + adapter; one request checks it.
# Override WORK, EPISODES, PORT, SFT_ARGS (e.g. SFT_ARGS="--model meta-llama/Meta-Llama-3-8B-Instruct").
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/trace_train_serve}
EPISODES=${EPISODES:-4}
PORT=${PORT:-8011}
KEY=${AGENTREFINE_API_KEY:-$(python -c 'import secrets; print(secrets.token_urlsafe(16))')}
mkdir -p "$WORK"
rm -f "$WORK/traces.jsonl"

python examples/refine_agent_in_your_app.py --traces "$WORK/traces.jsonl" --episodes "$EPISODES"
python -m agentrefine_lg.cli check "$WORK/traces.jsonl" || true   # report only: traces may hold failed episodes

# shellcheck disable=SC2086
python -m training.sft --data "$WORK/traces.jsonl" --output_dir "$WORK/model" ${SFT_ARGS:-}

# Without --model, training.sft built the tiny base model into $WORK/model/base-model.
BASE=${BASE:-$WORK/model/base-model}
python -m agentrefine_lg.cli serve --backend transformers --model "$BASE" --adapter "$WORK/model" \
  --port "$PORT" --api-key "$KEY" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { echo "server exited" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -d '{"model": "agentrefine", "messages": [{"role": "user", "content": "Where is my order #1042?"}], "max_tokens": 24, "temperature": 0}'
echo
echo "served at http://127.0.0.1:$PORT/v1 (model agentrefine); stopping"
