#!/usr/bin/env bash
# The whole FuseChat pipeline for one pivot and a list of sources, stage after stage:
#   get_representation -> align_same_vocab / align_diff_vocab -> filter_nan -> pairwise_fusion -> merge
# Each source goes to replace_model when its tokenizer's vocabulary equals the pivot's, else to
# align_token_and_vocab. Steps whose outputs exist are skipped (every stage writes atomically, so an
# existing output is complete; OVERWRITE=1 redoes them), so a rerun after a failure resumes there.
#
#   DATA_PATH=data/fusechat_v1_clean_split_2048_filter_wrong.json PIVOT=openchat_3.5 \
#   SOURCES="Starling-LM-7B-alpha Qwen1.5-72B-Chat" GPUS=0,1,2,3,4,5,6,7 scripts/pipeline.sh
#
# Every setting of the stage drivers applies (see scripts/common.sh and each driver's header).
# MERGE=0 stops after the pairwise fusion.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MERGE="${MERGE:-1}"

# Everything is checked before any work starts.
require_corpus
require_split_num
require_model PIVOT "$PIVOT"
require_models SOURCES "${SOURCE_LIST[@]}"
for script in get_data_representation replace_model align_token_and_vocab filter_nan train; do
  require_script "FuseChat/train/$script.py"
done
require_command torchrun "it comes with PyTorch"
if [[ "$MERGE" == 1 ]]; then
  require_recipe
  require_command "${MERGE_CMD:-fusechat-merge}" "install the project: pip install -e ."
fi

source_dirs=()
for source in "${SOURCE_LIST[@]}"; do source_dirs+=("$(model_dir "$source")"); done
kinds="$("$PYTHON" -m fusechat.drivers vocab "$(model_dir "$PIVOT")" "${source_dirs[@]}")" \
  || die "could not load the tokenizers of PIVOT and SOURCES"
mapfile -t kinds <<<"$kinds"
same=() different=()
for k in "${!SOURCE_LIST[@]}"; do
  source="${SOURCE_LIST[$k]}"
  if [[ "${kinds[$k]}" == same ]]; then same+=("$source"); else different+=("$source"); fi
  echo "source $(model_name "$source"): ${kinds[$k]} vocabulary as the pivot"
done

mkdir -p "$LOG_DIR"
if [[ "${APPEND_STEPS:-0}" != 1 ]]; then : >"$STEPS_FILE"; fi   # this run's steps (the summary reads them)
stage() {  # stage DRIVER [VARIABLE=VALUE...]
  local driver="$1"; shift
  echo "== $driver"
  env "$@" "$SCRIPTS_DIR/$driver" || die "stage $driver failed (logs under $(rel "$LOG_DIR"))"
}

stage get_representation.sh MODELS="$PIVOT ${SOURCE_LIST[*]}"
if [[ ${#same[@]} -gt 0 ]]; then stage align_same_vocab.sh SOURCES="${same[*]}"; fi
if [[ ${#different[@]} -gt 0 ]]; then stage align_diff_vocab.sh SOURCES="${different[*]}"; fi
stage filter_nan.sh
stage pairwise_fusion.sh
if [[ "$MERGE" == 1 ]]; then stage merge.sh; fi
echo "pipeline done; steps recorded in $(rel "$STEPS_FILE")"
