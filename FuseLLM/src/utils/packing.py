"""5. Pack all columns into 2048-token rows with token-weighted metrics (docs/design.md 12.5).

    python ./src/utils/packing.py \
      --dataset_dir ../aligned_representations/llama_2_open_llama_mpt_${i}_8 \
      --dataset_save_dir ../packed_representations/llama_2_open_llama_mpt_${i}_8 \
      --cache_dir .cache --model_max_length 2048 --preprocessing_num_workers 80 --batch_size 1000 \
      --metric_level sequence
"""

if __name__ == "__main__": from fusechat.fusellm.cli import packing_cli; raise SystemExit(packing_cli())
