#!/usr/bin/env bash
# Stage 4: pairwise knowledge fusion. For every source, fine-tune a copy of the pivot on its aligned
# splits with the MinCE fuse loss (train.py under torchrun), giving one target model per source.
#
#   GPUS=0,1,2,3,4,5,6,7 SOURCES="Starling-LM-7B-alpha Qwen1.5-72B-Chat" scripts/pairwise_fusion.sh
#
# Input: aligned_representations/{pivot}_{source}_representation_split{i}_fnan (all splits).
# Output: checkpoints/{pivot}_{source}_pairwise_fusion_ckpt.
# The defaults are the published run (3 epochs, lr 5e-6, batch 4 x grad-accum 4 x 8 GPUs, bf16,
# FSDP full_shard auto_wrap, lm_loss_weight 0.9); without GPUs: float32, no FSDP. Any other
# train.py / TrainingArguments flag: TRAIN_EXTRA_ARGS="--seed 1" or as arguments of this script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NPROC="${NPROC:-$(if [[ -n "$GPUS" ]]; then tr ',' '\n' <<<"$GPUS" | wc -l; else echo 1; fi)}"
MASTER_PORT="${MASTER_PORT:-}"                # empty: torchrun --standalone picks a free port
NUM_EPOCHS="${NUM_EPOCHS:-3}"
MAX_STEPS="${MAX_STEPS:--1}"                  # > 0 overrides NUM_EPOCHS
LEARNING_RATE="${LEARNING_RATE:-5e-6}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-4}"      # per device
GRAD_ACCUM="${GRAD_ACCUM:-4}"
WARMUP_RATIO="${WARMUP_RATIO:-0.03}"
SAVE_STRATEGY="${SAVE_STRATEGY:-epoch}"
LM_LOSS_WEIGHT="${LM_LOSS_WEIGHT:-0.9}"
FUSE_LOSS_TYPE="${FUSE_LOSS_TYPE:-ce}"         # ce|kl
FUSE_TEMPERATURE="${FUSE_TEMPERATURE:-1.0}"
DATALOADER_WORKERS="${DATALOADER_WORKERS:-$(gpu_default 8 0)}"
PRECISION="${PRECISION:-$(gpu_default bf16 fp32)}"   # bf16|fp16|fp32
FSDP="${FSDP-$(gpu_default "full_shard auto_wrap" "")}"
FSDP_LAYER="${FSDP_LAYER:-MistralDecoderLayer}"
GRADIENT_CHECKPOINTING="${GRADIENT_CHECKPOINTING:-$(gpu_default True False)}"
FLASH_ATTN="${FLASH_ATTN:-$(gpu_default 1 0)}"
TRAIN_EXTRA_ARGS="${TRAIN_EXTRA_ARGS:-}"

require_split_num
require_model PIVOT "$PIVOT"
require_models SOURCES "${SOURCE_LIST[@]}"
require_script FuseChat/train/train.py
require_command torchrun "it comes with PyTorch"
for source in "${SOURCE_LIST[@]}"; do
  for i in $(split_indices); do
    require_outputs "filtered aligned set" filter_nan.sh "$(fnan_dir "$source" "$i")"
  done
done

launcher=(torchrun --nproc_per_node "$NPROC")
if [[ -n "$MASTER_PORT" ]]; then launcher+=(--master_port "$MASTER_PORT"); else launcher+=(--standalone); fi

fuse() {  # fuse SOURCE
  local source="$1" data=()
  for i in $(split_indices); do data+=("$(fnan_dir "$source" "$i")"); done
  local args=(
    --model_name_or_path "$(model_dir "$PIVOT")"
    --data_path "$(comma_list "${data[@]}")"
    --output_dir "$(ckpt_dir "$source")"
    --num_train_epochs "$NUM_EPOCHS"
    --max_steps "$MAX_STEPS"
    --per_device_train_batch_size "$TRAIN_BATCH_SIZE"
    --per_device_eval_batch_size "$TRAIN_BATCH_SIZE"
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --eval_strategy no
    --save_strategy "$SAVE_STRATEGY"
    --save_total_limit 5
    --learning_rate "$LEARNING_RATE"
    --weight_decay 0.
    --warmup_ratio "$WARMUP_RATIO"
    --lr_scheduler_type cosine
    --logging_steps 1
    --report_to none
    --model_max_length "$MODEL_MAX_LENGTH"
    --gradient_checkpointing "$GRADIENT_CHECKPOINTING"
    --conv_temp "$CONV_TEMP"
    --lazy_preprocess True
    --do_train
    --do_fuse True
    --fuse_with_ref_model True
    --fuse_loss_type "$FUSE_LOSS_TYPE"
    --fuse_temperature "$FUSE_TEMPERATURE"
    --lm_loss_weight "$LM_LOSS_WEIGHT"
    --dataloader_num_workers "$DATALOADER_WORKERS"
    --remove_unused_columns False
  )
  case "$PRECISION" in
    bf16) args+=(--bf16 True) ;;
    fp16) args+=(--fp16 True) ;;
    fp32) ;;
    *) die "PRECISION must be bf16, fp16 or fp32, got '$PRECISION'" ;;
  esac
  if [[ "$ON_GPU" == 1 ]]; then args+=(--tf32 True); else args+=(--use_cpu True); fi
  if [[ -n "$FSDP" ]]; then args+=(--fsdp "$FSDP" --fsdp_transformer_layer_cls_to_wrap "$FSDP_LAYER"); fi
  if [[ "$FLASH_ATTN" == 1 ]]; then args+=(--flash_attn_transformers True); fi
  read -r -a extra <<<"$TRAIN_EXTRA_ARGS"
  # train.py moves the final model's config.json into place last; checkpoint-* folders without it
  # mean an interrupted run, which train.py resumes.
  run_step pairwise_fusion "$(model_name "$source")" "$(ckpt_dir "$source")/config.json" \
    "${launcher[@]}" "$PROJ_PATH/FuseChat/train/train.py" "${args[@]}" "${extra[@]}" "${SCRIPT_ARGS[@]}"
}

SCRIPT_ARGS=("$@")
for source in "${SOURCE_LIST[@]}"; do
  fuse "$source"
done
