"""Pairwise knowledge fusion (FuseChat stage 1) and plain SFT: fine-tune the pivot (docs/design.md 8).

The published command line runs as it is (flags renamed by newer transformers are translated):

    torchrun --nproc_per_node=8 --master_port=20001 FuseChat/train/train.py \\
      --model_name_or_path openchat/openchat_3.5 \\
      --data_path aligned_representations/split0,aligned_representations/split1 \\
      --bf16 True --output_dir checkpoints/openchat_starling \\
      --num_train_epochs 3 --per_device_train_batch_size 4 --per_device_eval_batch_size 4 \\
      --gradient_accumulation_steps 4 --evaluation_strategy "no" --save_strategy "epoch" \\
      --save_steps 10000 --save_total_limit 5 --learning_rate 5e-6 --weight_decay 0. \\
      --warmup_ratio 0.03 --lr_scheduler_type "cosine" --logging_steps 1 \\
      --fsdp "full_shard auto_wrap" --fsdp_transformer_layer_cls_to_wrap 'MistralDecoderLayer' \\
      --tf32 True --model_max_length 2048 --gradient_checkpointing True \\
      --conv_temp "openchat_3.5" --lazy_preprocess True --flash_attn_transformers True \\
      --do_train --do_fuse --fuse_with_ref_model True --fuse_loss_type "ce" \\
      --fuse_temperature 1.0 --lm_loss_weight 0.9 --dataloader_num_workers 8 \\
      --remove_unused_columns False

On a CPU, leave out --bf16, --fsdp*, --tf32 and add --use_cpu True. Without --do_fuse the script
trains plain SFT: on a representation set with --train_baseline, else on a JSON corpus.
"""

if __name__ == "__main__": from fusechat.training.run import cli; raise SystemExit(cli())
