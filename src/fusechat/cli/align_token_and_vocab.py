"""align_token_and_vocab: bring a different-vocabulary source's distributions into the pivot's
vocabulary (DESIGN.md 6). The command lines are in FuseChat/train/align_token_and_vocab.py."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..alignment.aligned_sets import (MapSettings, TokenizerSpec, distribution_pass, load_aligner, load_pairs,
                                      save_token_pass, token_pass, token_pass_done)
from ..alignment.vocab_mapping import vocabulary_of
from ..errors import InputError
from ..kernels.align_methods import ALIGN_METHODS, align_method
from ..provenance import add_accept_flag, check_made_from, check_sets_tokenizer, token_pass_record
from ..schema import INDICES, LOGITS, METRIC_CE, PER_STEP_METRIC_CE, index_dtype_for
from ..storage import check_output_dir, check_output_file, save_train_split, scratch_dir, split_paths

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


def check_token_files(args, record: dict, keys: tuple[str, ...]) -> None:
    """The token pass's existing files were made for this run (``keys`` of its record)."""
    accept = args.accept_sets_without_provenance
    for flag in ("token_alignment_matrix_file", "aligned_dataset_tknz_save_dir"):
        path = getattr(args, flag)
        if path and Path(path).exists():
            check_made_from(path, record, f"--{flag}", accept, keys)
    mapping = args.blending_to_base_file
    if mapping and Path(mapping).exists() and align_method(args.align_type).mapping is not None:
        check_made_from(mapping, dict(record, align_type=args.align_type), "--blending_to_base_file", accept,
                        keys + ("align_type",))


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_flags(args)
    base, blending = (TokenizerSpec(getattr(args, f"{side}_model_name_or_path"), getattr(args, f"{side}_use_fast"),
                                    getattr(args, f"{side}_trust_remote_code"), args.cache_dir)
                      for side in ("base", "blending"))
    base_vocab, blending_vocab = vocabulary_of(base.load()), vocabulary_of(blending.load())
    first_output = (args.aligned_dataset_save_dir or args.blending_to_base_file or args.token_alignment_matrix_file
                    or args.aligned_dataset_tknz_save_dir or ".")
    token_files = (args.token_alignment_matrix_file, args.blending_to_base_file, args.aligned_dataset_tknz_save_dir)
    sets = split_paths(args.base_dataset_dir) + split_paths(args.blending_dataset_dir)
    record = check_inputs_and_outputs(args, base, blending, sets)
    with scratch_dir(first_output) as scratch:
        settings = MapSettings(args.batch_size, args.preprocessing_num_workers, scratch)
        if args.do_token_alignment and token_pass_done(*token_files):
            check_token_files(args, record, ("base_tokenizer", "blending_tokenizer", "sets"))
            logger.info("reusing %s", ", ".join(f for f in token_files if f))
        elif args.do_token_alignment:
            pairs = load_pairs(args.base_dataset_dir, args.blending_dataset_dir, ["input_ids"], ["input_ids"],
                               "dataset", args.dataset_sample_prop)
            matrix, tokenized = token_pass(pairs, base, blending, base_vocab, blending_vocab, settings)
            save_token_pass(args.align_type, matrix, tokenized, base_vocab, blending_vocab, *token_files, record)
        if args.do_distribution_alignment:
            check_token_files(args, record, ("base_tokenizer", "blending_tokenizer"))
            aligner = None if args.not_align else load_aligner(
                args.align_type, base_vocab, blending_vocab, args.blending_to_base_file,
                args.use_token_alignment_matrix, args.token_alignment_matrix_file)
            columns = ["input_ids", LOGITS, INDICES, METRIC_CE]
            pairs = load_pairs(args.base_dataset_dir, args.blending_dataset_dir, columns,
                               columns + [PER_STEP_METRIC_CE] * (args.metric_level == "token"),
                               "representation set", args.dataset_sample_prop)
            if len(pairs) != 1:
                raise InputError(f"--do_distribution_alignment aligns one split at a time; got {len(pairs)} sets")
            index_dtype = index_dtype_for(blending_vocab.size if args.not_align else base_vocab.size)
            aligned, share = distribution_pass(pairs[0], aligner, base, blending, args.metric_level, index_dtype,
                                               settings, args.aligned_dataset_tknz_save_dir)
            print(f"align_token_and_vocab: the source's distribution is kept at {100 * share:.1f}% of pivot "
                  f"positions (the rest ONE-HOT or EMPTY), align type {args.align_type}")
            save_train_split(aligned, args.aligned_dataset_save_dir, ids_from=split_paths(args.base_dataset_dir),
                             kind="aligned")
