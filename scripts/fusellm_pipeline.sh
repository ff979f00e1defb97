#!/usr/bin/env bash
# FuseLLM end to end (docs/design.md 12): split long texts, capture every model's top-k on every shard,
# map each source's vocabulary, align the sources one after the other into the pivot's rows, pack
# into 2048-token rows, then continue training the pivot with MinCE distillation. Every stage runs
# the released script with the published flags (README of the FuseLLM release, docs/design.md 12.7);
# sizes are variables:
#
#   DATASET=data/minipile PIVOT=Llama-2-7b-hf SOURCE_0=open_llama_7b_v2 SOURCE_1=mpt-7b \
#   GPUS=0,1,2,3,4,5,6,7 scripts/fusellm_pipeline.sh
#
# FUSELLM_SOURCES="a b c" replaces SOURCE_0/SOURCE_1 with any number of sources (source k = the k-th
# name); with other than two, training names them with --distill_aligned_models 0,...,K-1.
#
# DATASET is a DatasetDict (train/validation/test, column "text") saved with save_to_disk, as
# MiniPile. Outputs follow the reference's naming, under WORK_DIR:
#   representations/minipile_split                                        split_long_text.py
#   representations/{i}_{N}_minipile_split_{model}_representation         forward_for_logits.py
#   aligned_representations/{pivot}_{source}_vocab_mapping.json           vocab_mapping.py
#   aligned_representations/{i}_{N}_minipile_split_{pivot}_{s0}[_{s1}...]_aligned_representation
#   packed_representations/{i}_{N}_minipile_fusellm_processed            packing.py
#   checkpoints/{pivot}_fusellm_ckpt                                      train.py
# Existing outputs are reused (every stage writes atomically; OVERWRITE=1 redoes them); each step
# logs to logs/fusellm_*/. Training runs under DeepSpeed ZeRO-2 (the released launcher) when GPUs
# are present and DEEPSPEED=1 (default there), else under torchrun; on a CPU in float32.
set -euo pipefail
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export PIVOT="${PIVOT:-Llama-2-7b-hf}"
SOURCE_0="${SOURCE_0:-open_llama_7b_v2}"
SOURCE_1="${SOURCE_1:-mpt-7b}"
read -r -a FUSELLM_SOURCE_LIST <<<"${FUSELLM_SOURCES:-$SOURCE_0 $SOURCE_1}"
export SOURCES="${FUSELLM_SOURCE_LIST[*]}"
export SPLIT_NUM="${SPLIT_NUM:-8}"
export NUM_WORKERS="${NUM_WORKERS:-80}"
source "$SCRIPTS_DIR/common.sh"

DATASET="${DATASET:-$WORK_DIR/data/minipile}"
CORPUS_NAME="${CORPUS_NAME:-minipile}"
PACKED_DIR="${PACKED_DIR:-$WORK_DIR/packed_representations}"
BLOCK_SIZE="${BLOCK_SIZE:-2048}"               # split threshold BLOCK_SIZE - 48; packed row length
DATASET_SAMPLE_PROP="${DATASET_SAMPLE_PROP:-}"  # debug: keep the first rows of every split (split_long_text.py)
FORWARD_BATCH_SIZE="${FORWARD_BATCH_SIZE:-8}"
TOP_K="${TOP_K:-10}"
LOAD_IN_HALF="${LOAD_IN_HALF:-$(gpu_default bf16 none)}"
VOCAB_MAPPING_TYPE="${VOCAB_MAPPING_TYPE:-default}"
VOCAB_MAPPING_THREADS="${VOCAB_MAPPING_THREADS:-$(nproc)}"  # --num_process: threads of the MinED search
VOCAB_ALIGN_TYPE="${VOCAB_ALIGN_TYPE:-soft}"
ALIGN_BATCH_SIZE="${ALIGN_BATCH_SIZE:-100}"
PACK_BATCH_SIZE="${PACK_BATCH_SIZE:-1000}"     # with NUM_WORKERS, defines the packed-row boundaries
DEEPSPEED="${DEEPSPEED:-$(gpu_default 1 0)}"
NPROC="${NPROC:-$(if [[ -n "$GPUS" ]]; then tr ',' '\n' <<<"$GPUS" | wc -l; else echo 1; fi)}"
MASTER_PORT="${MASTER_PORT:-20001}"
NUM_EPOCHS="${NUM_EPOCHS:-1}"
MAX_STEPS="${MAX_STEPS:--1}"                   # > 0 overrides NUM_EPOCHS
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-1}"      # per device
GRAD_ACCUM="${GRAD_ACCUM:-16}"
LEARNING_RATE="${LEARNING_RATE:-1e-5}"
WARMUP_RATIO="${WARMUP_RATIO:-0.008}"
SAVE_STEPS="${SAVE_STEPS:-500}"
EVAL_STEPS="${EVAL_STEPS:-500}"
LM_LOSS_WEIGHT="${LM_LOSS_WEIGHT:-0.9}"
DATALOADER_WORKERS="${DATALOADER_WORKERS:-$(gpu_default 10 0)}"
REPORT_TO="${REPORT_TO:-$(gpu_default tensorboard none)}"
TRAIN_EXTRA_ARGS="${TRAIN_EXTRA_ARGS:-}"
UTILS="$PROJ_PATH/FuseLLM/src/utils"
N="$SPLIT_NUM"

[[ -e "$DATASET" ]] || die "dataset not found: $DATASET
  set DATASET to a DatasetDict saved with save_to_disk (train/validation/test splits, column 'text'), e.g. MiniPile"
require_split_num
require_model PIVOT "$PIVOT"
if [[ -n "${FUSELLM_SOURCES:-}" ]]; then
  require_models FUSELLM_SOURCES "${FUSELLM_SOURCE_LIST[@]}"
else
  require_model SOURCE_0 "$SOURCE_0"
  require_model SOURCE_1 "$SOURCE_1"
fi
K="${#FUSELLM_SOURCE_LIST[@]}"
for script in split_long_text forward_for_logits vocab_mapping token_alignment packing; do
  require_script "FuseLLM/src/utils/$script.py"
done
require_script FuseLLM/src/train.py
mkdir -p "$LOG_DIR" "$REP_DIR" "$ALIGNED_DIR" "$PACKED_DIR" "$CKPT_DIR"
[[ "${APPEND_STEPS:-0}" == 1 ]] || : >"$STEPS_FILE"

p="$(model_name "$PIVOT")"
split_set="$REP_DIR/${CORPUS_NAME}_split"
rep_set() { echo "$REP_DIR/${2}_${N}_${CORPUS_NAME}_split_$(model_name "$1")_representation"; }
mapping_file() { echo "$ALIGNED_DIR/${p}_$(model_name "$1")_vocab_mapping.json"; }
aligned_set() {  # aligned_set SHARD K: the pivot's rows with sources 0..K aligned in
  local names="$p" k
  for ((k = 0; k <= $2; k++)); do names+="_$(model_name "${FUSELLM_SOURCE_LIST[$k]}")"; done
  echo "$ALIGNED_DIR/${1}_${N}_${CORPUS_NAME}_split_${names}_aligned_representation"
}
packed_set() { echo "$PACKED_DIR/${1}_${N}_${CORPUS_NAME}_fusellm_processed"; }
CKPT="${CKPT:-$CKPT_DIR/${p}_fusellm_ckpt}"

# 1. Long texts cut so that every piece fits every tokenizer.
source_dirs=()
for source in "${FUSELLM_SOURCE_LIST[@]}"; do source_dirs+=("$(model_dir "$source")"); done
split_sources=(--blending_model_name_or_path "${source_dirs[0]}")
if [[ "$K" -ge 2 ]]; then split_sources+=(--another_blending_model_name_or_path "${source_dirs[1]}"); fi
if [[ "$K" -ge 3 ]]; then split_sources+=(--extra_blending_model_name_or_path "${source_dirs[@]:2}"); fi
run_step fusellm_split "$CORPUS_NAME" "$split_set" \
  "$PYTHON" "$UTILS/split_long_text.py" \
  --base_model_name_or_path "$(model_dir "$PIVOT")" "${split_sources[@]}" --dataset "$DATASET" \
  --dataset_save_dir "$split_set" --block_size "$BLOCK_SIZE" --preprocessing_num_workers "$NUM_WORKERS" \
  ${DATASET_SAMPLE_PROP:+--dataset_sample_prop "$DATASET_SAMPLE_PROP"}

# 2. Top-k logits and the sequence CE of every model on every shard (one shard per GPU group).
forward() {  # forward MODEL:INDEX
  local model="${1%:*}" i="${1##*:}"
  run_step fusellm_forward "$(model_name "$model")_$i" "$(rep_set "$model" "$i")" \
    "$PYTHON" "$UTILS/forward_for_logits.py" \
    --model_name_or_path "$(model_dir "$model")" --dataset "$split_set" \
    --dataset_save_dir "$(rep_set "$model" "$i")" --dataset_split_num "$N" --dataset_index "$i" \
    --model_max_length "$BLOCK_SIZE" --training_mode full --load_in_half "$LOAD_IN_HALF" \
    --batch_size "$FORWARD_BATCH_SIZE" --preprocessing_num_workers "$NUM_WORKERS" --top_k_logits "$TOP_K" \
    --save_per_token_metric
}
units=()
for model in "$PIVOT" "${FUSELLM_SOURCE_LIST[@]}"; do
  for i in $(split_indices); do units+=("$model:$i"); done
done
run_on_gpu_groups forward "${units[@]}" || die "a forward_for_logits step failed (see above)"

# 3. Vocabulary mapping source -> pivot (MinED over the vocabularies), once per source; only the soft
#    alignment reads it, so VOCAB_ALIGN_TYPE=hard skips this step.
mapping_sources=("${FUSELLM_SOURCE_LIST[@]}")
if [[ "$VOCAB_ALIGN_TYPE" == hard ]]; then
  echo "VOCAB_ALIGN_TYPE=hard: no vocabulary mapping (only the soft alignment reads it)"
  mapping_sources=()
fi
for source in "${mapping_sources[@]}"; do
  run_step fusellm_vocab_mapping "$(model_name "$source")" "$(mapping_file "$source")" \
    "$PYTHON" "$UTILS/vocab_mapping.py" \
    --base_model_name_or_path "$(model_dir "$PIVOT")" --blending_model_name_or_path "$(model_dir "$source")" \
    --dataset_dir "$split_set" --vocab_mapping_save_dir "$(mapping_file "$source")" \
    --model_max_length "$BLOCK_SIZE" --vocab_mapping_type "$VOCAB_MAPPING_TYPE" --num_process "$VOCAB_MAPPING_THREADS"
done

# 4. Token and distribution alignment, chained: source 0 into the pivot's rows, source 1 into that
#    output, and so on (source k adds the columns *_k).
for i in $(split_indices); do
  base_set="$(rep_set "$PIVOT" "$i")"
  for ((k = 0; k < K; k++)); do
    source="${FUSELLM_SOURCE_LIST[$k]}"
    run_step fusellm_align "$(model_name "$source")_$i" "$(aligned_set "$i" "$k")" \
      "$PYTHON" "$UTILS/token_alignment.py" \
      --base_model_name_or_path "$(model_dir "$PIVOT")" --blending_model_name_or_path "$(model_dir "$source")" \
      --base_dataset_dir "$base_set" --blending_dataset_dir "$(rep_set "$source" "$i")" \
      --dataset_save_dir "$(aligned_set "$i" "$k")" --model_max_length "$BLOCK_SIZE" \
      --preprocessing_num_workers "$NUM_WORKERS" --batch_size "$ALIGN_BATCH_SIZE" --blending_model_index "$k" \
      --vocab_align_type "$VOCAB_ALIGN_TYPE" \
      ${mapping_sources[0]:+--vocab_mapping_save_dir "$(mapping_file "$source")"} --metric_level sequence
    base_set="$(aligned_set "$i" "$k")"
  done
done

# 5. Packing into BLOCK_SIZE-token rows (the README's loop, with its missing "done").
packed=()
for i in $(split_indices); do
  run_step fusellm_pack "$i" "$(packed_set "$i")" \
    "$PYTHON" "$UTILS/packing.py" \
    --dataset_dir "$(aligned_set "$i" $((K - 1)))" --dataset_save_dir "$(packed_set "$i")" --model_max_length "$BLOCK_SIZE" \
    --preprocessing_num_workers "$NUM_WORKERS" --batch_size "$PACK_BATCH_SIZE" --metric_level sequence
  packed+=("$(packed_set "$i")")
done

# 6. Continual training with MinCE distillation, the published flags.
if [[ "$DEEPSPEED" == 1 ]]; then
  require_command deepspeed "pip install deepspeed"
  launcher=(deepspeed --master_port="$MASTER_PORT" "$PROJ_PATH/FuseLLM/src/train.py"
            --deepspeed "$PROJ_PATH/FuseLLM/config/zero_stage2_config.json")
else
  require_command torchrun "it comes with PyTorch"
  launcher=(torchrun --nproc_per_node "$NPROC" --master_port "$MASTER_PORT" "$PROJ_PATH/FuseLLM/src/train.py")
fi
if [[ "$ON_GPU" == 1 ]]; then
  device_args=(--bf16 True --tf32 True --use_flash_attn True --gradient_checkpointing True)
else
  device_args=(--use_cpu True)
fi
read -r -a extra <<<"$TRAIN_EXTRA_ARGS"
if [[ "$K" != 2 ]]; then  # the published flags name two sources; any other number is named explicitly
  extra=(--distill_aligned_models "$(comma_list $(seq 0 $((K - 1))))" "${extra[@]}")
fi
run_step fusellm_train "$(basename "$CKPT")" "$CKPT/config.json" \
  "${launcher[@]}" --training_mode full --model_name_or_path "$(model_dir "$PIVOT")" \
  --output_dir "$CKPT" --model_max_length "$BLOCK_SIZE" --logging_steps 1 --save_strategy steps \
  --save_steps "$SAVE_STEPS" --save_total_limit 1 --evaluation_strategy steps --per_device_eval_batch_size 1 \
  --logging_strategy steps --eval_steps "$EVAL_STEPS" --do_train --do_eval "${device_args[@]}" \
  --warmup_ratio "$WARMUP_RATIO" --lr_scheduler_type cosine --dataset_name "$(comma_list "${packed[@]}")" \
  --per_device_train_batch_size "$TRAIN_BATCH_SIZE" --gradient_accumulation_steps "$GRAD_ACCUM" \
  --num_train_epochs "$NUM_EPOCHS" --max_steps "$MAX_STEPS" --optim adamw_torch --adam_beta1 0.9 \
  --adam_beta2 0.95 --learning_rate "$LEARNING_RATE" --weight_decay 0.1 --max_grad_norm 1.0 --seed 42 \
  --report_to "$REPORT_TO" --do_distill --distill_with_ref_model True --distill_with_aligned_model_0 True \
  --distill_with_aligned_model_1 True --distill_loss_type ce --distill_teacher_temperature 1.0 \
  --lm_loss_weight "$LM_LOSS_WEIGHT" --distill_greater_as_gt True --distill_greater_as_gt_type hard \
  --dataloader_num_workers "$DATALOADER_WORKERS" --remove_unused_columns False "${extra[@]}"

echo "FuseLLM pipeline done: $(rel "$CKPT")"
