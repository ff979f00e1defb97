"""Packing every column into ``model_max_length``-token rows (DESIGN.md 12.5, packing.py).

Per batch of rows: each metric column (a name containing ``metric_ce``: one value per document)
is repeated once per base token of its row; every column is concatenated over the batch's rows
and cut into chunks of ``block_size`` entries, the last (shorter) chunk of every batch kept; each
metric column becomes the plain mean of its chunk's entries, summed left to right in float64
(the reference's ``sum(x) / len(x)`` under Python < 3.12, i.e. the base-token-weighted mean of the
document metrics). Batches are the reference's ``datasets.map(batched=True, num_proc=P)``
boundaries: P contiguous shards (the first ``rows % P`` one row longer), each cut into batches of
``batch_size`` rows. Only one batch of rows is in memory at a time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)
METRIC_MARK = "metric_ce"


def is_metric_column(name: str) -> bool:
    return METRIC_MARK in name


def batch_bounds(rows: int, num_workers: int | None, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of every batch the reference's map sees, in order."""
    if batch_size < 1:
        raise InputError(f"--batch_size must be at least 1, got {batch_size}")
    shards = 1 if not num_workers or num_workers <= 1 else min(num_workers, rows)
    bounds = []
    if rows == 0:
        return bounds
    size, extra = divmod(rows, shards)
    for s in range(shards):
        start = s * size + min(s, extra)
        stop = start + size + (1 if s < extra else 0)
        bounds.extend((b, min(b + batch_size, stop)) for b in range(start, stop, batch_size))
    return bounds


def sequential_mean(values: np.ndarray) -> float:
    """sum(values) / len(values) with the sum taken left to right in float64 (cumsum is sequential)."""
    return float(np.cumsum(values, dtype=np.float64)[-1] / values.size)


def pack_batch(batch: dict, block_size: int) -> dict:
    """One batch of rows (column -> list per row) -> packed rows (column -> list per chunk)."""
    lengths = [len(ids) for ids in batch["input_ids"]]
    total = sum(lengths)
    packed = {}
    for name, column in batch.items():
        if is_metric_column(name):
            expanded = np.repeat(np.asarray(column, dtype=np.float64), lengths)
            packed[name] = [sequential_mean(expanded[s:s + block_size]) for s in range(0, total, block_size)]
        else:
            flat = [entry for row in column for entry in row]
            packed[name] = [flat[s:s + block_size] for s in range(0, total, block_size)]
    return packed


def check_batch(batch: dict, first_row: int, where: str) -> None:
    """Every list column has one entry per base token; no NaN metric (unless filtered before)."""
    lengths = [len(ids) for ids in batch["input_ids"]]
    for name, column in batch.items():
        if is_metric_column(name):
            for r, value in enumerate(column):
                if value is None or math.isnan(value):
                    raise InputError(f"{where} row {first_row + r}: {name} is NaN; pass --fiter_nan to drop "
                                     "such rows (forward_for_logits.py --no_assert kept them)")
            continue
        for r, (row, length) in enumerate(zip(column, lengths)):
            if not isinstance(row, list):
                raise InputError(f"{where}: column {name!r} is not a per-token list, so it cannot be packed")
            if len(row) != length:
                raise InputError(f"{where} row {first_row + r}: column {name!r} has {len(row)} entries for "
                                 f"{length} tokens (were the top-k columns cut to the real tokens by "
                                 "token_alignment.py?)")


def nan_rows(dataset) -> np.ndarray:
    """Rows whose metric columns hold a NaN (``--fiter_nan``)."""
    bad = np.zeros(len(dataset), dtype=bool)
    for name in dataset.column_names:
        if is_metric_column(name):
            values = np.asarray(dataset.with_format("numpy")[name], dtype=np.float64)
            bad |= np.isnan(values)
    return np.flatnonzero(bad)


def packed_rows(dataset, block_size: int, num_workers: int | None, batch_size: int,
                where: str = "split") -> Iterator[dict]:
    """Yield the packed rows of one split, one batch of input rows read at a time."""
    if "input_ids" not in dataset.column_names:
        raise InputError(f"{where}: no 'input_ids' column; found {dataset.column_names}")
    for start, stop in batch_bounds(len(dataset), num_workers, batch_size):
        batch = dataset[start:stop]
        check_batch(batch, start, where)
        packed = pack_batch(batch, block_size)
        for r in range(len(packed["input_ids"])):
            yield {name: values[r] for name, values in packed.items()}


def check_metric_level(metric_level: str) -> None:
    from .token_alignment import check_metric_level as check

    check(metric_level)
