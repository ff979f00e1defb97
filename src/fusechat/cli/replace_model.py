"""replace_model: put a same-vocabulary source's distributions into the pivot's rows (docs/design.md 5)."""

from __future__ import annotations

import argparse

from ..errors import run_cli
from ..fused_sets import concatenate, replace_columns
from ..provenance import add_accept_flag, check_recorded
from ..storage import check_set_output, load_train_splits, save_train_split, split_paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset_dir", required=True, help="pivot representation set(s), comma-separated")
    p.add_argument("--replace_dataset_dir", required=True, help="source representation set(s), comma-separated")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=1000, help="accepted for compatibility; work is columnar")
    p.add_argument("--replace_model", default="source", choices=["source", "pivot"])
    add_accept_flag(p)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_set_output(args.dataset_save_dir, "--dataset_save_dir", args.dataset_dir, args.replace_dataset_dir)
    for flag in ("dataset_dir", "replace_dataset_dir"):
        check_recorded(split_paths(getattr(args, flag)), f"--{flag}", args.accept_sets_without_provenance)
    pivots, pivot_names = load_train_splits(args.dataset_dir, "pivot representation set")
    sources, source_names = load_train_splits(args.replace_dataset_dir, "source representation set")
    result = replace_columns(concatenate(pivots, pivot_names), concatenate(sources, source_names), args.replace_model,
                             ",".join(pivot_names), ",".join(source_names))
    save_train_split(result, args.dataset_save_dir, args.preprocessing_num_workers,
                     ids_from=source_names if args.replace_model == "pivot" else pivot_names, kind="replaced")


def cli(argv=None) -> int:
    """Entry point of FuseChat/train/replace_model.py and fusechat-replace-model."""
    return run_cli(main, argv, prog="replace_model.py")
