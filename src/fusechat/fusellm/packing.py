"""Packing every column into ``model_max_length``-token rows (docs/design.md 12.5, packing.py).

Per batch of rows: each metric column (a name containing ``metric_ce``: one value per document)
is repeated once per base token of its row; every column is concatenated over the batch's rows
and cut into chunks of ``block_size`` entries, the last (shorter) chunk of every batch kept; each
metric column becomes the plain mean of its chunk's entries, summed left to right in float64
(the reference's ``sum(x) / len(x)`` under Python < 3.12, i.e. the base-token-weighted mean of the
document metrics). Batches are the reference's ``datasets.map(batched=True, num_proc=P)``
boundaries: P contiguous shards (the first ``rows % P`` one row longer), each cut into batches of
``batch_size`` rows.

The work is done on Arrow arrays: a list column is re-cut by new offsets over its flattened
entries, so no per-token Python objects are made, and only one batch of rows is in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from ..errors import InputError
from ..schema import metric_array

logger = logging.getLogger(__name__)
METRIC_MARK = "metric_ce"


def is_metric_column(name: str) -> bool:
    return METRIC_MARK in name


def batch_bounds(rows: int, num_workers: int | None, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of every batch the reference's map sees, in order."""
    if batch_size < 1:
        raise InputError(f"--batch_size must be at least 1, got {batch_size}")
    if rows == 0:
        return []
    shards = 1 if not num_workers or num_workers <= 1 else min(num_workers, rows)
    size, extra = divmod(rows, shards)
    bounds = []
    for s in range(shards):
        start = s * size + min(s, extra)
        stop = start + size + (1 if s < extra else 0)
        bounds.extend((b, min(b + batch_size, stop)) for b in range(start, stop, batch_size))
    return bounds


def sequential_mean(values: np.ndarray) -> float:
    """sum(values) / len(values) with the sum taken left to right in float64 (cumsum is sequential)."""
    return float(np.cumsum(values, dtype=np.float64)[-1] / values.size)


def _lengths(array) -> np.ndarray:
    return array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def pack_table(table, block_size: int, first_row: int = 0, where: str = "split"):
    """One batch of rows (an Arrow table) -> its packed rows (an Arrow table), column by column."""
    import pyarrow as pa

    lengths = _lengths(table.column("input_ids").combine_chunks())
    total = int(lengths.sum())
    offsets = np.append(np.arange(0, total, block_size, dtype=np.int64), total) if total else np.zeros(1, np.int64)
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if is_metric_column(name):
            values = metric_array(column, name, f"{where} (from row {first_row})")
            bad = np.flatnonzero(np.isnan(values))
            if bad.size:
                raise InputError(f"{where} row {first_row + int(bad[0])}: {name} is NaN; pass --fiter_nan to drop "
                                 "such rows (forward_for_logits.py --no_assert kept them)")
            expanded = np.repeat(values, lengths)
            columns[name] = pa.array([sequential_mean(expanded[a:b]) for a, b in zip(offsets[:-1], offsets[1:])],
                                     type=pa.float64())
            continue
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            raise InputError(f"{where}: column {name!r} ({column.type}) is not a per-token list, so it cannot be packed")
        differ = np.flatnonzero(_lengths(column) != lengths)
        if differ.size:
            r = int(differ[0])
            raise InputError(f"{where} row {first_row + r}: column {name!r} has {_lengths(column)[r]} entries for "
                             f"{lengths[r]} tokens (were the top-k columns cut to the real tokens by "
                             "token_alignment.py?)")
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), column.flatten())
    return pa.table(columns)


def nan_rows(dataset) -> np.ndarray:
    """Rows whose metric columns hold a NaN (``--fiter_nan``)."""
    bad = np.zeros(len(dataset), dtype=bool)
    for name in dataset.column_names:
        if is_metric_column(name):
            bad |= np.isnan(metric_array(dataset.data.column(name).combine_chunks(), name, "--dataset_dir"))
    return np.flatnonzero(bad)


def packed_tables(dataset, block_size: int, num_workers: int | None, batch_size: int,
                  where: str = "split") -> Iterator:
    """Yield the packed rows of one split as one Arrow table per input batch."""
    if "input_ids" not in dataset.column_names:
        raise InputError(f"{where}: no 'input_ids' column; found {dataset.column_names}")
    if block_size < 1:
        raise InputError(f"--model_max_length must be at least 1, got {block_size}")
    arrow = dataset.with_format("arrow")
    for start, stop in batch_bounds(len(dataset), num_workers, batch_size):
        yield pack_table(arrow[start:stop], block_size, start, where)


def packed_rows(dataset, block_size: int, num_workers: int | None, batch_size: int,
                where: str = "split") -> Iterator[dict]:
    """The packed rows one by one, as Python dicts."""
    for table in packed_tables(dataset, block_size, num_workers, batch_size, where):
        yield from table.to_pylist()


def pack_dataset(dataset, block_size: int, num_workers: int | None, batch_size: int, path,
                 where: str = "split"):
    """One split packed (metric columns as float64), streamed to the Arrow file ``path`` one input
    batch at a time; the result is memory-mapped from ``path``."""
    from datasets import Features, Value
    from tqdm.auto import tqdm

    from ..arrow import dataset_from_tables

    features = Features({name: Value("float64") if is_metric_column(name) else feature
                         for name, feature in dataset.features.items()})
    tables = packed_tables(dataset, block_size, num_workers, batch_size, where)
    return dataset_from_tables(tqdm(tables, desc=f"Packing {where}", unit="batch"), features, path)


def pack_dataset_dict(dataset_dir: str, save_dir: str, block_size: int, num_workers: int | None = None,
                      batch_size: int = 1000, filter_nan: bool = False, metric_level: str = "sequence") -> None:
    """packing.py: every split at ``dataset_dir`` packed into ``block_size``-token rows, saved at
    ``save_dir``; ``filter_nan`` drops the rows with a NaN metric first."""
    from datasets import DatasetDict

    from ..provenance import derived_record, read_record
    from ..storage import save_dataset_atomic, scratch_dir
    from .common import load_dataset_dict
    from .token_alignment import check_metric_level

    check_metric_level(metric_level)
    dataset_dict = load_dataset_dict(dataset_dir, "--dataset_dir")
    with scratch_dir(save_dir) as scratch:
        result = {}
        for split, dataset in dataset_dict.items():
            if filter_nan:
                bad = nan_rows(dataset)
                logger.info("split %s: dropping %d row(s) with a NaN metric", split, bad.size)
                if bad.size:
                    dataset = dataset.select(sorted(set(range(len(dataset))) - set(bad.tolist())))
            result[split] = pack_dataset(dataset, block_size, num_workers, batch_size, scratch / f"{split}.arrow",
                                         where=f"{dataset_dir} split {split!r}")
            logger.info("split %s: %d rows -> %d packed rows", split, len(dataset), len(result[split]))
        record = derived_record(read_record(dataset_dir), "fusellm_packed", [dataset_dir])
        save_dataset_atomic(DatasetDict(result), save_dir, provenance=record)
