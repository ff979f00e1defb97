#!/usr/bin/env bash
# The project's main job in one command, offline on a CPU in a few minutes:
#
#   scripts/demo.sh
#
# builds the tiny fixture models into models/ (a pivot with OpenChat's vocabulary, a source with the
# same vocabulary, a source with Qwen's), runs scripts/pipeline.sh on data/fusechat_sample.json with
# tiny settings (every stage: representations, both alignments, filter_nan, a few steps of pairwise
# fusion per source, FuseChat's SCE merge of the two targets), answers one question with the merged
# model and prints a summary. Rerunnable: existing outputs are reused (OVERWRITE=1 redoes them).
# WORK_DIR=/some/folder keeps everything out of the repository's working folders.
set -euo pipefail
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export PIVOT="${PIVOT:-openchat_3.5-tiny}"
export SOURCES="${SOURCES:-starling-tiny qwen1.5-chat-tiny}"
export DATA_PATH="${DATA_PATH:-$(dirname "$SCRIPTS_DIR")/data/fusechat_sample.json}"
export GPUS="${GPUS-}"                 # CPU only
export SPLIT_NUM="${SPLIT_NUM:-1}"
export MODEL_MAX_LENGTH="${MODEL_MAX_LENGTH:-128}"
export NUM_WORKERS="${NUM_WORKERS:-1}"
export REP_BATCH_SIZE="${REP_BATCH_SIZE:-8}"
export MAX_STEPS="${MAX_STEPS:-4}"
export TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-2}"
export GRAD_ACCUM="${GRAD_ACCUM:-1}"
export LEARNING_RATE="${LEARNING_RATE:-1e-3}"
export WARMUP_RATIO="${WARMUP_RATIO:-0}"
export SAVE_STRATEGY="${SAVE_STRATEGY:-no}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # everything is local: never wait on the network
source "$SCRIPTS_DIR/common.sh"
ANSWER="$LOG_DIR/demo_answer.json"

require_corpus
mkdir -p "$LOG_DIR"
: >"$STEPS_FILE"
export APPEND_STEPS=1

missing=()
for name in "$PIVOT" "${SOURCE_LIST[@]}"; do
  [[ -f "$(model_dir "$name")/config.json" ]] || missing+=("$name")
done
fixtures_done="$MODELS_DIR"
if [[ ${#missing[@]} -gt 0 ]]; then fixtures_done=""; fi
run_step fixtures tiny_models "$fixtures_done" \
  "$PYTHON" -m fusechat.fixtures --out "$MODELS_DIR" --models "$(comma_list "${missing[@]}")"

"$SCRIPTS_DIR/pipeline.sh"

# The answer is redone whenever the merged model is newer than it.
answer_done=""
if [[ -f "$ANSWER" && "$ANSWER" -nt "$MERGED_DIR" ]]; then answer_done="$ANSWER"; fi
run_step generate "$(basename "$MERGED_DIR")" "$answer_done" \
  "$PYTHON" -m fusechat.demo generate "$MERGED_DIR" --out "$ANSWER"

echo
"$PYTHON" -m fusechat.demo summary --steps "$STEPS_FILE" --answer "$ANSWER" --json "$LOG_DIR/demo_summary.json"
