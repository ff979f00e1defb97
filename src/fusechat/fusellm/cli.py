"""Command lines of the FuseLLM data stages (docs/design.md 12.1-12.5), with the released flags.

Per stage: a parser, ``<stage>_main(argv)`` (parse, check, call the library) and ``<stage>_cli``, the
entry point of ``FuseLLM/src/utils/<stage>.py`` and of the console script ``fusellm-<stage>``. Flags
the released scripts take but that change nothing here are accepted and say so in their help.
"""

from __future__ import annotations

import argparse

from ..errors import InputError, run_cli
from ..provenance import add_accept_flag, check_recorded, check_sets_tokenizer
from ..storage import check_output_dir, check_output_file, split_paths


def check_sets_of_models(pairs: list[tuple[str, str, str]], accept: bool, cache_dir: str | None = None) -> None:
    """Each (flag, set, model): the set carries a record naming the model's tokenizer (so a pivot and a
    source set given the other way round are refused)."""
    from .common import load_stage_tokenizer

    for flag, path, model in pairs:
        check_sets_tokenizer([path], load_stage_tokenizer(model, None, cache_dir), model, flag, accept)


# --- 12.1 split_long_text ---------------------------------------------------------------------

def split_long_text_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="split_long_text.py", description="Split texts longer than block_size - 48 "
                                "tokens for any of the tokenizers (docs/design.md 12.1).")
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--another_blending_model_name_or_path", default=None,
                   help="the second source (the release's MPT); leave out for a single source")
    p.add_argument("--extra_blending_model_name_or_path", nargs="+", default=[],
                   help="any further sources, in source order (ties of the longest tokenization go to earlier models)")
    p.add_argument("--dataset", required=True, help="a DatasetDict saved with save_to_disk, column 'text'")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--block_size", type=int, default=2048)
    p.add_argument("--preprocessing_num_workers", type=int, default=80)
    p.add_argument("--dataset_sample_prop", type=float, default=None, help="debug: keep the first int(len*p) rows")
    return p


def split_long_text_main(argv=None) -> None:
    from .split_long_text import split_long_texts

    args = split_long_text_parser().parse_args(argv)
    models = [args.base_model_name_or_path, args.blending_model_name_or_path, args.another_blending_model_name_or_path,
              *args.extra_blending_model_name_or_path]
    models = [m for m in models if m is not None]
    check_output_dir(args.dataset_save_dir, "--dataset_save_dir", [args.dataset, *models])
    record = {"kind": "fusellm_text", "inputs": [args.dataset], "models": models, "block_size": args.block_size,
              "sample_prop": args.dataset_sample_prop}
    split_long_texts(args.dataset, args.dataset_save_dir, models, args.block_size, args.cache_dir,
                     args.dataset_sample_prop, args.preprocessing_num_workers, record)


# --- 12.2 forward_for_logits ------------------------------------------------------------------

def forward_for_logits_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forward_for_logits.py", description="Top-k logits and metric_ce of one "
                                "model over plain texts (docs/design.md 12.2).")
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--dataset", required=True, help="output of split_long_text.py")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--dataset_sample_prop", type=float, default=None, help="debug: keep the first int(len*p) rows")
    p.add_argument("--dataset_split_num", type=int, default=None)
    p.add_argument("--dataset_index", type=int, default=None)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--training_mode", default="full", help="full (qlora is not offered)")
    p.add_argument("--load_in_half", default="none", choices=["none", "fp16", "bf16"])
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--preprocessing_num_workers", type=int, default=80, help="tokenization only")
    p.add_argument("--top_k_logits", type=int, default=10)
    p.add_argument("--save_per_token_metric", action="store_true")
    p.add_argument("--no_assert", action="store_true", help="keep NaN rows (packing.py --fiter_nan drops them)")
    return p


def forward_for_logits_main(argv=None) -> None:
    from ..representation import CaptureOptions
    from .representation import forward_for_logits

    args = forward_for_logits_parser().parse_args(argv)
    if args.training_mode != "full":
        raise InputError(f"--training_mode {args.training_mode!r}: only 'full' is offered (the release uses it)")
    check_output_dir(args.dataset_save_dir, "--dataset_save_dir", [args.dataset, args.model_name_or_path])
    options = CaptureOptions(top_k=args.top_k_logits, batch_size=args.batch_size,
                             per_token_metric=args.save_per_token_metric, no_assert=args.no_assert)
    forward_for_logits(args.dataset, args.dataset_save_dir, args.model_name_or_path, args.model_max_length, options,
                       args.load_in_half, args.cache_dir, args.dataset_sample_prop, args.dataset_split_num,
                       args.dataset_index, args.preprocessing_num_workers)


# --- 12.3 vocab_mapping -----------------------------------------------------------------------

def vocab_mapping_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vocab_mapping.py", description="Map every source vocabulary piece to a "
                                "pivot piece by minimum edit distance (docs/design.md 12.3).")
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--dataset_dir", default=None, help="co_occurrence: counted on its validation split")
    p.add_argument("--vocab_mapping_save_dir", required=True, help="path of the JSON file written")
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--vocab_mapping_type", default="default", help="default (MinED) or co_occurrence")
    p.add_argument("--window_size", type=int, default=5)
    p.add_argument("--num_process", type=int, default=1,
                   help="worker threads of the distance search (the reference ignores it and uses 64 processes)")
    return p


def vocab_mapping_main(argv=None) -> None:
    from .vocab_mapping import build_vocab_mapping

    args = vocab_mapping_parser().parse_args(argv)
    from .vocab_mapping import updated_log_path

    inputs = [args.base_model_name_or_path, args.blending_model_name_or_path, args.dataset_dir]
    check_output_file(args.vocab_mapping_save_dir, "--vocab_mapping_save_dir", inputs)
    if args.vocab_mapping_type == "co_occurrence" and args.vocab_mapping_save_dir.endswith(".json"):
        check_output_file(updated_log_path(args.vocab_mapping_save_dir), "the co_occurrence log", inputs)
    build_vocab_mapping(args.base_model_name_or_path, args.blending_model_name_or_path, args.vocab_mapping_save_dir,
                        args.vocab_mapping_type, args.dataset_dir, args.model_max_length, args.window_size,
                        args.num_process, args.cache_dir)


# --- 12.4 token_alignment ---------------------------------------------------------------------

def token_alignment_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="token_alignment.py", description="Align one source's distributions to the "
                                "pivot's tokens and add them as *_<index> columns (docs/design.md 12.4).")
    p.add_argument("--base_model_name_or_path", required=True)
    p.add_argument("--blending_model_name_or_path", required=True)
    p.add_argument("--base_dataset_dir", required=True)
    p.add_argument("--blending_dataset_dir", required=True)
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--model_max_length", type=int, default=2048,
                   help="as given to forward_for_logits.py (used to check that rows hold the same documents)")
    p.add_argument("--preprocessing_num_workers", type=int, default=80)
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--blending_model_index", type=int, default=0)
    p.add_argument("--vocab_align_type", default="hard")
    p.add_argument("--vocab_mapping_save_dir", default=None, help="the JSON file of vocab_mapping.py (soft)")
    p.add_argument("--metric_level", default="sequence")
    p.add_argument("--onehot_next_token", action="store_true",
                   help="ONE-HOT fallback on the next pivot token (FuseChat's fix) instead of the current one")
    add_accept_flag(p)
    return p


def token_alignment_main(argv=None) -> None:
    from .token_alignment import PairSpec, align_representations

    args = token_alignment_parser().parse_args(argv)
    check_output_dir(args.dataset_save_dir, "--dataset_save_dir",
                     [args.base_dataset_dir, args.blending_dataset_dir, args.vocab_mapping_save_dir,
                      args.base_model_name_or_path, args.blending_model_name_or_path])
    check_sets_of_models([("--base_dataset_dir", args.base_dataset_dir, args.base_model_name_or_path),
                          ("--blending_dataset_dir", args.blending_dataset_dir, args.blending_model_name_or_path)],
                         args.accept_sets_without_provenance, args.cache_dir)
    spec = PairSpec(args.base_model_name_or_path, args.blending_model_name_or_path, args.vocab_align_type,
                    args.vocab_mapping_save_dir, args.cache_dir)
    align_representations(args.base_dataset_dir, args.blending_dataset_dir, args.dataset_save_dir, spec,
                          args.blending_model_index, args.model_max_length, args.onehot_next_token, args.batch_size,
                          args.preprocessing_num_workers, args.metric_level)


# --- 12.5 packing -----------------------------------------------------------------------------

def packing_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="packing.py", description="Pack every column into model_max_length-token "
                                "rows with token-weighted metrics (docs/design.md 12.5).")
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--cache_dir", default=None, help="unused")
    p.add_argument("--model_max_length", type=int, default=2048)
    p.add_argument("--preprocessing_num_workers", type=int, default=None,
                   help="number of contiguous shards: with --batch_size it decides the packed-row boundaries")
    p.add_argument("--batch_size", type=int, default=1000)
    p.add_argument("--metric_level", default="sequence")
    p.add_argument("--fiter_nan", action="store_true", help="drop rows with a NaN metric (the released spelling)")
    add_accept_flag(p)
    return p


def packing_main(argv=None) -> None:
    from .packing import pack_dataset_dict

    args = packing_parser().parse_args(argv)
    check_output_dir(args.dataset_save_dir, "--dataset_save_dir", [args.dataset_dir])
    check_recorded([args.dataset_dir], "--dataset_dir", args.accept_sets_without_provenance)
    pack_dataset_dict(args.dataset_dir, args.dataset_save_dir, args.model_max_length,
                      args.preprocessing_num_workers, args.batch_size, args.fiter_nan, args.metric_level)


# --- entry points -----------------------------------------------------------------------------

def split_long_text_cli(argv=None) -> int:
    return run_cli(split_long_text_main, argv, prog="split_long_text.py")


def forward_for_logits_cli(argv=None) -> int:
    return run_cli(forward_for_logits_main, argv, prog="forward_for_logits.py")


def vocab_mapping_cli(argv=None) -> int:
    return run_cli(vocab_mapping_main, argv, prog="vocab_mapping.py")


def token_alignment_cli(argv=None) -> int:
    return run_cli(token_alignment_main, argv, prog="token_alignment.py")


def packing_cli(argv=None) -> int:
    return run_cli(packing_main, argv, prog="packing.py")
