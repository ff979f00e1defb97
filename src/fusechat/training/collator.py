"""Batches for train.py (DESIGN.md 8): dynamic padding and the top-k fuse targets.

Each batch is padded to its own longest row (capped at ``max_length``, optionally rounded up to a
multiple of ``pad_to_multiple_of``), never to model_max_length. With ``fuse`` the collator also
builds the target of every position once, as three [B, T, K] tensors (K = the longest list of the
batch): ``target_logits`` (float32), ``target_ids`` (int64) and ``target_mask`` (valid entries).
Per conversation, the target is the source's list when the source won the MinCE choice (always,
with ``fuse_with_ref_model=False``), except where the source's entry is EMPTY: there, and for
conversations the pivot won, it is the pivot's list. ``source_chosen`` [B] records the choice.

Input: a list of row dicts (Python lists, as any map-style dataset gives them) or a pyarrow Table
of the batch's rows (what :class:`fusechat.training.datasets.ArrowRows` gives: no Python objects
per element, the fast path). Everything is computed with whole-batch numpy operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..errors import InputError
from ..schema import FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, IGNORE_INDEX, INDICES, LOGITS, METRIC_CE
from .fuse_loss import mince_use_source


def as_table(features) -> pa.Table:
    if isinstance(features, pa.Table):
        return features
    if isinstance(features, pa.RecordBatch):
        return pa.Table.from_batches([features])
    features = list(features)
    if not features:
        raise ValueError("cannot collate an empty batch")
    return pa.Table.from_pylist(features)


def _array(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _lengths(array: pa.Array) -> np.ndarray:
    return pc.list_value_length(array).fill_null(0).to_numpy().astype(np.int64)


def _values(array: pa.Array, dtype) -> np.ndarray:
    flat = array.flatten()
    if pa.types.is_null(flat.type):  # every list of the batch is empty
        return np.zeros(len(flat), dtype)
    return flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


@dataclass(frozen=True)
class TopK:
    """The top-k lists of one column pair for a batch: per-position list lengths and flat values."""

    positions: np.ndarray  # [B] number of positions per row
    lengths: np.ndarray  # [sum positions] entries per position
    logits: np.ndarray  # [sum lengths] float32
    ids: np.ndarray  # [sum lengths] int64

    @classmethod
    def from_table(cls, table: pa.Table, logits_column: str, ids_column: str) -> "TopK":
        logits, ids = _array(table, logits_column), _array(table, ids_column)
        positions = _lengths(logits)
        if not np.array_equal(positions, _lengths(ids)):
            row = int(np.flatnonzero(positions != _lengths(ids))[0])
            raise InputError(f"batch row {row} ({_row_name(table, row)}): {logits_column} and {ids_column} "
                             f"have different numbers of positions")
        inner_logits, inner_ids = logits.flatten(), ids.flatten()
        lengths = _lengths(inner_logits)
        if not np.array_equal(lengths, _lengths(inner_ids)):
            raise InputError(f"{_row_name(table, None)}: a position of {logits_column} and {ids_column} "
                             f"has lists of different lengths")
        return cls(positions, lengths, _values(inner_logits, np.float32), _values(inner_ids, np.int64))


def row_positions(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the elements of rows of ``lengths`` laid end to end: their row and their index in the row."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return rows, np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def pad_rows(values: np.ndarray, lengths: np.ndarray, width: int, limit: int, fill, dtype) -> np.ndarray:
    """Rows of ``lengths`` (flat ``values``) as a [B, width] array; rows are cut at ``limit`` <= width."""
    out = np.full((len(lengths), width), fill, dtype=dtype)
    rows, index = row_positions(lengths)
    keep = index < limit
    out[rows[keep], index[keep]] = values[keep]
    return out


def topk_targets(lengths: np.ndarray, width: int, limit: int, pivot: TopK, source: TopK,
                 use_source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[B, width, K] logits, ids and validity mask of each position's chosen list (rows cut at ``limit``)."""
    rows, index = row_positions(lengths)
    take_source = use_source[rows] & (source.lengths > 0)  # EMPTY falls back to the pivot
    chosen = np.where(take_source, source.lengths, pivot.lengths) * (index < limit)
    # The chosen list of a position is a slice of the concatenated pivot + source values.
    pivot_starts = np.cumsum(pivot.lengths) - pivot.lengths
    source_starts = np.cumsum(source.lengths) - source.lengths + len(pivot.logits)
    starts = np.where(take_source, source_starts, pivot_starts)
    k = max(1, int(chosen.max(initial=0)))
    position, slot = row_positions(chosen)
    taken = starts[position] + slot
    at = (rows[position], index[position], slot)
    logits = np.zeros((len(lengths), width, k), np.float32)
    ids = np.zeros((len(lengths), width, k), np.int64)
    mask = np.zeros((len(lengths), width, k), bool)
    logits[at] = np.concatenate([pivot.logits, source.logits])[taken]
    ids[at] = np.concatenate([pivot.ids, source.ids])[taken]
    mask[at] = True
    return logits, ids, mask


def _row_name(table: pa.Table, row: int | None) -> str:
    if row is None or ID not in table.column_names:
        return "this batch" if row is None else f"row {row}"
    return f"id {table.column(ID)[row].as_py()!r}"


@dataclass
class TrainCollator:
    """Collate rows of input_ids / labels / attention_mask (+ top-k columns with ``fuse``)."""

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    fuse: bool = False
    fuse_with_ref_model: bool = True
    row_log_path: str | None = None  # debugging: append the ids of every collated row to this file

    def padded_width(self, lengths: np.ndarray) -> tuple[int, int]:
        """(padded length, kept length): the longest row, cut at max_length, then rounded up."""
        limit = int(lengths.max(initial=1))
        if self.max_length:
            limit = min(limit, self.max_length)
        width = limit
        if self.pad_to_multiple_of:
            width = -(-limit // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return width, limit

    def __call__(self, features) -> dict[str, torch.Tensor]:
        table = as_table(features)
        input_ids = _array(table, "input_ids")
        lengths = _lengths(input_ids)
        width, limit = self.padded_width(lengths)
        if "attention_mask" in table.column_names:
            attention = _values(_array(table, "attention_mask"), np.int64)
        else:
            attention = np.ones(int(lengths.sum()), np.int64)
        batch = {
            "input_ids": pad_rows(_values(input_ids, np.int64), lengths, width, limit, self.pad_token_id, np.int64),
            "attention_mask": pad_rows(attention, lengths, width, limit, 0, np.int64),
            "labels": pad_rows(_values(_array(table, "labels"), np.int64), lengths, width, limit, IGNORE_INDEX,
                               np.int64),
        }
        batch = {name: torch.from_numpy(array) for name, array in batch.items()}
        if self.fuse:
            batch.update(self.fuse_targets(table, lengths, width, limit))
        if self.row_log_path:
            self._log_rows(table)
        return batch

    def fuse_targets(self, table: pa.Table, lengths: np.ndarray, width: int, limit: int) -> dict[str, torch.Tensor]:
        pivot = TopK.from_table(table, LOGITS, INDICES)
        source = TopK.from_table(table, FUSED_LOGITS, FUSED_INDICES)
        for name, topk in ((LOGITS, pivot), (FUSED_LOGITS, source)):
            if not np.array_equal(topk.positions, lengths):
                row = int(np.flatnonzero(topk.positions != lengths)[0])
                raise InputError(f"batch row {row} ({_row_name(table, row)}): {name} has "
                                 f"{topk.positions[row]} positions but input_ids has {lengths[row]}")
        if self.fuse_with_ref_model:
            use_source = mince_use_source(_array(table, METRIC_CE).to_numpy(zero_copy_only=False),
                                          _array(table, FUSED_METRIC_CE).to_numpy(zero_copy_only=False)).numpy()
        else:
            use_source = np.ones(len(lengths), bool)
        logits, ids, mask = topk_targets(lengths, width, limit, pivot, source, use_source)
        return {"target_logits": torch.from_numpy(logits), "target_ids": torch.from_numpy(ids),
                "target_mask": torch.from_numpy(mask), "source_chosen": torch.from_numpy(use_source)}

    def _log_rows(self, table: pa.Table) -> None:
        ids = table.column(ID).to_pylist() if ID in table.column_names else ["?"] * table.num_rows
        with open(self.row_log_path, "a", encoding="utf-8") as handle:
            handle.write("".join(f"{row_id}\n" for row_id in ids))
