#!/usr/bin/env bash
# One prepared check of the GPU paths with the published flags, at small scale, on one data-centre
# GPU (H100/H200 class) in under 8 minutes. Offline: it needs only the set-up line's pip installs
# (fixtures come from pip packages; the ~1B Mistral is random).
#
#   scripts/gpu_check.sh                 # GPU_CHECK_DIR=/some/folder keeps its outputs (default: a temp folder)
#
# It runs, and prints one table of:
#   1. representation capture (get_data_representation.py --load_in_half bf16 --flash_attn_transformers,
#      with and without --device_map auto) of SmolLM2-135M-Instruct and of a random ~1B Mistral with
#      OpenChat's vocabulary, over the sample conversations x4 at --model_max_length 2048: tokens/s, peak memory;
#   2. 30 fusion training steps of the ~1B Mistral under torchrun (train.py --bf16 True --tf32 True
#      --gradient_checkpointing True --flash_attn_transformers True, the published fuse flags), without
#      and with --fsdp "full_shard auto_wrap": step time, tokens/s, peak memory, MFU estimate;
#   3. fusechat-merge --cuda (FuseChat SCE of the pivot and the two trained targets);
#   4. MT-Bench generation of 8 questions with SmolLM2 (gen_model_answer.py): generated tokens/s.
# Attention: flash-attn when it is installed, else SDPA (printed, and recorded in the table).
# Exit status: 0 when every check passed, 1 on the first failure (its log is printed), 3 without a GPU.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python}"
STEPS=30
START=$SECONDS

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU available (torch.cuda.is_available() is False; $(command -v nvidia-smi >/dev/null \
&& echo "nvidia-smi present" || echo "no nvidia-smi")): nothing was checked. Run this on a GPU machine." >&2
  exit 3
fi
command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found (needed for peak memory)" >&2; exit 1; }

OUT="${GPU_CHECK_DIR:-$(mktemp -d -t fusechat_gpu_check.XXXXXX)}"
mkdir -p "$OUT/models" "$OUT/logs"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader -i "${CUDA_VISIBLE_DEVICES%%,*}")"
if "$PYTHON" -c "import flash_attn" 2>/dev/null; then
  ATTN=flash_attention_2
else
  ATTN=sdpa
  echo "note: flash-attn is not installed; --flash_attn_transformers falls back to SDPA attention (recorded as 'sdpa')"
fi
echo "gpu_check on $GPU_NAME, attention: $ATTN, outputs in $OUT"

TABLE="$OUT/table.tsv"
printf 'check\ttime (s)\ttokens/s\tpeak GiB\tnotes\n' >"$TABLE"
print_table() {
  echo
  echo "GPU check on $GPU_NAME ($((SECONDS - START)) s in all; attention: $ATTN)"
  awk -F'\t' '{for (i = 1; i <= NF; i++) {cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i)}
                if (NF > nf) nf = NF}
               END {for (r = 1; r <= NR; r++) {line = ""; for (i = 1; i <= nf; i++) line = line sprintf("%-" w[i] + 2 "s", cell[r, i]); print line}}' "$TABLE"
}

# ---- helpers ---------------------------------------------------------------------------------

PEAK_FILE="$OUT/logs/peak.txt"
watch_memory() {  # sample the GPU's used memory (MiB) every 200 ms into PEAK_FILE until killed
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${CUDA_VISIBLE_DEVICES%%,*}" -lms 200 \
    >"$PEAK_FILE" 2>/dev/null
}
BASE_MIB=0
# run_check NAME CMD...: run CMD with its output in logs/NAME.log; sets ELAPSED (s) and PEAK_GIB
# (peak used GPU memory above the idle level). A failure prints the log's end and exits 1.
run_check() {
  local name="$1"; shift
  local log="$OUT/logs/$name.log" start watcher
  echo "[$name] running (log: $log)"
  watch_memory & watcher=$!
  start=$(date +%s.%N)
  if ! "$@" >"$log" 2>&1; then
    kill "$watcher" 2>/dev/null || true
    echo "[$name] FAILED; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    print_table
    exit 1
  fi
  ELAPSED="$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')"
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  PEAK_GIB="$(awk -v base="$BASE_MIB" 'BEGIN{m=0} {if ($1+0 > m) m=$1+0} END{printf "%.1f", (m-base)/1024}' "$PEAK_FILE")"
  echo "[$name] done in $(printf '%.0f' "$ELAPSED") s, peak $PEAK_GIB GiB"
}
add_row() { printf '%s\t%.0f\t%s\t%s\t%s\n' "$1" "$ELAPSED" "$2" "$PEAK_GIB" "$3" >>"$TABLE"; }
BASE_MIB="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${CUDA_VISIBLE_DEVICES%%,*}")"

# ---- models and data -------------------------------------------------------------------------

SMOL="$OUT/models/smollm2-135m-instruct"
PIVOT="$OUT/models/mistral-1b-random"
SOURCE="$OUT/models/starling-tiny"
run_check fixtures "$PYTHON" -m fusechat.fixtures --out "$OUT/models" --models smollm2-135m-instruct,starling-tiny
# A random ~1B Mistral with OpenChat's vocabulary (the pivot's shape family), written in bfloat16.
run_check mistral_1b "$PYTHON" - "$PIVOT" <<'EOF'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig
from fusechat.fixtures import build_tokenizer
tok = AutoTokenizer.from_pretrained(str(build_tokenizer("openchat")))
config = MistralConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                       num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=8192,
                       sliding_window=None, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(sys.argv[1], safe_serialization=True)
tok.save_pretrained(sys.argv[1])
print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
EOF
PARAMS="$("$PYTHON" -c "
import json, sys
c = json.load(open(sys.argv[1] + '/config.json'))
h, i, l, v = c['hidden_size'], c['intermediate_size'], c['num_hidden_layers'], c['vocab_size']
kv = h // c['num_attention_heads'] * c['num_key_value_heads']
print(2 * v * h + l * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h)" "$PIVOT")"
DATA="$OUT/sample_x4.json"
"$PYTHON" - "$REPO/data/fusechat_sample.json" "$DATA" <<'EOF'
import json, sys
records = json.load(open(sys.argv[1]))
json.dump([dict(r, id=f"{r['id']}_{k}") for k in range(4) for r in records], open(sys.argv[2], "w"))
EOF

# ---- 1. representation capture ---------------------------------------------------------------

capture() {  # capture NAME MODEL_DIR EXTRA_FLAGS...
  local name="$1" model="$2"; shift 2
  run_check "capture_$name" "$PYTHON" "$REPO/FuseChat/train/get_data_representation.py" \
    --model_name_or_path "$model" --data_path "$DATA" \
    --dataset_save_dir "$OUT/representations/${name}_representation_split0" \
    --tknz_dataset_path "$OUT/representations/${name}_tknz_split0" \
    --model_max_length 2048 --load_in_half bf16 --batch_size 32 --top_k_logits 10 \
    --conv_temp openchat_3.5 --flash_attn_transformers --get_representation "$@"
  local tokens
  tokens="$(grep -oE '[0-9]+ conversations, [0-9]+ tokens' "$OUT/logs/capture_$name.log" | tail -1 | awk '{print $3}')"
  add_row "capture $name" "$(awk -v t="$tokens" -v s="$ELAPSED" 'BEGIN{printf "%.0f", t/s}')" \
    "$tokens tokens, load included; --load_in_half bf16 --flash_attn_transformers $*"
}
capture smollm2 "$SMOL"
capture smollm2_devmap "$SMOL" --device_map auto
capture mistral1b "$PIVOT" --device_map auto
capture starling "$SOURCE"

# The pivot's set with the same-vocabulary source's distributions (replace_model), NaN rows dropped.
FUSED="$OUT/aligned_representations/mistral1b_starling_representation_split0"
run_check replace_model "$PYTHON" "$REPO/FuseChat/train/replace_model.py" \
  --dataset_dir "$OUT/representations/mistral1b_representation_split0" \
  --replace_dataset_dir "$OUT/representations/starling_representation_split0" \
  --dataset_save_dir "$FUSED" --replace_model source --batch_size 1000
run_check filter_nan "$PYTHON" "$REPO/FuseChat/train/filter_nan.py" --input_data_dir "$FUSED" \
  --output_data_dir "${FUSED}_fnan"

# ---- 2. training -----------------------------------------------------------------------------

PEAK_TFLOPS="$(case "$GPU_NAME" in *H100*|*H200*|*H800*|*H20*) echo 989;; *A100*|*A800*) echo 312;; *L40S*) echo 362;; *) echo 0;; esac)"
train() {  # train NAME EXTRA_FLAGS...
  local name="$1"; shift
  local ckpt="$OUT/checkpoints/$name"
  run_check "train_$name" torchrun --standalone --nproc_per_node 1 "$REPO/FuseChat/train/train.py" \
    --model_name_or_path "$PIVOT" --data_path "${FUSED}_fnan" --bf16 True --output_dir "$ckpt" \
    --max_steps "$STEPS" --per_device_train_batch_size 4 --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 --evaluation_strategy no --save_strategy no --learning_rate 5e-6 \
    --weight_decay 0. --warmup_ratio 0.03 --lr_scheduler_type cosine --logging_steps 1 --tf32 True \
    --model_max_length 2048 --gradient_checkpointing True --conv_temp openchat_3.5 --lazy_preprocess True \
    --flash_attn_transformers True --report_to none --do_fuse True --fuse_with_ref_model True \
    --fuse_loss_type ce --fuse_temperature 1.0 --lm_loss_weight 0.9 --dataloader_num_workers 2 \
    --remove_unused_columns False --seed 42 "$@"
  # Tokens per step from the rows the sampler drew: the mean row length of the set (rows are real tokens only).
  local figures
  figures="$("$PYTHON" - "$ckpt/trainer_state.json" "${FUSED}_fnan" "$STEPS" "$PARAMS" "$PEAK_TFLOPS" <<'EOF'
import json, sys
from datasets import load_from_disk
state_path, data, steps, params, peak = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
state = json.load(open(state_path))
runtime = next(e["train_runtime"] for e in state["log_history"] if "train_runtime" in e)
lengths = [min(len(ids), 2048) for ids in load_from_disk(data)["train"]["input_ids"]]
tokens_per_step = 4 * sum(lengths) / len(lengths)
tps = tokens_per_step * steps / float(runtime)
mfu = f"{100 * 6 * params * tps / (peak * 1e12):.1f}%" if peak else "-"
print(f"{tps:.0f}\t{float(runtime) / steps:.3f} s/step, MFU {mfu} (6N rule, {params / 1e9:.2f}B params)")
EOF
)"
  add_row "train $STEPS steps $name" "${figures%%$'\t'*}" "${figures#*$'\t'}; $*"
}
train no_fsdp
train fsdp --fsdp "full_shard auto_wrap" --fsdp_transformer_layer_cls_to_wrap MistralDecoderLayer

# ---- 3. merge --------------------------------------------------------------------------------

RECIPE="$OUT/fusechat-sce.yml"
cat >"$RECIPE" <<EOF
models:
  - model: $PIVOT
  - model: $OUT/checkpoints/no_fsdp
  - model: $OUT/checkpoints/fsdp
merge_method: fusechat_sce
base_model: $PIVOT
parameters:
  select_topk: 0.1
dtype: bfloat16
EOF
run_check merge "$PYTHON" -m fusechat.merge.cli "$RECIPE" "$OUT/checkpoints/merged" --cuda
add_row "fusechat-merge --cuda" "-" "fusechat_sce of the pivot and both trained targets"

# ---- 4. MT-Bench generation ------------------------------------------------------------------

QUESTIONS="$REPO/data/mt_bench/question.jsonl"
if [[ ! -f "$QUESTIONS" ]]; then  # FastChat's file is not in the repository: 8 two-turn questions of that format
  QUESTIONS="$OUT/question.jsonl"
  "$PYTHON" - "$QUESTIONS" <<'EOF'
import json, sys
turns = [("writing", "Write a short note inviting a colleague to a team lunch.", "Make it more formal."),
         ("roleplay", "Pretend you are a museum guide and welcome a visitor.", "Now describe one painting."),
         ("reasoning", "If a train leaves at 3 pm and travels 2 hours, when does it arrive?", "And after 5 hours?"),
         ("math", "What is 17 times 23?", "Now divide the result by 391."),
         ("coding", "Write a Python function that reverses a string.", "Make it handle None."),
         ("extraction", "List the numbers in: 'I bought 3 apples and 12 pears.'", "Sum them."),
         ("stem", "Why is the sky blue?", "Explain it to a child."),
         ("humanities", "What is the capital of France?", "Name a famous museum there.")]
with open(sys.argv[1], "w") as f:
    for i, (category, first, second) in enumerate(turns, 1):
        f.write(json.dumps({"question_id": i, "category": category, "turns": [first, second]}) + "\n")
EOF
fi
ANSWERS="$OUT/model_answer/smollm2.jsonl"
run_check mt_bench "$PYTHON" "$REPO/FuseChat/eval/gen_model_answer.py" --model-path "$SMOL" --model-id smollm2 \
  --question-file "$QUESTIONS" --answer-file "$ANSWERS" --question-end 8 --max-new-token 256 --batch-size 8 \
  --dtype bfloat16
GEN_TOKENS="$("$PYTHON" - "$ANSWERS" "$SMOL" <<'EOF'
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[2])
answers = [json.loads(line) for line in open(sys.argv[1])]
print(sum(len(tok(t, add_special_tokens=False)["input_ids"]) for a in answers for t in a["choices"][0]["turns"]))
EOF
)"
add_row "MT-Bench generation, 8 questions" "$(awk -v t="$GEN_TOKENS" -v s="$ELAPSED" 'BEGIN{printf "%.0f", t/s}')" \
  "$GEN_TOKENS generated tokens (2 turns each), load included; --dtype bfloat16 --batch-size 8"

print_table
echo "all GPU checks passed"
