#!/usr/bin/env bash
# Stage 2b, sources with another vocabulary (InternLM2, Qwen1.5 against OpenChat): token alignment
# over all splits (count matrix and vocabulary mapping, built once per pair), then distribution
# alignment of every split into the pivot's vocabulary (align_token_and_vocab).
#
#   SOURCES="internlm2-chat-20b Qwen1.5-72B-Chat" scripts/align_diff_vocab.sh
#
# Input: representations/{model}_tknz_split{i} and {model}_representation_split{i}.
# Output: aligned_representations/{pivot}_{source}_representation_split{i}, plus the pair's
# {pivot}_{source}_token_alignment_matrix.npz, {pivot}_{source}_blending_to_base.json and
# {pivot}_{source}_tknz (every split's token alignment, which the distribution passes read).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALIGN_TYPE="${ALIGN_TYPE:-default}"      # hard (EM) | soft (MinED) | default (MS, statistics)
METRIC_LEVEL="${METRIC_LEVEL:-sequence}" # sequence | token
ALIGN_BATCH_SIZE="${ALIGN_BATCH_SIZE:-100}"

require_split_num
require_model PIVOT "$PIVOT"
require_models SOURCES "${SOURCE_LIST[@]}"
require_script FuseChat/train/align_token_and_vocab.py
case "$ALIGN_TYPE" in hard|soft|default) ;; *) die "ALIGN_TYPE must be hard, soft or default, got '$ALIGN_TYPE'" ;; esac
for i in $(split_indices); do
  for model in "$PIVOT" "${SOURCE_LIST[@]}"; do
    require_outputs "representation set" get_representation.sh "$(tknz_dir "$model" "$i")" "$(rep_dir "$model" "$i")"
  done
done

align=("$PYTHON" "$PROJ_PATH/FuseChat/train/align_token_and_vocab.py")
for source in "${SOURCE_LIST[@]}"; do
  pair="$(model_name "$PIVOT")_$(model_name "$source")"
  matrix="$ALIGNED_DIR/${pair}_token_alignment_matrix.npz"
  mapping="$ALIGNED_DIR/${pair}_blending_to_base.json"
  common=(
    --base_model_name_or_path "$(model_dir "$PIVOT")"
    --blending_model_name_or_path "$(model_dir "$source")"
    --model_max_length "$MODEL_MAX_LENGTH"
    --preprocessing_num_workers "$NUM_WORKERS"
    --batch_size "$ALIGN_BATCH_SIZE"
    --align_type "$ALIGN_TYPE"
    --token_alignment_matrix_file "$matrix"
    --blending_to_base_file "$mapping"
  )
  tknz="$ALIGNED_DIR/${pair}_tknz"   # the token alignments, read back by every distribution pass
  if [[ -n "$CACHE_DIR" ]]; then common+=(--cache_dir "$CACHE_DIR"); fi
  base_sets=() blending_sets=()
  for i in $(split_indices); do
    base_sets+=("$(tknz_dir "$PIVOT" "$i")")
    blending_sets+=("$(tknz_dir "$source" "$i")")
  done
  # The mapping is written after the matrix ("hard" writes no mapping).
  if [[ "$ALIGN_TYPE" == hard ]]; then token_done="$matrix"; else token_done="$mapping"; fi
  run_step align_diff_vocab "$(model_name "$source")_token_alignment" "$token_done" \
    "${align[@]}" "${common[@]}" --do_token_alignment --aligned_dataset_tknz_save_dir "$tknz" \
    --base_dataset_dir "$(comma_list "${base_sets[@]}")" \
    --blending_dataset_dir "$(comma_list "${blending_sets[@]}")"
  # Without the token alignments (a matrix and mapping made elsewhere), each pass runs its own DTW.
  reuse=()
  if [[ -d "$tknz" ]]; then reuse=(--aligned_dataset_tknz_save_dir "$tknz"); fi
  for i in $(split_indices); do
    run_step align_diff_vocab "$(model_name "$source")_split$i" "$(aligned_dir "$source" "$i")" \
      "${align[@]}" "${common[@]}" "${reuse[@]}" --do_distribution_alignment --use_token_alignment_matrix \
      --metric_level "$METRIC_LEVEL" \
      --base_dataset_dir "$(rep_dir "$PIVOT" "$i")" \
      --blending_dataset_dir "$(rep_dir "$source" "$i")" \
      --aligned_dataset_save_dir "$(aligned_dir "$source" "$i")"
  done
done
