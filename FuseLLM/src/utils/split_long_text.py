"""1. Split long texts so that every piece fits the three tokenizers (docs/design.md 12.1).

    python ./src/utils/split_long_text.py \
      --base_model_name_or_path ../models/llama-2-7b-tiny \
      --blending_model_name_or_path ../models/open_llama_7b_v2-tiny \
      --another_blending_model_name_or_path ../models/mpt-7b-tiny \
      --dataset ../data/fusellm_minipile --dataset_save_dir ../data/fusellm_minipile_split \
      --cache_dir .cache --block_size 2048 --preprocessing_num_workers 80
"""

if __name__ == "__main__": from fusechat.fusellm.cli import split_long_text_cli; raise SystemExit(split_long_text_cli())
