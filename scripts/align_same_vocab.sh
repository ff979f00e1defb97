#!/usr/bin/env bash
# Stage 2a, sources that share the pivot's vocabulary (Starling, SOLAR, Mixtral against OpenChat):
# copy each source's distributions into the pivot's rows as the fused columns (replace_model).
#
#   SOURCES="Starling-LM-7B-alpha Nous-Hermes-2-SOLAR-10.7B" scripts/align_same_vocab.sh
#
# Input: representations/{model}_representation_split{i} of the pivot and each source.
# Output: aligned_representations/{pivot}_{source}_representation_split{i}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPLACE_BATCH_SIZE="${REPLACE_BATCH_SIZE:-1000}"

require_split_num
require_model PIVOT "$PIVOT"
require_models SOURCES "${SOURCE_LIST[@]}"
require_script FuseChat/train/replace_model.py
for i in $(split_indices); do
  require_outputs "representation set" get_representation.sh "$(rep_dir "$PIVOT" "$i")"
  for source in "${SOURCE_LIST[@]}"; do
    require_outputs "representation set" get_representation.sh "$(rep_dir "$source" "$i")"
  done
done

for source in "${SOURCE_LIST[@]}"; do
  for i in $(split_indices); do
    run_step align_same_vocab "$(model_name "$source")_split$i" "$(aligned_dir "$source" "$i")" \
      "$PYTHON" "$PROJ_PATH/FuseChat/train/replace_model.py" \
      --dataset_dir "$(rep_dir "$PIVOT" "$i")" \
      --replace_dataset_dir "$(rep_dir "$source" "$i")" \
      --dataset_save_dir "$(aligned_dir "$source" "$i")" \
      --preprocessing_num_workers "$NUM_WORKERS" \
      --batch_size "$REPLACE_BATCH_SIZE" \
      --replace_model source
  done
done
