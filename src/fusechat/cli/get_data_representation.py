"""get_data_representation: tokenize a chat corpus split and capture one model's representations."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import data as corpus
from .. import provenance
from ..errors import InputError
from ..modeling import load_causal_lm, load_tokenizer, output_vocab_size
from ..representation import CaptureOptions, representation_dataset, select_records, tokenize_records
from ..schema import SPLIT, TOKENIZED_COLUMNS, require_columns, row_lengths, train_split
from ..storage import check_output_dir, load_dataset_dir, save_dataset_atomic, scratch_dir, write_json
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
    p.add_argument("--flash_attn_transformers", action="store_true")
    p.add_argument("--mask_instruction", action="store_true")
    p.add_argument("--device_map", default=None)
    p.add_argument("--get_representation", action="store_true",
                   help="capture representations; without it only the tokenized set is written")
    p.add_argument("--skip_invalid", action="store_true",
                   help="drop invalid records and list them in <tknz_dataset_path>.skipped.json")
    return p


def expected_record(args, tokenizer) -> dict:
    """The provenance record of the tokenized set this run's flags make."""
    separator = get_template(args.conv_temp).close_token(tokenizer.eos_token or "")
    return provenance.tokenized_record(
        tokenizer, args.model_name_or_path, args.conv_temp, separator, args.model_max_length,
        args.mask_instruction, args.data_path, provenance.file_fingerprint(args.data_path),
        args.dataset_sample_prop, args.dataset_split_num, args.dataset_index, args.skip_invalid)


def tokenized_set(args, tokenizer, record: dict):
    """Load the tokenized set if it exists (and was made with this run's settings), else build and save it."""
    path = Path(args.tknz_dataset_path)
    if path.exists():
        provenance.check_reuse(path, record, "--tknz_dataset_path")
        logger.info("reusing the tokenized set at %s", path)
        tokenized = train_split(load_dataset_dir(path, "tokenized set"), str(path))
        require_columns(tokenized, TOKENIZED_COLUMNS, str(path))
        return tokenized
    records = select_records(corpus.read_corpus(args.data_path), args.dataset_sample_prop,
                             args.dataset_split_num, args.dataset_index)
    valid, problems = corpus.validate_records(records, skip_invalid=args.skip_invalid)
    corpus.log_problems(problems, args.data_path)
    if args.skip_invalid:
        report = path.with_name(path.name + ".skipped.json")
        write_json(report, [{"id": p.record_id, "reason": p.reason} for p in problems if not p.kept])
        logger.warning("skipped %d invalid record(s); listed in %s", sum(not p.kept for p in problems), report)
    if any(p.kept for p in problems):
        report = path.with_name(path.name + ".dropped_messages.json")
        write_json(report, [{"id": p.record_id, "reason": p.reason} for p in problems if p.kept])
        logger.warning("the records kept without their first message are listed in %s", report)
    if not valid:
        raise InputError(f"{args.data_path}: no valid records in this split")
    tokenized = tokenize_records(valid, tokenizer, get_template(args.conv_temp), args.model_max_length,
                                 args.mask_instruction, args.preprocessing_num_workers)
    from datasets import DatasetDict

    save_dataset_atomic(DatasetDict({SPLIT: tokenized}), path, args.preprocessing_num_workers, provenance=record)
    return train_split(load_dataset_dir(path, "tokenized set"), str(path))


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    get_template(args.conv_temp)  # an unknown template fails before any work
    if args.get_representation and not args.dataset_save_dir:
        raise InputError("--get_representation needs --dataset_save_dir")
    for flag in ("top_k_logits", "model_max_length", "batch_size"):
        corpus.require_positive(getattr(args, flag), f"--{flag}")
    inputs = (args.data_path, args.model_name_or_path)
    if not Path(args.tknz_dataset_path).exists():
        check_output_dir(args.tknz_dataset_path, "--tknz_dataset_path", inputs)
    if args.get_representation:
        check_output_dir(args.dataset_save_dir, "--dataset_save_dir", (*inputs, args.tknz_dataset_path))
    tokenizer = load_tokenizer(args.model_name_or_path, args.model_max_length, args.cache_dir)
    record = expected_record(args, tokenizer)
    tokenized = tokenized_set(args, tokenizer, record)
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
    if args.top_k_logits > vocab:
        raise InputError(f"--top_k_logits {args.top_k_logits} is above the vocabulary size {vocab} of "
                         f"{args.model_name_or_path}")
    options = CaptureOptions(top_k=args.top_k_logits, batch_size=args.batch_size,
                             per_token_metric=args.save_per_token_metric, no_assert=args.no_assert)
    out = Path(args.dataset_save_dir)
    with scratch_dir(out) as scratch:
        captured = representation_dataset(tokenized, options, model, tokenizer.pad_token_id, str(scratch))
        save_dataset_atomic(DatasetDict({SPLIT: captured}), out, provenance=provenance.derived_record(
            dict(record, top_k_logits=args.top_k_logits), "representation", [args.tknz_dataset_path]))
    logger.info("saved %d rows to %s", len(captured), out)
