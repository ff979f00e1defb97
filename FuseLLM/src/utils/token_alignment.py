"""4. Align one source onto the pivot and add its columns *_<index> (docs/design.md 12.4).

Source 0 on the pivot set, then source 1 on run 0's output, per shard i:

    python ./src/utils/token_alignment.py \
      --base_model_name_or_path ../models/llama-2-7b-tiny \
      --blending_model_name_or_path ../models/open_llama_7b_v2-tiny \
      --base_dataset_dir ../representations/llama_2_7b_representation_${i}_8 \
      --blending_dataset_dir ../representations/open_llama_7b_v2_representation_${i}_8 \
      --dataset_save_dir ../aligned_representations/llama_2_open_llama_${i}_8 \
      --cache_dir .cache --model_max_length 2048 --preprocessing_num_workers 80 --batch_size 100 \
      --blending_model_index 0 --vocab_align_type soft \
      --vocab_mapping_save_dir ../aligned_representations/llama_2_open_llama_vocab_mapping.json \
      --metric_level sequence
"""

if __name__ == "__main__": from fusechat.fusellm.cli import token_alignment_cli; raise SystemExit(token_alignment_cli())
