# Settings and helpers shared by the stage drivers. Source it; do not run it.
#
# Every setting is an environment variable with a default (the published FuseChat-7B-v2.0 run);
# override any of them on the command line, e.g.  SPLIT_NUM=2 GPUS=0,1 scripts/pipeline.sh
#
# Models are folder names under MODELS_DIR (or paths, when they contain a "/"); the folder's base
# name names the outputs: representations/{model}_representation_split{i},
# aligned_representations/{pivot}_{source}_representation_split{i}_fnan,
# checkpoints/{pivot}_{source}_pairwise_fusion_ckpt.

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJ_PATH="${PROJ_PATH:-$(dirname "$SCRIPTS_DIR")}"   # the repository (FuseChat/train/*.py live here)
WORK_DIR="${WORK_DIR:-$PROJ_PATH}"                    # where models/, representations/, ... live
DATA_PATH="${DATA_PATH:-$PROJ_PATH/data/fusechat_v1_clean_split_2048_filter_wrong.json}"
MODELS_DIR="${MODELS_DIR:-$WORK_DIR/models}"
REP_DIR="${REP_DIR:-$WORK_DIR/representations}"
ALIGNED_DIR="${ALIGNED_DIR:-$WORK_DIR/aligned_representations}"
CKPT_DIR="${CKPT_DIR:-$WORK_DIR/checkpoints}"
LOG_DIR="${LOG_DIR:-$WORK_DIR/logs}"

PIVOT="${PIVOT:-openchat_3.5}"
SOURCES="${SOURCES-Starling-LM-7B-alpha Nous-Hermes-2-SOLAR-10.7B Mixtral-8x7B-Instruct-v0.1 internlm2-chat-20b Qwen1.5-72B-Chat}"
SPLIT_NUM="${SPLIT_NUM:-4}"
MODEL_MAX_LENGTH="${MODEL_MAX_LENGTH:-2048}"
CONV_TEMP="${CONV_TEMP:-openchat_3.5}"
CACHE_DIR="${CACHE_DIR:-}"
NUM_WORKERS="${NUM_WORKERS:-8}"          # --preprocessing_num_workers of the data stages
OVERWRITE="${OVERWRITE:-0}"              # 1: redo steps whose outputs exist
PYTHON="${PYTHON:-python}"
read -r -a SOURCE_LIST <<<"${SOURCES//,/ }"   # spaces or commas both separate names
RECIPE="${RECIPE:-$PROJ_PATH/mergekit/fusechat_configs/fusechat-sce.yml}"   # merge recipe
MERGED_DIR="${MERGED_DIR:-$CKPT_DIR/$(basename "$PIVOT")_$(basename "$RECIPE" .yml)}"

# GPUS: comma-separated device ids (CUDA_VISIBLE_DEVICES style); empty runs everything on the CPU.
# Unset, it lists the GPUs nvidia-smi reports.
if [[ -z "${GPUS+set}" ]]; then
  GPUS="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, - || true)"
fi
if [[ -z "$GPUS" ]]; then
  export CUDA_VISIBLE_DEVICES=""   # CPU run: keep any GPU out of it
fi

# Defaults that depend on having GPUs: the published bf16 / flash-attention / FSDP run on GPUs,
# plain float32 on a CPU.
if [[ -n "$GPUS" ]]; then ON_GPU=1; else ON_GPU=0; fi
gpu_default() {  # gpu_default VALUE_WITH_GPUS VALUE_ON_CPU
  if [[ "$ON_GPU" == 1 ]]; then echo "$1"; else echo "$2"; fi
}

STEPS_FILE="$LOG_DIR/steps.tsv"   # one line per step: stage, unit, ran|skipped, seconds, output

die() {
  echo "error: $*" >&2
  exit 1
}

rel() {  # a path relative to WORK_DIR, for messages
  local path="$1"
  echo "${path#"$WORK_DIR"/}"
}

model_dir() {  # a model's folder: a path when the name contains "/", else MODELS_DIR/name
  if [[ "$1" == */* ]]; then echo "$1"; else echo "$MODELS_DIR/$1"; fi
}

model_name() {  # the name used in output folder names
  basename "$1"
}

split_indices() {
  seq 0 $((SPLIT_NUM - 1))
}

rep_dir() { echo "$REP_DIR/$(model_name "$1")_representation_split$2"; }
tknz_dir() { echo "$REP_DIR/$(model_name "$1")_tknz_split$2"; }
aligned_dir() { echo "$ALIGNED_DIR/$(model_name "$PIVOT")_$(model_name "$1")_representation_split$2"; }
fnan_dir() { echo "$(aligned_dir "$1" "$2")_fnan"; }
ckpt_dir() { echo "$CKPT_DIR/$(model_name "$PIVOT")_$(model_name "$1")_pairwise_fusion_ckpt"; }

comma_list() {  # comma_list ITEM...: the items joined by commas, as the stage scripts take lists
  local IFS=,
  echo "$*"
}

# ---- checks, run before any work -------------------------------------------------------------

require_corpus() {
  [[ -f "$DATA_PATH" ]] || die "corpus not found: $DATA_PATH
  set DATA_PATH to a JSON list of ShareGPT records (FuseChat-Mixture: fusechat_v1_clean_split_2048_filter_wrong.json,
  or data/fusechat_sample.json for a small run)"
}

require_model() {  # require_model VARIABLE NAME: the model folder exists, else name the variable to set
  local variable="$1" name="$2" dir hub_id
  dir="$(model_dir "$name")"
  if [[ "$name" == */* ]]; then hub_id="$name"; else hub_id="ORG/$name"; fi
  [[ -f "$dir/config.json" ]] || die "model folder not found: $dir (no config.json)
  set $variable to folder names under MODELS_DIR=$MODELS_DIR (or to folder paths), or set MODELS_DIR;
  to fetch a model: huggingface-cli download $hub_id --local-dir $MODELS_DIR/$(model_name "$name")"
}

require_recipe() {
  [[ -f "$RECIPE" ]] || die "merge recipe not found: $RECIPE
  set RECIPE to a mergekit config, e.g. $PROJ_PATH/mergekit/fusechat_configs/fusechat-sce.yml"
}

require_models() {  # require_models VARIABLE NAME...
  local variable="$1"; shift
  [[ $# -gt 0 ]] || die "$variable is empty: name at least one model"
  for name in "$@"; do require_model "$variable" "$name"; done
}

require_script() {  # require_script FuseChat/train/x.py
  [[ -f "$PROJ_PATH/$1" ]] || die "stage script not found: $PROJ_PATH/$1 (set PROJ_PATH to the repository root)"
}

require_command() {
  command -v "$1" >/dev/null 2>&1 || die "command not found: $1 ($2)"
}

require_outputs() {  # require_outputs WHAT DRIVER PATH...: inputs made by an earlier stage exist
  local what="$1" driver="$2"; shift 2
  for path in "$@"; do
    [[ -e "$path" ]] || die "$what not found: $path
  run scripts/$driver first (or scripts/pipeline.sh), with the same PIVOT, SOURCES, SPLIT_NUM and WORK_DIR"
  done
}

require_split_num() {
  [[ "$SPLIT_NUM" =~ ^[1-9][0-9]*$ ]] || die "SPLIT_NUM must be a positive integer, got '$SPLIT_NUM'"
}

# ---- running steps ----------------------------------------------------------------------------

# run_step STAGE UNIT DONE_PATH CMD...
# Run CMD with its output in LOG_DIR/STAGE/UNIT.log, unless DONE_PATH exists (the stages write
# atomically, so an existing output is complete; OVERWRITE=1 redoes it) and was made by this very
# command (recorded in LOG_DIR/STAGE/UNIT.command, one argument a line): after DATA_PATH,
# MODEL_MAX_LENGTH or any other setting changed, the step stops naming what differs instead of
# skipping. An empty DONE_PATH always runs. A failure prints the end of the log and exits non-zero.
run_step() {
  local stage="$1" unit="$2" done_path="$3"; shift 3
  local log="$LOG_DIR/$stage/$unit.log" command_file="$LOG_DIR/$stage/$unit.command" start=$SECONDS
  mkdir -p "$LOG_DIR/$stage"
  if [[ -n "$done_path" && -e "$done_path" && "$OVERWRITE" != 1 ]]; then
    if [[ ! -f "$command_file" ]]; then
      die "[$stage] $unit: $(rel "$done_path") exists, but no record of the command that made it ($(rel "$command_file")); its settings cannot be checked: OVERWRITE=1 makes it again"
    fi
    local difference
    difference="$(diff "$command_file" <(printf '%s\n' "$@") | grep -m 2 '^[<>]' | paste -sd ' ' - || true)"
    if [[ -n "$difference" ]]; then
      die "[$stage] $unit: $(rel "$done_path") was made with other settings than this run's ($difference); OVERWRITE=1 makes it again"
    fi
    echo "[$stage] $unit: skipped, $(rel "$done_path") exists"
    printf '%s\t%s\tskipped\t0\t%s\n' "$stage" "$unit" "$done_path" >>"$STEPS_FILE"
    return 0
  fi
  echo "[$stage] $unit: running (log: $(rel "$log"))"
  if ! "$@" >"$log" 2>&1; then
    echo "[$stage] $unit: FAILED after $((SECONDS - start)) s; last lines of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
  printf '%s\n' "$@" >"$command_file"
  echo "[$stage] $unit: done in $((SECONDS - start)) s"
  printf '%s\t%s\tran\t%s\t%s\n' "$stage" "$unit" "$((SECONDS - start))" "$done_path" >>"$STEPS_FILE"
}

# run_on_gpu_groups FUNCTION ARG...: call FUNCTION ARG for every ARG, spreading the calls over
# GPU_GROUPS (space-separated CUDA_VISIBLE_DEVICES values, one per concurrent job; default: one
# job per GPU in GPUS, or a single CPU job). Returns non-zero when any call failed.
run_on_gpu_groups() {
  local function="$1"; shift
  local items=("$@") groups pids=() failed=0
  read -r -a groups <<<"${GPU_GROUPS:-${GPUS//,/ }}"
  [[ ${#groups[@]} -gt 0 ]] || groups=("")
  for g in "${!groups[@]}"; do
    (
      export CUDA_VISIBLE_DEVICES="${groups[$g]}"
      for ((k = g; k < ${#items[@]}; k += ${#groups[@]})); do
        "$function" "${items[$k]}" || exit 1
      done
    ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return "$failed"
}
