"""filter_nan: drop the rows whose metric_ce or fused_metric_ce is NaN (DESIGN.md 7)."""

from __future__ import annotations

import argparse
import logging

from ..fused_sets import drop_rows, nan_rows, row_ids
from ..storage import write_json
from .common import check_set_output, load_sets, save_set, setup_logging

logger = logging.getLogger("filter_nan")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--input_data_dir", required=True)
    p.add_argument("--output_data_dir", required=True)
    p.add_argument("--preprocessing_num_workers", type=int, default=1)
    return p


def main(argv=None) -> None:
    setup_logging()
    args = build_parser().parse_args(argv)
    check_set_output(args.output_data_dir, "--output_data_dir", args.input_data_dir)
    (dataset,), names = load_sets(args.input_data_dir, "aligned set")
    bad = nan_rows(dataset)
    ids = row_ids(dataset, bad)
    print(f"filter_nan: dropped {len(bad)} of {len(dataset)} rows with a NaN metric"
          + (f" (ids: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''})" if ids else ""))
    if len(bad):
        report = args.output_data_dir.rstrip("/") + ".dropped.json"
        write_json(report, ids)
        logger.info("the dropped conversation ids are listed in %s", report)
    save_set(drop_rows(dataset, bad), args.output_data_dir, args.preprocessing_num_workers, ids_from=names,
             kind="filtered")
