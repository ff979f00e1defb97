"""get_data_representation: tokenize a chat corpus split and capture one model's representations
(docs/design.md 4). The command line is in FuseChat/train/get_data_representation.py."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .. import data, provenance
from ..errors import InputError, run_cli
from ..modeling import load_tokenizer, model_turn_separator
from ..representation import CaptureOptions
from ..representation_sets import (capture_model, dropped_report_path, save_representations, skipped_report_path,
                                   tokenized_set)
from ..arrow import row_lengths
from ..storage import check_output_dir, check_output_file
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
    provenance.add_accept_flag(p)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    template = get_template(args.conv_temp)  # an unknown template fails before any work
    if args.get_representation and not args.dataset_save_dir:
        raise InputError("--get_representation needs --dataset_save_dir")
    for flag in ("top_k_logits", "model_max_length", "batch_size"):
        data.require_positive(getattr(args, flag), f"--{flag}")
    inputs = (args.data_path, args.model_name_or_path)
    if not Path(args.tknz_dataset_path).exists():
        check_output_dir(args.tknz_dataset_path, "--tknz_dataset_path", inputs)
        for report in (skipped_report_path(args.tknz_dataset_path), dropped_report_path(args.tknz_dataset_path)):
            check_output_file(report, "the report of left-out records", inputs)
    if args.get_representation:
        check_output_dir(args.dataset_save_dir, "--dataset_save_dir", (*inputs, args.tknz_dataset_path))
    tokenizer = load_tokenizer(args.model_name_or_path, args.model_max_length, args.cache_dir)
    separator = model_turn_separator(args.model_name_or_path, tokenizer, args.separator, args.cache_dir)
    record = provenance.tokenized_record(
        tokenizer, args.model_name_or_path, args.conv_temp, separator, args.model_max_length,
        args.mask_instruction, args.data_path, provenance.file_fingerprint(args.data_path),
        args.dataset_sample_prop, args.dataset_split_num, args.dataset_index, args.skip_invalid)
    tokenized = tokenized_set(args.tknz_dataset_path, args.data_path, tokenizer, template, args.model_max_length,
                              args.mask_instruction, args.dataset_sample_prop, args.dataset_split_num,
                              args.dataset_index, args.skip_invalid, args.preprocessing_num_workers, separator,
                              record, args.accept_sets_without_provenance)
    logger.info("%d conversations, %d tokens", len(tokenized), int(row_lengths(tokenized).sum()))
    if args.get_representation:
        model = capture_model(args.model_name_or_path, tokenizer, args.model_max_length, args.load_in_half,
                              args.device_map, args.flash_attn_transformers, args.cache_dir, args.top_k_logits)
        options = CaptureOptions(top_k=args.top_k_logits, batch_size=args.batch_size,
                                 per_token_metric=args.save_per_token_metric, no_assert=args.no_assert)
        save_representations(tokenized, options, model, tokenizer.pad_token_id, args.dataset_save_dir,
                             provenance.derived_record(dict(record, top_k_logits=args.top_k_logits),
                                                       "representation", [args.tknz_dataset_path]))


def cli(argv=None) -> int:
    """Entry point of FuseChat/train/get_data_representation.py and fusechat-get-data-representation."""
    return run_cli(main, argv, prog="get_data_representation.py")
