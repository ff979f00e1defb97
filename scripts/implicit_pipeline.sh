#!/usr/bin/env bash
# Implicit fusion (FuseChat-3.0, WRPO; docs/implicit.md): sample every source, score, build, train.
#
#   MODE=fusechat3: decode -> annotate (per source) -> build -> sft -> dpo
#   MODE=wrpo:      decode -> annotate (per source) -> build (1/3 SFT, 2/3 WRPO prompts) -> sft ->
#                   decode + annotate the target-SFT model -> build (wrpo rows) -> wrpo
#
#   TARGET=models/Llama-3.1-8B-Instruct SOURCES="models/gemma-2-27b-it models/Qwen2.5-72B-Instruct" \
#   PROMPTS=data/prompts.jsonl REWARD_MODEL=models/ArmoRM-Llama3-8B-v0.1 scripts/implicit_pipeline.sh
#
# Settings (environment): WORK (outputs, default work/implicit), SEEDS, TARGET_SEEDS, TEMPERATURE,
# TOP_P, TOP_K, REPETITION_PENALTY, MAX_TOKENS, BACKEND (hf|vllm), REWARD_MODEL (a folder, "verdict" or
# "table:FILE"), ANSWER (boxed|boxed-or-last-number), MARGIN, SEED, SFT_LR, DPO_LR, WRPO_LR, BETA,
# DPO_LOSS (sigmoid|sigmoid_norm), ALPHA, EPOCHS, BATCH_SIZE, GRAD_ACCUM, MAX_LENGTH, MAX_PROMPT_LENGTH, MAX_STEPS,
# WRPO_CONFIG (a released WRPO YAML). Steps whose outputs exist are skipped; OVERWRITE=1 redoes them.
set -euo pipefail

PYTHON="${PYTHON:-python}"
MODE="${MODE:-fusechat3}"
WORK="${WORK:-work/implicit}"
SEEDS="${SEEDS:-13,21,42,79,100}"
TARGET_SEEDS="${TARGET_SEEDS:-$SEEDS}"
TEMPERATURE="${TEMPERATURE:-0.8}" TOP_P="${TOP_P:-0.95}" TOP_K="${TOP_K:-none}"
REPETITION_PENALTY="${REPETITION_PENALTY:-none}" MAX_TOKENS="${MAX_TOKENS:-4096}" BACKEND="${BACKEND:-hf}"
REWARD_MODEL="${REWARD_MODEL:-verdict}" ANSWER="${ANSWER:-boxed}" MARGIN="${MARGIN:-0.01,0.1}" SEED="${SEED:-42}"
SFT_LR="${SFT_LR:-5e-6}" DPO_LR="${DPO_LR:-1e-6}" WRPO_LR="${WRPO_LR:-3e-7}" BETA="${BETA:-0.01}"
DPO_LOSS="${DPO_LOSS:-sigmoid}" ALPHA="${ALPHA:-0.1}" EPOCHS="${EPOCHS:-1}" BATCH_SIZE="${BATCH_SIZE:-2}"
GRAD_ACCUM="${GRAD_ACCUM:-1}" MAX_LENGTH="${MAX_LENGTH:-2048}" MAX_PROMPT_LENGTH="${MAX_PROMPT_LENGTH:-1800}"
MAX_STEPS="${MAX_STEPS:--1}"
WRPO_CONFIG="${WRPO_CONFIG:-}" OVERWRITE="${OVERWRITE:-0}"
read -r -a SOURCE_LIST <<<"${SOURCES//,/ }"

die() { echo "error: $*" >&2; exit 1; }
[[ -n "${TARGET:-}" && -d "$TARGET" ]] || die "TARGET must be a model folder (got '${TARGET:-}')"
[[ ${#SOURCE_LIST[@]} -gt 0 ]] || die "SOURCES must list at least one model folder"
for source in "${SOURCE_LIST[@]}"; do [[ -d "$source" ]] || die "SOURCES: no model folder $source"; done
[[ -f "${PROMPTS:-}" ]] || die "PROMPTS must be a prompts.jsonl file (got '${PROMPTS:-}')"
[[ "$MODE" == fusechat3 || "$MODE" == wrpo ]] || die "MODE must be fusechat3 or wrpo"

imf() { "$PYTHON" -m fusechat.implicit "$@"; }
step() {  # step OUTPUT COMMAND...: run unless OUTPUT exists
  local out="$1"; shift
  if [[ -e "$out" && "$OVERWRITE" != 1 ]]; then echo "== skip $(basename "$out") (exists)"; return; fi
  echo "== $*"; local start=$SECONDS
  "$@"
  echo "== done in $((SECONDS - start)) s: $out"
}
sample_and_score() {  # sample_and_score MODEL NAME PROMPTS SEEDS
  step "$WORK/samples/$2.jsonl" imf decode --model "$1" --source "$2" --prompts "$3" --seeds "$4" \
    --out "$WORK/samples/$2.jsonl" --temperature "$TEMPERATURE" --top-p "$TOP_P" --top-k "$TOP_K" \
    --repetition-penalty "$REPETITION_PENALTY" --max-tokens "$MAX_TOKENS" --backend "$BACKEND"
  step "$WORK/scored/$2.jsonl" imf annotate --prompts "$3" --samples "$WORK/samples/$2.jsonl" \
    --out "$WORK/scored/$2.jsonl" --reward-model "$REWARD_MODEL" --answer "$ANSWER"
}
train_flags=(--epochs "$EPOCHS" --batch-size "$BATCH_SIZE" --grad-accum "$GRAD_ACCUM" --max-length "$MAX_LENGTH"
             --max-steps "$MAX_STEPS" --seed "$SEED")

scored=()
for source in "${SOURCE_LIST[@]}"; do
  name="$(basename "$source")"
  sample_and_score "$source" "$name" "$PROMPTS" "$SEEDS"
  scored+=("$WORK/scored/$name.jsonl")
done
scored_list="$(IFS=,; echo "${scored[*]}")"
target_name="$(basename "$TARGET")"
MODELS_OUT="$WORK/$MODE"   # the trained targets of this mode

if [[ "$MODE" == fusechat3 ]]; then
  step "$WORK/build" imf build --mode fusechat3 --prompts "$PROMPTS" --scored "$scored_list" --out "$WORK/build" \
    --margin="$MARGIN" --seed "$SEED"
  step "$MODELS_OUT/$target_name-SFT" imf sft --mode fusechat3 --model "$TARGET" --data "$WORK/build/sft.jsonl" \
    --out "$MODELS_OUT/$target_name-SFT" --learning-rate "$SFT_LR" "${train_flags[@]}"
  step "$MODELS_OUT/$target_name-SFT-DPO" imf dpo --model "$MODELS_OUT/$target_name-SFT" --data "$WORK/build/dpo.jsonl" \
    --out "$MODELS_OUT/$target_name-SFT-DPO" --loss "$DPO_LOSS" --beta "$BETA" --learning-rate "$DPO_LR" "${train_flags[@]}"
else
  step "$WORK/wrpo_split" imf build --mode wrpo --prompts "$PROMPTS" --scored "$scored_list" --out "$WORK/wrpo_split" \
    --seed "$SEED"
  step "$MODELS_OUT/$target_name-SFT" imf sft --mode wrpo --model "$TARGET" --data "$WORK/wrpo_split/sft.jsonl" \
    --out "$MODELS_OUT/$target_name-SFT" --learning-rate "$SFT_LR" "${train_flags[@]}"
  sample_and_score "$MODELS_OUT/$target_name-SFT" "$target_name-SFT-wrpo" "$WORK/wrpo_split/wrpo_prompts.jsonl" "$TARGET_SEEDS"
  step "$WORK/wrpo_rows" imf build --mode wrpo --prompts "$PROMPTS" \
    --scored "$scored_list" --target-scored "$WORK/scored/$target_name-SFT-wrpo.jsonl" --out "$WORK/wrpo_rows" --seed "$SEED"
  # A released WRPO YAML sets the loss and training settings; without one, the variables above do.
  settings=(--beta "$BETA" --alpha "$ALPHA" --learning-rate "$WRPO_LR" --max-prompt-length "$MAX_PROMPT_LENGTH"
            "${train_flags[@]}")
  [[ -n "$WRPO_CONFIG" ]] && settings=(--config "$WRPO_CONFIG")
  step "$MODELS_OUT/$target_name-SFT-WRPO" imf wrpo --model "$MODELS_OUT/$target_name-SFT" \
    --data "$WORK/wrpo_rows/wrpo.jsonl" --out "$MODELS_OUT/$target_name-SFT-WRPO" "${settings[@]}"
fi
echo "== implicit fusion ($MODE) finished: $WORK"
