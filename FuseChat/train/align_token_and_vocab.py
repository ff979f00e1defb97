"""Token alignment, vocabulary mapping and distribution alignment for a different-vocabulary source.

First, the token alignment over all tokenized splits (builds the count matrix and the mapping):

    python FuseChat/train/align_token_and_vocab.py \
      --base_model_name_or_path openchat/openchat_3.5 \
      --blending_model_name_or_path Qwen/Qwen1.5-72B-Chat \
      --base_dataset_dir representations/openchat_3.5_tknz_split0,...,representations/openchat_3.5_tknz_split3 \
      --blending_dataset_dir representations/qwen_tknz_split0,...,representations/qwen_tknz_split3 \
      --aligned_dataset_tknz_save_dir aligned_representations/openchat_qwen_tknz \
      --cache_dir .cache --preprocessing_num_workers 64 --batch_size 100 \
      --do_token_alignment --align_type default \
      --token_alignment_matrix_file aligned_representations/openchat_qwen_token_alignment_matrix.npz \
      --blending_to_base_file aligned_representations/qwen_blending_to_openchat_base.json

Then the distribution alignment, per split:

    python FuseChat/train/align_token_and_vocab.py \
      --base_model_name_or_path openchat/openchat_3.5 --blending_model_name_or_path Qwen/Qwen1.5-72B-Chat \
      --base_dataset_dir representations/openchat_3.5_representation_split0 \
      --blending_dataset_dir representations/qwen_representation_split0 \
      --aligned_dataset_save_dir aligned_representations/openchat_3.5_qwen_representation_split0 \
      --cache_dir .cache --preprocessing_num_workers 64 --batch_size 100 \
      --do_distribution_alignment --align_type default --metric_level sequence \
      --blending_to_base_file aligned_representations/qwen_blending_to_openchat_base.json \
      --use_token_alignment_matrix \
      --token_alignment_matrix_file aligned_representations/openchat_qwen_token_alignment_matrix.npz \
      --aligned_dataset_tknz_save_dir aligned_representations/openchat_qwen_tknz

The distribution pass reads each row's token alignment from the token pass's tokenized set
(``--aligned_dataset_tknz_save_dir``); without that flag it runs the DTW itself. The released
flag --model_max_length is accepted and has no effect (a warning says so).
"""

if __name__ == "__main__": from fusechat.cli.align_token_and_vocab import cli; raise SystemExit(cli())
