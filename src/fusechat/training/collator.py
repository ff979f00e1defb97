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
per element, the fast path). The targets are copied in one compiled pass over the positions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from numba import njit, types
from numba.extending import overload

from ..arrow import column_array, flat_values, list_lengths, nested_lists
from ..errors import InputError
from ..padding import pad_rows
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


@dataclass(frozen=True)
class TopK:
    """The top-k lists of one column pair for a batch, flat.

    Positions of all rows follow each other (P in total), and the entries of all their lists
    follow each other in ``logits`` and ``ids`` (stored dtypes), ``lengths[p]`` per position.
    """

    positions: np.ndarray  # [B] positions per row
    lengths: np.ndarray  # [P] entries per position
    logits: np.ndarray  # [E]
    ids: np.ndarray  # [E]

    @classmethod
    def from_table(cls, table: pa.Table, logits_column: str, ids_column: str) -> "TopK":
        positions, lengths, logits = nested_lists(column_array(table, logits_column))
        ids_positions, ids_lengths, ids = nested_lists(column_array(table, ids_column))
        if not np.array_equal(positions, ids_positions):
            row = int(np.flatnonzero(positions != ids_positions)[0])
            raise InputError(f"batch row {row} ({_row_name(table, row)}): {logits_column} and {ids_column} "
                             f"have different numbers of positions")
        if not np.array_equal(lengths, ids_lengths):
            raise InputError(f"{_row_name(table, None)}: a position of {logits_column} and {ids_column} "
                             f"has lists of different lengths")
        return cls(positions, lengths, logits, ids)

    @property
    def width(self) -> int:
        return int(self.lengths.max(initial=0))


def topk_targets(lengths: np.ndarray, width: int, limit: int, pivot: TopK, source: TopK,
                 use_source: np.ndarray, transform=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[B, width, K] logits (float32), ids (int64) and validity mask of each position's chosen list.

    Logits are the stored values, or ``transform(stored values)`` with ``transform``, a vectorised
    float32 -> float32 function (kept by the caller: its table below is cached per object).
    Rows are cut at ``limit``; entries past the end of a list are zero.
    """
    k = max(1, pivot.width, source.width)
    pivot_logits, source_logits, table = _kernel_logits(pivot.logits, source.logits, transform)
    shape = (len(lengths), width, k)
    logits, ids, mask = np.zeros(shape, np.float32), np.zeros(shape, np.int64), np.zeros(shape, bool)
    _fill_targets(lengths, limit, use_source, pivot.lengths, pivot_logits, pivot.ids, source.lengths, source_logits,
                  source.ids, table, logits, ids, mask)
    return logits, ids, mask


@functools.lru_cache(maxsize=8)
def float16_table(transform=None) -> np.ndarray:
    """[65536] float32: the value of every float16 bit pattern, or ``transform`` of it."""
    values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    if transform is None:
        return values
    with np.errstate(invalid="ignore", over="ignore"):  # the NaN and inf patterns are in the table too
        return np.asarray(transform(values), dtype=np.float32)


def _kernel_logits(pivot: np.ndarray, source: np.ndarray, transform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both lists' logits as the kernel reads them: float16 as bits, looked up in a table of (transformed)
    values (numba has no float16, and a lookup is cheaper than converting); anything else as float32,
    transformed here."""
    if pivot.dtype == source.dtype == np.float16:
        return pivot.view(np.uint16), source.view(np.uint16), float16_table(transform)
    pivot, source = pivot.astype(np.float32, copy=False), source.astype(np.float32, copy=False)
    if transform is not None:
        pivot, source = (np.asarray(transform(x), dtype=np.float32) for x in (pivot, source))
    return pivot, source, np.zeros(0, np.float32)


def _stored_logit(raw, table):
    """A logit as ``_fill_targets`` reads it: float16 bits through ``table``, float32 as it is (compiled only)."""
    raise NotImplementedError


@overload(_stored_logit, inline="always")
def _stored_logit_compiled(raw, table):
    if isinstance(raw, types.Integer):
        return lambda raw, table: table[raw]
    return lambda raw, table: raw


@njit(cache=True, nogil=True)
def _fill_targets(row_lengths, limit, use_source, pivot_lengths, pivot_logits, pivot_ids, source_lengths,
                  source_logits, source_ids, table, out_logits, out_ids, out_mask):
    """One pass over the positions of all rows: copy each position's chosen list into the outputs.

    A row that took the source uses the source's list at every position where it is not EMPTY;
    everywhere else the pivot's list is used.
    """
    position, pivot_entry, source_entry = 0, 0, 0
    for row in range(row_lengths.shape[0]):
        for t in range(row_lengths[row]):
            pivot_length, source_length = pivot_lengths[position], source_lengths[position]
            if t < limit:
                if use_source[row] and source_length > 0:
                    for j in range(source_length):
                        out_logits[row, t, j] = _stored_logit(source_logits[source_entry + j], table)
                        out_ids[row, t, j] = source_ids[source_entry + j]
                        out_mask[row, t, j] = True
                else:
                    for j in range(pivot_length):
                        out_logits[row, t, j] = _stored_logit(pivot_logits[pivot_entry + j], table)
                        out_ids[row, t, j] = pivot_ids[pivot_entry + j]
                        out_mask[row, t, j] = True
            position += 1
            pivot_entry += pivot_length
            source_entry += source_length


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

    def kept_length(self, lengths: np.ndarray) -> int:
        """Tokens kept per row: the longest row's, cut at max_length."""
        kept = int(lengths.max(initial=1))
        return min(kept, self.max_length) if self.max_length else kept

    def padded_length(self, kept: int) -> int:
        """The batch's width: ``kept`` rounded up to a multiple of pad_to_multiple_of."""
        multiple = self.pad_to_multiple_of
        return -(-kept // multiple) * multiple if multiple else kept

    def __call__(self, features) -> dict[str, torch.Tensor]:
        table = as_table(features)
        input_ids = column_array(table, "input_ids")
        lengths = list_lengths(input_ids)
        kept = self.kept_length(lengths)
        width = self.padded_length(kept)
        if "attention_mask" in table.column_names:
            attention = flat_values(column_array(table, "attention_mask"))
        else:
            attention = np.ones(int(lengths.sum()), np.int64)
        batch = {
            "input_ids": pad_rows(flat_values(input_ids), lengths, width, self.pad_token_id, np.int64, kept),
            "attention_mask": pad_rows(attention, lengths, width, 0, np.int64, kept),
            "labels": pad_rows(flat_values(column_array(table, "labels")), lengths, width, IGNORE_INDEX, np.int64,
                               kept),
        }
        batch = {name: torch.from_numpy(array) for name, array in batch.items()}
        if self.fuse:
            batch.update(self.fuse_targets(table, lengths, width, kept))
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
            use_source = mince_use_source(column_array(table, METRIC_CE).to_numpy(zero_copy_only=False),
                                          column_array(table, FUSED_METRIC_CE).to_numpy(zero_copy_only=False)).numpy()
        else:
            use_source = np.ones(len(lengths), bool)
        logits, ids, mask = topk_targets(lengths, width, limit, pivot, source, use_source)
        return {"target_logits": torch.from_numpy(logits), "target_ids": torch.from_numpy(ids),
                "target_mask": torch.from_numpy(mask), "source_chosen": torch.from_numpy(use_source)}

    def _log_rows(self, table: pa.Table) -> None:
        ids = table.column(ID).to_pylist() if ID in table.column_names else ["?"] * table.num_rows
        with open(self.row_log_path, "a", encoding="utf-8") as handle:
            handle.write("".join(f"{row_id}\n" for row_id in ids))
