"""Put a same-vocabulary source's distributions into the pivot's rows (docs/design.md 5).

    python FuseChat/train/replace_model.py \
      --dataset_dir representations/openchat_3.5_representation_split0 \
      --replace_dataset_dir representations/starling_representation_split0 \
      --dataset_save_dir aligned_representations/openchat_3.5_starling_representation_split0 \
      --preprocessing_num_workers 64 --batch_size 1000 --replace_model source
"""

if __name__ == "__main__": from fusechat.cli.replace_model import cli; raise SystemExit(cli())
