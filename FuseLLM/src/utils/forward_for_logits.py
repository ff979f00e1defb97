"""2. Top-10 logits and metric_ce of one model over one shard of the split corpus (docs/design.md 12.2).

Run once per model (pivot and both sources) and per shard i = 0..7:

    python ./src/utils/forward_for_logits.py \
      --model_name_or_path ../models/llama-2-7b-tiny \
      --dataset ../data/fusellm_minipile_split \
      --dataset_save_dir ../representations/llama_2_7b_representation_${i}_8 \
      --dataset_split_num 8 --dataset_index ${i} --cache_dir .cache --model_max_length 2048 \
      --training_mode full --load_in_half bf16 --batch_size 8 --preprocessing_num_workers 80 \
      --top_k_logits 10 --save_per_token_metric
"""

if __name__ == "__main__": from fusechat.fusellm.cli import forward_for_logits_cli; raise SystemExit(forward_for_logits_cli())
