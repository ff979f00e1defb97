"""Batches of saved rows: token columns padded (:func:`token_batch`) and top-k columns as dense
[B, T, K] targets (docs/design.md 8, 12.6.2).

A batch's top-k lists (list<list<float16>> logits and list<list<int>> ids per row, as the saved sets
hold them) are read straight from the Arrow buffers (:class:`TopK`); :func:`topk_targets` copies,
per row, the chosen teacher's list at every position where it is not EMPTY and the pivot's list
elsewhere, in one compiled pass. FuseChat chooses between the pivot and its one source per
conversation; FuseLLM builds one array per chosen teacher.
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
from ..schema import ID, IGNORE_INDEX


def token_batch(table: pa.Table, pad_token_id: int, max_length: int | None = None,
                pad_to_multiple_of: int | None = None) -> tuple[dict[str, torch.Tensor], np.ndarray, int, int]:
    """input_ids / attention_mask / labels of a batch padded to its longest row (cut at ``max_length``,
    rounded up to a multiple of ``pad_to_multiple_of``); also the row lengths, the width and the
    tokens kept per row."""
    input_ids = column_array(table, "input_ids")
    lengths = list_lengths(input_ids)
    kept = int(lengths.max(initial=1))
    kept = min(kept, max_length) if max_length else kept
    width = -(-kept // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else kept
    if "attention_mask" in table.column_names:
        attention = flat_values(column_array(table, "attention_mask"))
    else:
        attention = np.ones(int(lengths.sum()), np.int64)
    batch = {
        "input_ids": pad_rows(flat_values(input_ids), lengths, width, pad_token_id, np.int64, kept),
        "attention_mask": pad_rows(attention, lengths, width, 0, np.int64, kept),
        "labels": pad_rows(flat_values(column_array(table, "labels")), lengths, width, IGNORE_INDEX, np.int64, kept),
    }
    return {name: torch.from_numpy(array) for name, array in batch.items()}, lengths, width, kept


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
            raise InputError(f"batch row {row} ({row_name(table, row)}): {logits_column} and {ids_column} "
                             f"have different numbers of positions")
        if not np.array_equal(lengths, ids_lengths):
            raise InputError(f"{row_name(table, None)}: a position of {logits_column} and {ids_column} "
                             f"has lists of different lengths")
        return cls(positions, lengths, logits, ids)

    @classmethod
    def of_rows(cls, table: pa.Table, logits_column: str, ids_column: str, lengths: np.ndarray,
                what: str | None = None) -> "TopK":
        """:meth:`from_table`, checked to hold one list per token of each row (``lengths``)."""
        topk = cls.from_table(table, logits_column, ids_column)
        if not np.array_equal(topk.positions, lengths):
            row = int(np.flatnonzero(topk.positions != lengths)[0])
            where = f"batch row {row}" + (f" ({row_name(table, row)})" if ID in table.column_names else "")
            raise InputError(f"{where}: {what or logits_column} has {topk.positions[row]} positions but "
                             f"input_ids has {lengths[row]}")
        return topk

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


def row_name(table: pa.Table, row: int | None) -> str:
    """A batch row for messages: its conversation id when the batch has one."""
    if row is None or ID not in table.column_names:
        return "this batch" if row is None else f"row {row}"
    return f"id {table.column(ID)[row].as_py()!r}"
