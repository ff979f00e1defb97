"""FuseLLM's multi-source MinCE over aligned sets (docs/design.md 7).

    python FuseChat/train/fuse_multi.py \
      --dataset_dir aligned_representations/p_a_split0_fnan,aligned_representations/p_b_split0_fnan \
      --dataset_save_dir aligned_representations/p_all_split0 --mode fuse-all-mince
    python FuseChat/train/fuse_multi.py --fused_dataset_dir aligned_representations/p_all_split0 \
      --dataset_dir aligned_representations/p_c_split0_fnan --dataset_save_dir out --mode add-new
"""

if __name__ == "__main__": from fusechat.cli.fuse_multi import cli; raise SystemExit(cli())
