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
per element, the fast path). The work is numpy operations on whole rows, never on single entries.
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


def list_lengths(array: pa.Array) -> np.ndarray:
    """Entries of each list of a list array (0 for a null list)."""
    return pc.list_value_length(array).fill_null(0).to_numpy().astype(np.int64)


def flat_values(array: pa.Array, dtype=None) -> np.ndarray:
    """The entries of all lists of a list array, end to end (in their stored dtype by default)."""
    flat = array.flatten()
    if pa.types.is_null(flat.type):  # every list is empty
        return np.zeros(len(flat), dtype or np.float32)
    return flat.to_numpy(zero_copy_only=False).astype(dtype or flat.type.to_pandas_dtype(), copy=False)


@dataclass(frozen=True)
class TopK:
    """The top-k lists of one column pair for a batch, one padded row per position.

    Positions of all rows follow each other (P in total); ``logits`` and ``ids`` are [P, k] in the
    stored dtypes, padded with zeros after each list's ``lengths[p]`` entries.
    """

    positions: np.ndarray  # [B] positions per row
    lengths: np.ndarray  # [P] entries per position
    logits: np.ndarray  # [P, k]
    ids: np.ndarray  # [P, k]

    @classmethod
    def from_table(cls, table: pa.Table, logits_column: str, ids_column: str) -> "TopK":
        logits, ids = _array(table, logits_column), _array(table, ids_column)
        positions = list_lengths(logits)
        if not np.array_equal(positions, list_lengths(ids)):
            row = int(np.flatnonzero(positions != list_lengths(ids))[0])
            raise InputError(f"batch row {row} ({_row_name(table, row)}): {logits_column} and {ids_column} "
                             f"have different numbers of positions")
        inner_logits, inner_ids = logits.flatten(), ids.flatten()
        lengths = list_lengths(inner_logits)
        if not np.array_equal(lengths, list_lengths(inner_ids)):
            raise InputError(f"{_row_name(table, None)}: a position of {logits_column} and {ids_column} "
                             f"has lists of different lengths")
        return cls(positions, lengths, _pad_lists(inner_logits, lengths), _pad_lists(inner_ids, lengths))


def _pad_lists(array: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """A list array as [P, longest list], zero padded (a plain reshape when all lists are full)."""
    k = int(lengths.max(initial=0))
    values = flat_values(array)
    if (lengths == k).all():
        return values.reshape(len(lengths), k)
    out = np.zeros((len(lengths), k), values.dtype)
    out[np.arange(k) < lengths[:, None]] = values  # row-major order: each list fills its row's start
    return out


def pad_rows(values: np.ndarray, lengths: np.ndarray, width: int, limit: int, fill, dtype) -> np.ndarray:
    """Rows of ``lengths`` laid end to end in ``values`` as a [B, width] array, cut at ``limit`` <= width.

    A batch has a few rows, so one slice copy per row suffices.
    """
    out = np.full((len(lengths), width), fill, dtype=dtype)
    end = np.cumsum(lengths)
    for row, (start, length) in enumerate(zip(end - lengths, lengths)):
        kept = min(int(length), limit)
        out[row, :kept] = values[start:start + kept]
    return out


def topk_targets(lengths: np.ndarray, width: int, limit: int, pivot: TopK, source: TopK,
                 use_source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[B, width, K] logits, ids and validity mask of each position's chosen list (rows cut at ``limit``).

    Written row by row straight into the outputs (a batch has a few rows): the pivot's lists, then
    the source's over them where the source is taken, then zeros past each chosen list's end.
    """
    k = max(1, pivot.logits.shape[1], source.logits.shape[1])
    shape = (len(lengths), width, k)
    logits, ids, mask = np.zeros(shape, np.float32), np.zeros(shape, np.int64), np.zeros(shape, bool)
    slots = np.arange(k)
    for row, start in enumerate(np.cumsum(lengths) - lengths):
        span = slice(start, start + min(int(lengths[row]), limit))
        n = span.stop - span.start
        take = (source.lengths[span] > 0) & bool(use_source[row])  # EMPTY falls back to the pivot
        mask[row, :n] = slots < np.where(take, source.lengths[span], pivot.lengths[span])[:, None]
        for out, from_pivot, from_source in ((logits, pivot.logits, source.logits), (ids, pivot.ids, source.ids)):
            target = out[row, :n]
            target[:, :from_pivot.shape[1]] = from_pivot[span]
            np.copyto(target[:, :from_source.shape[1]], from_source[span], where=take[:, None])
            np.copyto(target, 0, where=~mask[row, :n])
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
        lengths = list_lengths(input_ids)
        width, limit = self.padded_width(lengths)
        if "attention_mask" in table.column_names:
            attention = flat_values(_array(table, "attention_mask"))
        else:
            attention = np.ones(int(lengths.sum()), np.int64)
        batch = {
            "input_ids": pad_rows(flat_values(input_ids), lengths, width, limit, self.pad_token_id, np.int64),
            "attention_mask": pad_rows(attention, lengths, width, limit, 0, np.int64),
            "labels": pad_rows(flat_values(_array(table, "labels")), lengths, width, limit, IGNORE_INDEX, np.int64),
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
