#!/usr/bin/env bash
# Stage 5: merge the pivot's pairwise-fused targets in parameter space (fusechat-merge, a
# mergekit-yaml with FuseChat's SCE and VaRM). The recipes name hub models, so this writes a copy of
# RECIPE with the local pivot and targets (next to the output, as {MERGED_DIR}.yml) and merges that.
#
#   RECIPE=mergekit/fusechat_configs/fusechat-sce.yml scripts/merge.sh
#
# Input: checkpoints/{pivot}_{source}_pairwise_fusion_ckpt for every source (or TARGETS, folders).
# Recipe: RECIPE (default mergekit/fusechat_configs/fusechat-sce.yml).
# Output: MERGED_DIR, by default checkpoints/{pivot}_{recipe name}, e.g. openchat_3.5_fusechat-sce.
# Extra fusechat-merge / mergekit-yaml options: MERGE_ARGS="--lazy-unpickle" (default: --cuda on GPUs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MERGE_ARGS="${MERGE_ARGS-$(gpu_default --cuda "")}"
MERGE_CMD="${MERGE_CMD:-fusechat-merge}"

require_model PIVOT "$PIVOT"
require_recipe
require_command "$MERGE_CMD" "install the project: pip install -e ."
if [[ -n "${TARGETS:-}" ]]; then
  read -r -a targets <<<"${TARGETS//,/ }"
  for target in "${targets[@]}"; do
    [[ -f "$target/config.json" ]] || die "target model not found: $target (no config.json); set TARGETS to model folders"
  done
else
  require_models SOURCES "${SOURCE_LIST[@]}"
  targets=()
  for source in "${SOURCE_LIST[@]}"; do targets+=("$(ckpt_dir "$source")"); done
  for target in "${targets[@]}"; do
    require_outputs "pairwise fusion checkpoint" pairwise_fusion.sh "$target/config.json"
  done
fi

merge_models() {
  local recipe_copy="$MERGED_DIR.yml"
  "$PYTHON" -m fusechat.drivers recipe "$RECIPE" "$recipe_copy" --pivot "$(model_dir "$PIVOT")" \
    --targets "$(comma_list "${targets[@]}")"
  cat "$recipe_copy"
  read -r -a extra <<<"$MERGE_ARGS"
  "$MERGE_CMD" "$recipe_copy" "$MERGED_DIR" "${extra[@]}"
}

# fusechat-merge moves the merged model into place only when it is complete.
run_step merge "$(basename "$MERGED_DIR")" "$MERGED_DIR" merge_models
