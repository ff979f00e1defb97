#!/usr/bin/env bash
# MT-Bench for one model (docs/design.md 10): generate answers, judge them, print the score tables.
#
#   scripts/eval_mt_bench.sh MODEL_DIR MODEL_ID
#
# Judging runs when a judge endpoint is configured (OPENAI_API_KEY, or OPENAI_BASE_URL for any
# OpenAI-compatible server); otherwise the script stops after generation. Every step resumes:
# rerun the same command after an interruption.
#
# Data files are not in the repository. FastChat's llm_judge layout under $DATA_DIR:
#   $DATA_DIR/mt_bench/question.jsonl   FastChat: fastchat/llm_judge/data/mt_bench/question.jsonl
#   $DATA_DIR/judge_prompts.jsonl       FastChat: fastchat/llm_judge/data/judge_prompts.jsonl
#   $DATA_DIR/mt_bench/reference_answer/gpt-4-0125-preview.jsonl
#                                       the corrected references for the gpt-4-0125-preview judge
#                                       (lm-sys/FastChat pull request #3158), as in the paper
# Outputs: $DATA_DIR/mt_bench/model_answer/$MODEL_ID.jsonl,
#          $DATA_DIR/mt_bench/model_judgment/${JUDGE_MODEL}_single.jsonl, $DATA_DIR/mt_bench/$MODEL_ID.png
set -euo pipefail
EVAL_CONV_TEMP=${CONV_TEMP-openchat_3.5}    # set CONV_TEMP= to use the tokenizer's chat template
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ $# -ne 2 ]; then
    echo "usage: $0 MODEL_DIR MODEL_ID" >&2
    exit 2
fi
MODEL_DIR=$1
MODEL_ID=$2
DATA_DIR=${DATA_DIR:-data}
BENCH_NAME=${BENCH_NAME:-mt_bench}
MAX_NEW_TOKEN=${MAX_NEW_TOKEN:-1024}
BATCH_SIZE=${BATCH_SIZE:-8}
NUM_GPUS_PER_MODEL=${NUM_GPUS_PER_MODEL:-1}
NUM_GPUS_TOTAL=${NUM_GPUS_TOTAL:-1}
JUDGE_MODEL=${JUDGE_MODEL:-gpt-4-0125-preview}
PARALLEL=${PARALLEL:-8}
for script in gen_model_answer gen_judgment show_result; do require_script "FuseChat/eval/$script.py"; done

"$PYTHON" "$PROJ_PATH/FuseChat/eval/gen_model_answer.py" \
    --model-path "$MODEL_DIR" --model-id "$MODEL_ID" \
    --data-dir "$DATA_DIR" --bench-name "$BENCH_NAME" \
    ${EVAL_CONV_TEMP:+--conv-temp "$EVAL_CONV_TEMP"} \
    --max-new-token "$MAX_NEW_TOKEN" --batch-size "$BATCH_SIZE" \
    --num-gpus-per-model "$NUM_GPUS_PER_MODEL" --num-gpus-total "$NUM_GPUS_TOTAL"

if [ -z "${OPENAI_API_KEY:-}" ] && [ -z "${OPENAI_BASE_URL:-}" ]; then
    echo "no judge endpoint (set OPENAI_API_KEY or OPENAI_BASE_URL): answers generated, judging skipped" >&2
    exit 0
fi

"$PYTHON" "$PROJ_PATH/FuseChat/eval/gen_judgment.py" \
    --data-dir "$DATA_DIR" --bench-name "$BENCH_NAME" \
    --judge-model "$JUDGE_MODEL" --model-list "$MODEL_ID" --parallel "$PARALLEL"

"$PYTHON" "$PROJ_PATH/FuseChat/eval/show_result.py" \
    --data-dir "$DATA_DIR" --bench-name "$BENCH_NAME" \
    --judge-model "$JUDGE_MODEL" --model-list "$MODEL_ID" \
    --plot-file "$DATA_DIR/$BENCH_NAME/$MODEL_ID.png"
