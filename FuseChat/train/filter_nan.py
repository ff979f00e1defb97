"""Drop the rows whose metric_ce or fused_metric_ce is NaN (docs/design.md 7).

    python FuseChat/train/filter_nan.py \
      --input_data_dir aligned_representations/openchat_3.5_qwen_representation_split0 \
      --output_data_dir aligned_representations/openchat_3.5_qwen_representation_split0_fnan
"""

if __name__ == "__main__": from fusechat.cli.filter_nan import cli; raise SystemExit(cli())
