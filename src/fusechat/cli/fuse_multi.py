"""fuse_multi: FuseLLM's multi-source MinCE over aligned sets (docs/design.md 7).

``fuse-all-mince``: ``--dataset_dir A,B,...`` (pivot + source k each); per row, keep the fused columns
of the source with the lowest fused_metric_ce. ``add-new``: ``--fused_dataset_dir`` (an existing fused
set) against ``--dataset_dir`` (one new aligned source); per row, keep the lower.
"""

from __future__ import annotations

import argparse
import logging

from ..errors import InputError, run_cli
from ..fused_sets import fuse_by_mince
from ..provenance import add_accept_flag, check_recorded
from ..storage import check_set_output, load_train_splits, save_train_split, split_paths

logger = logging.getLogger("fuse_multi")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset_dir", required=True, help="aligned set(s), comma-separated")
    p.add_argument("--fused_dataset_dir", default=None, help="existing fused set (add-new)")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=1000, help="accepted for compatibility; work is columnar")
    p.add_argument("--mode", default="fuse-all-mince", choices=["fuse-all-mince", "add-new"])
    add_accept_flag(p)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_set_output(args.dataset_save_dir, "--dataset_save_dir", args.dataset_dir, args.fused_dataset_dir)
    check_recorded(split_paths(args.dataset_dir) + split_paths(args.fused_dataset_dir or ""), "--dataset_dir",
                   args.accept_sets_without_provenance)
    datasets, names = load_train_splits(args.dataset_dir, "aligned set")
    if args.mode == "add-new":
        if not args.fused_dataset_dir or len(datasets) != 1:
            raise InputError("--mode add-new takes --fused_dataset_dir and exactly one --dataset_dir")
        fused, fused_names = load_train_splits(args.fused_dataset_dir, "fused set")
        datasets, names = fused + datasets, fused_names + names
    elif len(datasets) < 2:
        raise InputError("--mode fuse-all-mince needs at least two aligned sets in --dataset_dir")
    fused, counts = fuse_by_mince(datasets, names)
    for name, count in zip(names, counts):
        print(f"fuse_multi: {count} of {len(fused)} rows take the fused distribution of {name}")
    save_train_split(fused, args.dataset_save_dir, args.preprocessing_num_workers, ids_from=names, kind="fused")


def cli(argv=None) -> int:
    """Entry point of FuseChat/train/fuse_multi.py and fusechat-fuse-multi."""
    return run_cli(main, argv, prog="fuse_multi.py")
