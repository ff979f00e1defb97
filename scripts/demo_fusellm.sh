#!/usr/bin/env bash
# FuseLLM in one command, offline on a CPU in under three minutes:
#
#   scripts/demo_fusellm.sh
#
# builds the three tiny FuseLLM fixture models into models/ (a Llama-2 stand-in pivot with Mistral's
# v1 SentencePiece vocabulary, an OpenLLaMA stand-in with the v3 one, an MPT stand-in with a
# byte-level BPE), writes the sample corpus data/fusellm_sample/ as a MiniPile-like DatasetDict, runs
# scripts/fusellm_pipeline.sh on it with tiny settings (the first 15% of the corpus, one shard:
# long-text split, top-k capture of the three models, both vocabulary mappings, the chained
# alignment, packing, a few MinCE training steps) and prints a summary: rows per stage, the share of pivot positions carrying each
# source's distribution, how often each teacher won MinCE, first and last losses.
# Rerunnable: existing outputs are reused (OVERWRITE=1 redoes them). WORK_DIR=/some/folder keeps
# everything out of the repository's working folders.
set -euo pipefail
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export PIVOT="${PIVOT:-llama-2-7b-tiny}"
export SOURCE_0="${SOURCE_0:-open_llama_7b_v2-tiny}"
export SOURCE_1="${SOURCE_1:-mpt-7b-tiny}"
export GPUS="${GPUS-}"                 # CPU only
export SPLIT_NUM="${SPLIT_NUM:-1}"
export DATASET_SAMPLE_PROP="${DATASET_SAMPLE_PROP:-0.15}"   # the first 15% of every split: 7 train documents, one 4,249 tokens long
export NUM_WORKERS="${NUM_WORKERS:-1}"
export FORWARD_BATCH_SIZE="${FORWARD_BATCH_SIZE:-4}"
export BLOCK_SIZE="${BLOCK_SIZE:-2048}"
export PACK_BATCH_SIZE="${PACK_BATCH_SIZE:-1000}"
export MAX_STEPS="${MAX_STEPS:-4}"
export GRAD_ACCUM="${GRAD_ACCUM:-2}"
export LEARNING_RATE="${LEARNING_RATE:-1e-3}"
export SAVE_STEPS="${SAVE_STEPS:-1000}"
export EVAL_STEPS="${EVAL_STEPS:-1000}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # everything is local: never wait on the network
source "$SCRIPTS_DIR/common.sh"
export DATASET="${DATASET:-$WORK_DIR/data/fusellm_minipile}"

mkdir -p "$LOG_DIR"
: >"$STEPS_FILE"
export APPEND_STEPS=1

missing=()
read -r -a demo_sources <<<"${FUSELLM_SOURCES:-$SOURCE_0 $SOURCE_1}"
for name in "$PIVOT" "${demo_sources[@]}"; do
  [[ -f "$(model_dir "$name")/config.json" ]] || missing+=("$name")
done
fixtures_done="$MODELS_DIR"
if [[ ${#missing[@]} -gt 0 ]]; then fixtures_done=""; fi
run_step fixtures fusellm_tiny_models "$fixtures_done" \
  "$PYTHON" -m fusechat.fixtures --out "$MODELS_DIR" --models "$(comma_list "${missing[@]}")"
run_step fusellm_corpus "$(basename "$DATASET")" "$DATASET" "$PYTHON" -m fusechat.fusellm.corpus --out "$DATASET"

"$SCRIPTS_DIR/fusellm_pipeline.sh"

echo
"$PYTHON" -m fusechat.fusellm.demo summary --steps "$STEPS_FILE" --json "$LOG_DIR/demo_fusellm_summary.json"
