#!/usr/bin/env bash
# FuseLLM's benchmarks covered by lm-evaluation-harness, beside the published FuseLLM-7B / Llama-2-7B figures.
#
#   scripts/eval_fusellm.sh MODEL_DIR [--output_dir DIR] [--benchmarks BBH,ARC-easy,...] [--limit N]
#                           [--batch_size B] [--device cuda] [--include_path DIR --extra "Name=task:metric:shots"]
#
# Writes MODEL_DIR/eval_fusellm/{results.json,table.md} (or --output_dir) and prints the table.
# DEVICE (default: cuda when available, else cpu) and BATCH_SIZE (default 8) set the defaults.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 MODEL_DIR [options of python -m fusechat.fusellm.evaluation]" >&2
    exit 2
fi
MODEL_DIR=$1
shift
DEVICE=${DEVICE:-$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
exec python -m fusechat.fusellm.evaluation "$MODEL_DIR" --device "$DEVICE" --batch_size "${BATCH_SIZE:-8}" "$@"
