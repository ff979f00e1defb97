"""align_token_and_vocab: bring a different-vocabulary source's distributions into the pivot's
vocabulary (docs/design.md 6). The command lines are in FuseChat/train/align_token_and_vocab.py."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields

from ..alignment.aligned_sets import TokenizerSpec, token_pass_done
from ..alignment.stage import AlignStage, align_stage
from ..errors import InputError, run_cli
from ..kernels.align_methods import ALIGN_METHODS, align_method
from ..provenance import add_accept_flag, check_sets_tokenizer, token_pass_record
from ..storage import check_output_dir, check_output_file, split_paths

logger = logging.getLogger("align_token_and_vocab")


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--base_dataset_dir", required=True, help="pivot set(s), comma-separated")
    p.add_argument("--blending_dataset_dir", required=True, help="source set(s), comma-separated")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=None,
                   help="accepted for compatibility; the sets are already cut to length")
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--do_token_alignment", action="store_true")
    p.add_argument("--align_type", default="default",
                   help="; ".join(f"{m.name}: {m.summary}" for m in ALIGN_METHODS.values()))
    p.add_argument("--token_alignment_matrix_file", default=None, help="scipy sparse .npz of the count matrix")
    p.add_argument("--blending_to_base_file", default=None, help="JSON list: blending id -> base id")
    p.add_argument("--do_distribution_alignment", action="store_true")
    p.add_argument("--metric_level", default="sequence", choices=["sequence", "token"])
    p.add_argument("--use_token_alignment_matrix", action="store_true")
    p.add_argument("--not_align", action="store_true", help="copy the source's lists unmapped")
    p.add_argument("--aligned_dataset_tknz_save_dir", default=None,
                   help="token pass: save every row's token alignment here; distribution pass: read them from here")
    p.add_argument("--aligned_dataset_save_dir", default=None)
    p.add_argument("--temperature", type=float, default=1.0,
                   help="accepted for compatibility; the fuse temperature is train.py's --fuse_temperature")
    p.add_argument("--dataset_sample_prop", type=float, default=None)
    for side in ("base", "blending"):
        p.add_argument(f"--{side}_use_fast", type=str2bool, default=True)
        p.add_argument(f"--{side}_trust_remote_code", type=str2bool, default=False)
    add_accept_flag(p)
    return p


def check_flags(args) -> None:
    if args.temperature != 1.0:
        logger.warning("--temperature %s has no effect here; set the fuse temperature with train.py's "
                       "--fuse_temperature", args.temperature)
    if args.model_max_length is not None:
        logger.warning("--model_max_length %s has no effect here; the sets were cut to length by "
                       "get_data_representation", args.model_max_length)
    align_method(args.align_type)
    if not (args.do_token_alignment or args.do_distribution_alignment):
        raise InputError("nothing to do: give --do_token_alignment and/or --do_distribution_alignment")
    if args.do_distribution_alignment and not args.aligned_dataset_save_dir:
        raise InputError("--do_distribution_alignment needs --aligned_dataset_save_dir")


def check_inputs_and_outputs(args, base: TokenizerSpec, blending: TokenizerSpec, sets: list[str]) -> dict:
    """Before any work: the sets were made with these two tokenizers (so neither is swapped), and
    no output replaces an input, a model or a file of the user's. Returns the token pass's record."""
    accept = args.accept_sets_without_provenance
    for side, spec in (("base", base), ("blending", blending)):
        check_sets_tokenizer(split_paths(getattr(args, f"{side}_dataset_dir")), spec.load(), spec.name_or_path,
                             f"--{side}_dataset_dir", accept)
    inputs = [*sets, base.name_or_path, blending.name_or_path]
    token_files = [args.token_alignment_matrix_file, args.blending_to_base_file, args.aligned_dataset_tknz_save_dir]
    if args.do_token_alignment and not token_pass_done(*token_files):  # done: they are read, not written
        for flag in ("token_alignment_matrix_file", "blending_to_base_file"):
            if getattr(args, flag):
                check_output_file(getattr(args, flag), f"--{flag}", inputs)
        if args.aligned_dataset_tknz_save_dir:
            check_output_dir(args.aligned_dataset_tknz_save_dir, "--aligned_dataset_tknz_save_dir", inputs)
    if args.aligned_dataset_save_dir:
        check_output_dir(args.aligned_dataset_save_dir, "--aligned_dataset_save_dir", inputs + token_files)
    return token_pass_record(base.load(), blending.load(), sets)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_flags(args)
    base, blending = (TokenizerSpec(getattr(args, f"{side}_model_name_or_path"), getattr(args, f"{side}_use_fast"),
                                    getattr(args, f"{side}_trust_remote_code"), args.cache_dir)
                      for side in ("base", "blending"))
    sets = split_paths(args.base_dataset_dir) + split_paths(args.blending_dataset_dir)
    record = check_inputs_and_outputs(args, base, blending, sets)
    flags = {f.name: getattr(args, f.name) for f in fields(AlignStage) if f.name not in ("base", "blending")}
    share = align_stage(AlignStage(base, blending, **flags), record)
    if share is not None:
        print(f"align_token_and_vocab: the source's distribution is kept at {100 * share:.1f}% of pivot "
              f"positions (the rest ONE-HOT or EMPTY), align type {args.align_type}")


def cli(argv=None) -> int:
    """Entry point of FuseChat/train/align_token_and_vocab.py and fusechat-align-token-and-vocab."""
    return run_cli(main, argv, prog="align_token_and_vocab.py")
