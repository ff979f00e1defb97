#!/usr/bin/env bash
# Stage 3: drop the rows whose metric_ce or fused_metric_ce is NaN from every aligned split.
#
#   SOURCES="Starling-LM-7B-alpha Qwen1.5-72B-Chat" scripts/filter_nan.sh
#
# Input: aligned_representations/{pivot}_{source}_representation_split{i}.
# Output: aligned_representations/{pivot}_{source}_representation_split{i}_fnan.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_split_num
require_model PIVOT "$PIVOT"
require_models SOURCES "${SOURCE_LIST[@]}"
require_script FuseChat/train/filter_nan.py
for source in "${SOURCE_LIST[@]}"; do
  for i in $(split_indices); do
    require_outputs "aligned set" "align_same_vocab.sh or align_diff_vocab.sh" "$(aligned_dir "$source" "$i")"
  done
done

for source in "${SOURCE_LIST[@]}"; do
  for i in $(split_indices); do
    run_step filter_nan "$(model_name "$source")_split$i" "$(fnan_dir "$source" "$i")" \
      "$PYTHON" "$PROJ_PATH/FuseChat/train/filter_nan.py" \
      --input_data_dir "$(aligned_dir "$source" "$i")" \
      --output_data_dir "$(fnan_dir "$source" "$i")" \
      --preprocessing_num_workers "$NUM_WORKERS"
  done
done
