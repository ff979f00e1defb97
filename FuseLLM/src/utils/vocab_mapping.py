"""3. Vocabulary mapping source piece -> pivot piece by minimum edit distance (docs/design.md 12.3).

Run once per source:

    python ./src/utils/vocab_mapping.py \
      --base_model_name_or_path ../models/llama-2-7b-tiny \
      --blending_model_name_or_path ../models/open_llama_7b_v2-tiny \
      --dataset_dir ../data/fusellm_minipile_split \
      --vocab_mapping_save_dir ../aligned_representations/llama_2_open_llama_vocab_mapping.json \
      --cache_dir .cache --model_max_length 2048 --vocab_mapping_type default --num_process 1
"""

if __name__ == "__main__": from fusechat.fusellm.cli import vocab_mapping_cli; raise SystemExit(vocab_mapping_cli())
