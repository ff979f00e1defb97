"""FuseLLM training: continual training of the pivot with distillation from its own and the aligned
sources' top-k distributions (MinCE per packed row), or plain causal-LM without --do_distill.

The published command runs as it is (from FuseLLM/, paths made local):

    deepspeed --master_port=20001 ./src/train.py --training_mode full \\
      --deepspeed ./config/zero_stage2_config.json --model_name_or_path Llama-2-7b-hf \\
      --output_dir ckpt --model_max_length 2048 --logging_steps 1 --save_strategy steps \\
      --save_steps 500 --save_total_limit 1 --evaluation_strategy steps --per_device_eval_batch_size 1 \\
      --logging_strategy steps --eval_steps 500 --do_train --do_eval --bf16 True --tf32 True \\
      --warmup_ratio 0.008 --lr_scheduler_type cosine --dataset_name split0,split1,... \\
      --per_device_train_batch_size 1 --gradient_accumulation_steps 16 --num_train_epochs 1 \\
      --optim adamw_torch --adam_beta1 0.9 --adam_beta2 0.95 --learning_rate 1e-5 --weight_decay 0.1 \\
      --max_grad_norm 1.0 --seed 42 --gradient_checkpointing True --use_flash_attn True \\
      --report_to tensorboard --do_distill --distill_with_ref_model True \\
      --distill_with_aligned_model_0 True --distill_with_aligned_model_1 True --distill_loss_type ce \\
      --distill_teacher_temperature 1.0 --lm_loss_weight 0.9 --distill_greater_as_gt True \\
      --distill_greater_as_gt_type hard --dataloader_num_workers 10 --remove_unused_columns False

torchrun --nproc_per_node N ./src/train.py ... works as well. On a CPU, leave out --deepspeed,
--bf16, --tf32 and --use_flash_attn and add --use_cpu True.
"""

if __name__ == "__main__": from fusechat.fusellm.train import cli; raise SystemExit(cli())
