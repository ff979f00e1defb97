"""Tokenize a chat corpus split and capture a model's top-k next-token distributions.

    python FuseChat/train/get_data_representation.py \
      --model_name_or_path openchat/openchat_3.5 \
      --data_path data/fusechat_v1_clean_split_2048_filter_wrong.json \
      --dataset_save_dir representations/openchat_3.5_representation_split0 \
      --tknz_dataset_path representations/openchat_3.5_tknz_split0 \
      --cache_dir .cache --model_max_length 2048 --load_in_half bf16 --batch_size 32 \
      --top_k_logits 10 --save_per_token_metric --no_assert --conv_temp openchat_3.5 \
      --flash_attn_transformers --mask_instruction --dataset_split_num 4 --dataset_index 0 \
      --device_map auto --get_representation
"""

if __name__ == "__main__": from fusechat.cli.get_data_representation import cli; raise SystemExit(cli())
