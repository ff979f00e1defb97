"""fuse_multi: FuseLLM's multi-source MinCE over aligned sets (DESIGN.md 7).

``fuse-all-mince``: ``--dataset_dir A,B,...`` (pivot + source k each); per row, keep the fused columns
of the source with the lowest fused_metric_ce. ``add-new``: ``--fused_dataset_dir`` (an existing fused
set) against ``--dataset_dir`` (one new aligned source); per row, keep the lower.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from ..errors import InputError
from ..fused_sets import metric_values, mince_choice, select_fused
from ..schema import FUSED_COLUMNS, FUSED_METRIC_CE, check_same_conversations, require_columns
from .common import check_set_output, load_sets, save_set, setup_logging

logger = logging.getLogger("fuse_multi")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset_dir", required=True, help="aligned set(s), comma-separated")
    p.add_argument("--fused_dataset_dir", default=None, help="existing fused set (add-new)")
    p.add_argument("--dataset_save_dir", required=True)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=1000, help="accepted for compatibility; work is columnar")
    p.add_argument("--mode", default="fuse-all-mince", choices=["fuse-all-mince", "add-new"])
    return p


def main(argv=None) -> None:
    setup_logging()
    args = build_parser().parse_args(argv)
    check_set_output(args.dataset_save_dir, "--dataset_save_dir", args.dataset_dir, args.fused_dataset_dir)
    datasets, names = load_sets(args.dataset_dir, "aligned set")
    if args.mode == "add-new":
        if not args.fused_dataset_dir or len(datasets) != 1:
            raise InputError("--mode add-new takes --fused_dataset_dir and exactly one --dataset_dir")
        fused, fused_names = load_sets(args.fused_dataset_dir, "fused set")
        datasets, names = fused + datasets, fused_names + names
    elif len(datasets) < 2:
        raise InputError("--mode fuse-all-mince needs at least two aligned sets in --dataset_dir")
    for ds, name in zip(datasets, names):
        require_columns(ds, FUSED_COLUMNS, name)
    for ds, name in zip(datasets[1:], names[1:]):  # MinCE compares row r of every set: same conversations
        check_same_conversations(datasets[0], ds, names[0], name)
    choice = mince_choice([metric_values(ds, FUSED_METRIC_CE) for ds in datasets])
    counts = np.bincount(choice, minlength=len(datasets))
    for name, count in zip(names, counts):
        print(f"fuse_multi: {count} of {len(choice)} rows take the fused distribution of {name}")
    save_set(select_fused(datasets, names, choice), args.dataset_save_dir, args.preprocessing_num_workers,
             ids_from=names, kind="fused")
