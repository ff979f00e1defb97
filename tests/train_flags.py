"""The published train.py command line and its CPU subset, shared by the training tests."""

# The pairwise-fusion command line of the FuseChat release, word for word.
PUBLISHED = [
    "--model_name_or_path", "openchat/openchat_3.5", "--data_path", "a,b", "--bf16", "True",
    "--output_dir", "ckpt", "--num_train_epochs", "3", "--per_device_train_batch_size", "4",
    "--per_device_eval_batch_size", "4", "--gradient_accumulation_steps", "4", "--evaluation_strategy", "no",
    "--save_strategy", "epoch", "--save_steps", "10000", "--save_total_limit", "5", "--learning_rate", "5e-6",
    "--weight_decay", "0.", "--warmup_ratio", "0.03", "--lr_scheduler_type", "cosine", "--logging_steps", "1",
    "--fsdp", "full_shard auto_wrap", "--fsdp_transformer_layer_cls_to_wrap", "MistralDecoderLayer",
    "--tf32", "True", "--model_max_length", "2048", "--gradient_checkpointing", "True",
    "--conv_temp", "openchat_3.5", "--lazy_preprocess", "True", "--flash_attn_transformers", "True",
    "--do_train", "--do_fuse", "--fuse_with_ref_model", "True", "--fuse_loss_type", "ce",
    "--fuse_temperature", "1.0", "--lm_loss_weight", "0.9", "--dataloader_num_workers", "8",
    "--remove_unused_columns", "False",
]
GPU_ONLY = {"--bf16", "--fsdp", "--fsdp_transformer_layer_cls_to_wrap", "--tf32"}


def cpu_subset(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token in GPU_ONLY:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(token)
    return out + ["--use_cpu", "True", "--report_to", "none"]


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None
