"""get_data_representation: tokenize a chat corpus split and capture one model's representations."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from .. import data as corpus
from ..errors import InputError
from ..modeling import load_causal_lm, load_tokenizer, model_turn_separator, output_vocab_size
from ..representation import CaptureOptions, representation_dataset, select_records, tokenize_records
from ..schema import SPLIT, TOKENIZED_COLUMNS, require_columns, row_lengths, train_split
from ..storage import load_dataset_dir, save_dataset_atomic, write_json
from ..templates import get_template

logger = logging.getLogger("get_data_representation")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--data_path", required=True, help="JSON list of ShareGPT-style conversation records")
    p.add_argument("--tknz_dataset_path", required=True, help="tokenized set (reused if it exists)")
    p.add_argument("--dataset_save_dir", default=None, help="representation set (with --get_representation)")
    p.add_argument("--dataset_sample_prop", type=float, default=None)
    p.add_argument("--dataset_split_num", type=int, default=None)
    p.add_argument("--dataset_index", type=int, default=None)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--load_in_half", default="none", choices=["none", "fp16", "bf16"])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    p.add_argument("--top_k_logits", type=int, default=10)
    p.add_argument("--save_per_token_metric", action="store_true")
    p.add_argument("--no_assert", action="store_true", help="keep NaN rows (filter_nan drops them later)")
    p.add_argument("--conv_temp", default="openchat_3.5")
    p.add_argument("--separator", default=None,
                   help="token that closes a turn; default: the model's (its eos, or <|im_end|>/<|eot_id|>/"
                        "<end_of_turn>/<sep> for InternLM2/Llama-3/Gemma/Yuan, as the released train.py)")
    p.add_argument("--flash_attn_transformers", action="store_true")
    p.add_argument("--mask_instruction", action="store_true")
    p.add_argument("--device_map", default=None)
    p.add_argument("--get_representation", action="store_true",
                   help="capture representations; without it only the tokenized set is written")
    p.add_argument("--skip_invalid", action="store_true",
                   help="drop invalid records and list them in <tknz_dataset_path>.skipped.json")
    return p


def tokenized_set(args, tokenizer):
    """Load the tokenized set if it exists, else build and save it."""
    path = Path(args.tknz_dataset_path)
    if path.exists():
        logger.info("reusing the tokenized set at %s", path)
        tokenized = train_split(load_dataset_dir(path, "tokenized set"), str(path))
        require_columns(tokenized, TOKENIZED_COLUMNS, str(path))
        return tokenized
    records = select_records(corpus.read_corpus(args.data_path), args.dataset_sample_prop,
                             args.dataset_split_num, args.dataset_index)
    valid, problems = corpus.validate_records(records, skip_invalid=args.skip_invalid)
    if args.skip_invalid:
        report = path.with_name(path.name + ".skipped.json")
        write_json(report, [{"id": p.record_id, "reason": p.reason} for p in problems])
        logger.warning("skipped %d invalid record(s); listed in %s", len(problems), report)
    if not valid:
        raise InputError(f"{args.data_path}: no valid records in this split")
    separator = model_turn_separator(args.model_name_or_path, tokenizer, args.separator, args.cache_dir)
    tokenized = tokenize_records(valid, tokenizer, get_template(args.conv_temp), args.model_max_length,
                                 args.mask_instruction, args.preprocessing_num_workers, separator)
    from datasets import DatasetDict

    save_dataset_atomic(DatasetDict({SPLIT: tokenized}), path, args.preprocessing_num_workers)
    return train_split(load_dataset_dir(path, "tokenized set"), str(path))


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    get_template(args.conv_temp)  # an unknown template fails before any work
    if args.get_representation and not args.dataset_save_dir:
        raise InputError("--get_representation needs --dataset_save_dir")
    if args.top_k_logits < 1:
        raise InputError(f"--top_k_logits must be at least 1, got {args.top_k_logits}")
    tokenizer = load_tokenizer(args.model_name_or_path, args.model_max_length, args.cache_dir)
    tokenized = tokenized_set(args, tokenizer)
    logger.info("%d conversations, %d tokens", len(tokenized), int(row_lengths(tokenized).sum()))
    if not args.get_representation:
        return

    import torch
    from datasets import DatasetDict

    model = load_causal_lm(args.model_name_or_path, args.model_max_length, args.load_in_half, args.device_map,
                           args.flash_attn_transformers, args.cache_dir)
    model.eval()
    if not args.device_map and torch.cuda.is_available():
        model.to("cuda")
    vocab = output_vocab_size(model)
    if len(tokenizer) > vocab:
        raise InputError(f"{args.model_name_or_path}: tokenizer has {len(tokenizer)} tokens but the model's "
                         f"output layer only {vocab}")
    options = CaptureOptions(top_k=args.top_k_logits, batch_size=args.batch_size,
                             per_token_metric=args.save_per_token_metric, no_assert=args.no_assert)
    out = Path(args.dataset_save_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{out.name}.scratch-", dir=out.parent)
    try:
        captured = representation_dataset(tokenized, options, model, tokenizer.pad_token_id, scratch)
        save_dataset_atomic(DatasetDict({SPLIT: captured}), out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("saved %d rows to %s", len(captured), out)
