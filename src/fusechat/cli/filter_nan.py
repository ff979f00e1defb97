"""filter_nan: drop the rows whose metric_ce or fused_metric_ce is NaN (docs/design.md 7)."""

from __future__ import annotations

import argparse
import logging

from ..errors import run_cli
from ..fused_sets import without_nan_rows
from ..provenance import add_accept_flag, check_recorded
from ..storage import check_output_file, check_set_output, load_train_splits, save_train_split, split_paths

logger = logging.getLogger("filter_nan")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--input_data_dir", required=True)
    p.add_argument("--output_data_dir", required=True)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    add_accept_flag(p)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_set_output(args.output_data_dir, "--output_data_dir", args.input_data_dir)
    report = args.output_data_dir.rstrip("/") + ".dropped.json"
    check_output_file(report, "the report of dropped rows", split_paths(args.input_data_dir))
    check_recorded(split_paths(args.input_data_dir), "--input_data_dir", args.accept_sets_without_provenance)
    (dataset,), names = load_train_splits(args.input_data_dir, "aligned set")
    kept, ids = without_nan_rows(dataset, report, f"--input_data_dir {args.input_data_dir}")
    print(f"filter_nan: dropped {len(ids)} of {len(dataset)} rows with a NaN metric"
          + (f" (ids: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''})" if ids else ""))
    if ids:
        logger.info("the dropped conversation ids are listed in %s", report)
    save_train_split(kept, args.output_data_dir, args.preprocessing_num_workers, ids_from=names, kind="filtered")


def cli(argv=None) -> int:
    """Entry point of FuseChat/train/filter_nan.py and fusechat-filter-nan."""
    return run_cli(main, argv, prog="filter_nan.py")
