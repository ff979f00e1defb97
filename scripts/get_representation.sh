#!/usr/bin/env bash
# Stage 1: tokenize the corpus and capture each model's top-k next-token distributions, per split.
#
#   GPUS=0,1,2,3,4,5,6,7 SPLIT_NUM=4 scripts/get_representation.sh
#
# Output: representations/{model}_representation_split{i} (and the tokenized {model}_tknz_split{i}).
# Models: PIVOT and SOURCES, or MODELS to name others. Splits run in parallel, one job per GPU;
# for a model too large for one GPU give each job several: GPU_GROUPS="0,1,2,3 4,5,6,7" DEVICE_MAP=auto.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LOAD_IN_HALF="${LOAD_IN_HALF:-$(gpu_default bf16 none)}"   # none|fp16|bf16
REP_BATCH_SIZE="${REP_BATCH_SIZE:-32}"
TOP_K_LOGITS="${TOP_K_LOGITS:-10}"
DEVICE_MAP="${DEVICE_MAP:-}"             # e.g. auto
FLASH_ATTN="${FLASH_ATTN:-$(gpu_default 1 0)}"   # 1: --flash_attn_transformers (SDPA without flash-attn)

require_corpus
require_split_num
if [[ -n "${MODELS:-}" ]]; then
  read -r -a models <<<"${MODELS//,/ }"
  require_models MODELS "${models[@]}"
else
  require_model PIVOT "$PIVOT"
  require_models SOURCES "${SOURCE_LIST[@]}"
  models=("$PIVOT" "${SOURCE_LIST[@]}")
fi
require_script FuseChat/train/get_data_representation.py

represent() {  # represent MODEL:SPLIT
  local model="${1%:*}" i="${1##*:}"
  local args=(
    --model_name_or_path "$(model_dir "$model")"
    --data_path "$DATA_PATH"
    --tknz_dataset_path "$(tknz_dir "$model" "$i")"
    --dataset_save_dir "$(rep_dir "$model" "$i")"
    --dataset_split_num "$SPLIT_NUM"
    --dataset_index "$i"
    --model_max_length "$MODEL_MAX_LENGTH"
    --load_in_half "$LOAD_IN_HALF"
    --batch_size "$REP_BATCH_SIZE"
    --preprocessing_num_workers "$NUM_WORKERS"
    --top_k_logits "$TOP_K_LOGITS"
    --conv_temp "$CONV_TEMP"
    --save_per_token_metric --no_assert --mask_instruction --get_representation
  )
  [[ -n "$CACHE_DIR" ]] && args+=(--cache_dir "$CACHE_DIR")
  [[ -n "$DEVICE_MAP" ]] && args+=(--device_map "$DEVICE_MAP")
  [[ "$FLASH_ATTN" == 1 ]] && args+=(--flash_attn_transformers)
  run_step get_representation "$(model_name "$model")_split$i" "$(rep_dir "$model" "$i")" \
    "$PYTHON" "$PROJ_PATH/FuseChat/train/get_data_representation.py" "${args[@]}"
}

jobs=()
for model in "${models[@]}"; do
  for i in $(split_indices); do jobs+=("$model:$i"); done
done
run_on_gpu_groups represent "${jobs[@]}" || die "get_representation failed; see the logs under $(rel "$LOG_DIR")/get_representation"
