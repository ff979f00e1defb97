#!/usr/bin/env bash
# AlpacaEval 2.0 generation for one model (docs/design.md 10); alpaca_eval itself does the judging.
#
#   scripts/eval_alpaca.sh MODEL_DIR MODEL_ID
#
# With the default template every prompt is the paper's
#   GPT4 Correct User: {instruction}<|end_of_turn|>GPT4 Correct Assistant:
# The 805 instructions are not in the repository: alpaca_eval.json of the Hugging Face dataset
# tatsu-lab/alpaca_eval, saved as $INSTRUCTION_FILE. Output (resumable: rerun after an
# interruption): $OUTPUT_FILE, a JSON list of {instruction, output, generator, dataset}. Then:
#   pip install alpaca-eval
#   alpaca_eval --model_outputs "$OUTPUT_FILE" --annotators_config weighted_alpaca_eval_gpt4_turbo
# (the AlpacaEval 2.0 judge; it reports the length-controlled win rate).
set -euo pipefail
EVAL_CONV_TEMP=${CONV_TEMP-openchat_3.5}    # set CONV_TEMP= to use the tokenizer's chat template
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ $# -ne 2 ]; then
    echo "usage: $0 MODEL_DIR MODEL_ID" >&2
    exit 2
fi
MODEL_DIR=$1
MODEL_ID=$2
INSTRUCTION_FILE=${INSTRUCTION_FILE:-data/alpaca_eval/alpaca_eval.json}
OUTPUT_FILE=${OUTPUT_FILE:-data/alpaca_eval/model_outputs/$MODEL_ID.json}
MAX_NEW_TOKEN=${MAX_NEW_TOKEN:-2048}
TEMPERATURE=${TEMPERATURE:-0.0}
BATCH_SIZE=${BATCH_SIZE:-8}
require_script FuseChat/eval/gen_alpaca_eval.py

"$PYTHON" "$PROJ_PATH/FuseChat/eval/gen_alpaca_eval.py" \
    --model-path "$MODEL_DIR" --model-id "$MODEL_ID" \
    --instruction-file "$INSTRUCTION_FILE" --output-file "$OUTPUT_FILE" \
    ${EVAL_CONV_TEMP:+--conv-temp "$EVAL_CONV_TEMP"} \
    --max-new-token "$MAX_NEW_TOKEN" --temperature "$TEMPERATURE" --batch-size "$BATCH_SIZE"
