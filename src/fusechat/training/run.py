"""train.py's main(): parse, check the data, train, save (docs/design.md 8).

The final model goes to output_dir (safetensors) with the tokenizer, whose chat template renders
the run's conversation template, and the trainer state. The run resumes from the latest
``checkpoint-*`` in output_dir when there is one.

Debugging: with ``FUSECHAT_LOG_ROW_IDS=1`` every process appends the ids of the rows it collates
to ``output_dir/row_ids.rank{RANK}.txt``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import run_cli
from ..modeling import check_model_path, load_causal_lm, load_config, load_tokenizer, model_turn_separator
from ..provenance import check_sets_tokenizer
from ..storage import check_output_dir, claim_output_dir, split_paths
from ..templates import chat_template_jinja, get_template, tokenizer_adds_bos
from .arguments import parse_args
from .checkpoints import check_resume_checkpoint, latest_complete_checkpoint, save_final
from .collator import TrainCollator
from .datasets import build_sets
from .trainer import FuseTrainer, MicroBatchMeanTrainer

logger = logging.getLogger(__name__)

ROW_LOG_ENV = "FUSECHAT_LOG_ROW_IDS"


def attach_chat_template(tokenizer, conv_temp: str, separator: str | None = None) -> None:
    tokenizer.chat_template = chat_template_jinja(get_template(conv_temp), separator or tokenizer.eos_token,
                                                  tokenizer_adds_bos(tokenizer))


def row_log_path(output_dir: str) -> str | None:
    if os.environ.get(ROW_LOG_ENV, "") in ("", "0"):
        return None
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return str(Path(output_dir) / f"row_ids.rank{os.environ.get('RANK', '0')}.txt")


def main(argv: list[str] | None = None):
    """Train; return the Trainer (its ``state`` holds the logged losses)."""

    model_args, data_args, args = parse_args(argv)
    check_model_path(model_args.model_name_or_path)
    data_paths = split_paths(data_args.data_path) + split_paths(data_args.eval_data_path or "")
    check_output_dir(args.output_dir, "--output_dir", [model_args.model_name_or_path, *data_paths])
    config = load_config(model_args.model_name_or_path, args.model_max_length, args.cache_dir)
    tokenizer = load_tokenizer(model_args.model_name_or_path, args.model_max_length, args.cache_dir)
    separator = model_turn_separator(model_args.model_name_or_path, tokenizer, data_args.separator, args.cache_dir)
    attach_chat_template(tokenizer, data_args.conv_temp, separator)
    check_sets_tokenizer(data_paths, tokenizer, model_args.model_name_or_path,
                         accept=data_args.accept_sets_without_provenance)
    if args.resume_from_checkpoint:
        check_resume_checkpoint(args.resume_from_checkpoint)
    checkpoint = args.resume_from_checkpoint or latest_complete_checkpoint(args.output_dir)
    # All data checks happen here, before the model is loaded.
    vocab_size = config.get_text_config().vocab_size
    train_set, eval_set = build_sets(data_args, args, tokenizer, vocab_size, separator)
    collator = TrainCollator(tokenizer.pad_token_id, args.model_max_length, args.pad_to_multiple_of,
                             fuse=args.do_fuse, fuse_with_ref_model=args.fuse_with_ref_model,
                             row_log_path=row_log_path(args.output_dir))

    # As the reference: weights in bfloat16 under --bf16; fp16 autocast needs float32 weights.
    model = load_causal_lm(model_args.model_name_or_path, args.model_max_length,
                           load_in_half="bf16" if args.bf16 else "none",
                           flash_attn=args.flash_attn_transformers, cache_dir=args.cache_dir)
    model.config.use_cache = False
    claim_output_dir(args.output_dir)
    trainer_class = FuseTrainer if args.do_fuse else MicroBatchMeanTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                            data_collator=collator, processing_class=tokenizer)

    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)

    model.config.use_cache = True
    save_final(trainer, args.output_dir)
    return trainer


def cli(argv: list[str] | None = None) -> int:
    """Entry point of FuseChat/train/train.py and fusechat-train."""
    return run_cli(main, argv, prog="train.py")
