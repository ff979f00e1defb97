"""Dataset-level steps between capture and training (docs/design.md 5 and 7).

* ``replace_columns``: same-vocabulary sources (replace_model): the source's distributions become the
  pivot rows' fused columns, or (``pivot`` mode) overwrite the pivot's own columns.
* ``nan_rows`` / ``drop_rows``: filter_nan.
* ``lowest_metric_choice`` / ``select_fused``: fuse_multi, FuseLLM's multi-source MinCE (``fuse-all-mince``)
  and plugging in a new source (``add-new``).

All work on Arrow columns, never on Python loops over rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .arrow import arrow_column, without_indices_mapping
from .errors import InputError
from .kernels.teacher_rules import mince_choice
from .schema import (
    FUSED_COLUMNS, FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, IGNORE_INDEX, INDICES, LOGITS, METRIC_CE,
    PER_STEP_METRIC_CE, REPRESENTATION_COLUMNS, TOKEN_COLUMNS, check_same_conversations,
    metric_array, require_columns,
)

NAN_AS = 1e5  # fuse_multi: a NaN metric loses against any real one
logger = logging.getLogger("fusechat")


def concatenate(datasets, names: list[str]):
    """Comma-separated inputs are concatenated in order."""
    from datasets import concatenate_datasets

    if len(datasets) == 1:
        return datasets[0]
    first = datasets[0].features
    for ds, name in zip(datasets[1:], names[1:]):
        if ds.features != first:
            raise InputError(f"{name} has other columns or types than {names[0]}: cannot concatenate them")
    return concatenate_datasets(datasets)


def _check_same_vocabulary_dtype(pivot, source, pivot_name: str, source_name: str) -> None:
    a, b = pivot.features[INDICES].feature.feature.dtype, source.features[INDICES].feature.feature.dtype
    if a != b:
        raise InputError(f"{source_name} stores {b} vocabulary ids but {pivot_name} {a}: their vocabularies "
                         "differ in size; align a different-vocabulary source with align_token_and_vocab")


def _flat_lists(dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(row offsets starting at 0, flat int64 values) of a list<int> column, rows in the dataset's order."""
    array = arrow_column(dataset, column)
    offsets = np.asarray(array.offsets, dtype=np.int64)
    return offsets - offsets[0], np.asarray(array.flatten(), dtype=np.int64)


def turn_separator_id(dataset) -> int | None:
    """The id that closes the assistant replies of a tokenized set: the most common last token of a
    labelled run that an unlabelled position follows in the same row (a reply cut by truncation ends
    a row instead, and is not counted). None when no reply is closed inside a row."""
    offsets, labels = _flat_lists(dataset, "labels")
    labelled = labels != IGNORE_INDEX
    ends = np.flatnonzero(labelled[:-1] & ~labelled[1:])  # t labelled, t + 1 not (flat positions)
    row_of = np.searchsorted(offsets, ends, side="right") - 1
    inside = ends + 1 < offsets[row_of + 1]  # t + 1 in the same row
    closers = labels[ends[inside]]
    if not closers.size:
        return None
    values, counts = np.unique(closers, return_counts=True)
    return int(values[np.argmax(counts)])


@dataclass(frozen=True)
class SeparatorDifferences:
    """Where a same-vocabulary source's input_ids differ from the pivot's: only at turn separators."""

    positions: int  # token positions that differ
    rows: int  # rows with at least one
    pivot_separator: int | None
    source_separator: int | None


def compare_same_vocabulary_tokens(pivot, source, pivot_name: str, source_name: str) -> SeparatorDifferences:
    """docs/design.md 5: both sets tokenize every conversation alike, except that under one template each
    model closes a turn with its own separator (OpenChat <|end_of_turn|> 32000, Mixtral </s> 2).
    Rows must have equal lengths and may differ only where the pivot holds its separator and the source
    holds its own; anything else raises, naming the row id and the first differing position."""
    p_offsets, p_ids = _flat_lists(pivot, "input_ids")
    s_offsets, s_ids = _flat_lists(source, "input_ids")
    p_len, s_len = np.diff(p_offsets), np.diff(s_offsets)
    p_sep, s_sep = turn_separator_id(pivot), turn_separator_id(source)

    def row_id(row: int):
        return pivot[row][ID] if ID in pivot.column_names else row

    bad_length = np.flatnonzero(p_len != s_len)
    equal_rows = p_len == s_len
    if bad_length.size:  # compare only the rows of equal length, position by position
        p_ids = p_ids[np.repeat(equal_rows, p_len)]
        s_ids = s_ids[np.repeat(equal_rows, s_len)]
    offsets = np.concatenate([[0], np.cumsum(np.where(equal_rows, p_len, 0))])
    differ = np.flatnonzero(p_ids != s_ids)
    at_separator = (p_ids[differ] == p_sep) & (s_ids[differ] == s_sep) if p_sep != s_sep else np.zeros(differ.size, bool)
    other = differ[~at_separator]
    first_other_row = int(np.searchsorted(offsets, other[0], side="right") - 1) if other.size else None
    first_length_row = int(bad_length[0]) if bad_length.size else None

    if first_length_row is not None and (first_other_row is None or first_length_row < first_other_row):
        row = first_length_row
        a, b = pivot[row]["input_ids"], source[row]["input_ids"]
        position = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        raise InputError(f"row {row} (id {row_id(row)!r}): {pivot_name} has {len(a)} tokens but {source_name} has "
                         f"{len(b)} (first differing position {position}); sets of a shared vocabulary tokenize "
                         "alike (a different vocabulary needs align_token_and_vocab)")
    if first_other_row is not None:
        row = first_other_row
        position = int(other[0] - offsets[row])
        raise InputError(
            f"row {row} (id {row_id(row)!r}), position {position}: input_ids differ between {pivot_name} "
            f"(id {int(p_ids[other[0]])}) and {source_name} (id {int(s_ids[other[0]])}), and not at a turn "
            f"separator (pivot {p_sep}, source {s_sep}); sets of a shared vocabulary tokenize alike "
            "(a different vocabulary needs align_token_and_vocab)")
    rows = np.unique(np.searchsorted(offsets, differ, side="right") - 1).size
    return SeparatorDifferences(int(differ.size), int(rows), p_sep, s_sep)


def replace_columns(pivot, source, mode: str, pivot_name: str, source_name: str):
    """docs/design.md 5. ``source``: add the source's distributions as the fused columns of the pivot's rows.
    ``pivot``: overwrite the pivot's token and representation columns with the source's."""
    for ds, name in ((pivot, pivot_name), (source, source_name)):
        require_columns(ds, (*TOKEN_COLUMNS, *REPRESENTATION_COLUMNS), name)
    _check_same_vocabulary_dtype(pivot, source, pivot_name, source_name)
    for ds, name in ((pivot, pivot_name), (source, source_name)):
        metric_values(ds, METRIC_CE, name)  # an infinity would become the MinCE choice
    check_same_conversations(pivot, source, pivot_name, source_name)
    report = compare_same_vocabulary_tokens(pivot, source, pivot_name, source_name)
    if report.positions:
        logger.info("%s: %d token positions in %d rows differ from %s, all at turn separators (pivot id %s, "
                    "source id %s)", source_name, report.positions, report.rows, pivot_name,
                    report.pivot_separator, report.source_separator)
    else:
        logger.info("%s: input_ids identical to %s (0 positions differ)", source_name, pivot_name)
    from datasets import concatenate_datasets

    if mode == "source":
        kept = pivot.remove_columns([c for c in (PER_STEP_METRIC_CE, *FUSED_COLUMNS) if c in pivot.column_names])
        added = source.select_columns(list(REPRESENTATION_COLUMNS)).rename_columns(
            {LOGITS: FUSED_LOGITS, INDICES: FUSED_INDICES, METRIC_CE: FUSED_METRIC_CE})
    elif mode == "pivot":
        replaced = (*TOKEN_COLUMNS, *REPRESENTATION_COLUMNS, PER_STEP_METRIC_CE)
        kept = pivot.remove_columns([c for c in replaced if c in pivot.column_names])
        added = source.select_columns(list(TOKEN_COLUMNS + REPRESENTATION_COLUMNS))
    else:
        raise InputError(f"--replace_model must be 'source' or 'pivot', got {mode!r}")
    return concatenate_datasets([without_indices_mapping(kept), without_indices_mapping(added)], axis=1)


def metric_values(dataset, column: str, where: str = "the set") -> np.ndarray:
    """A sequence metric as float64 (NaN for a failed row); infinities and non-numbers are refused."""
    return metric_array(arrow_column(dataset, column), column, where)


def nan_rows(dataset, columns=(METRIC_CE, FUSED_METRIC_CE), where: str = "the set") -> np.ndarray:
    """Rows whose sequence metrics (those present among ``columns``) are NaN."""
    present = [c for c in columns if c in dataset.column_names]
    if not present:
        raise InputError(f"no metric column among {list(columns)}; found {dataset.column_names}")
    bad = np.zeros(len(dataset), dtype=bool)
    for column in present:
        bad |= np.isnan(metric_values(dataset, column, where))
    return np.flatnonzero(bad)


def drop_rows(dataset, rows: np.ndarray):
    keep = np.setdiff1d(np.arange(len(dataset)), rows)
    return dataset.select(keep)


def lowest_metric_choice(metrics: list[np.ndarray]) -> np.ndarray:
    """Per row, the index of the set with the lowest metric (NaN counts as 1e5; ties to the earlier
    set): the MinCE teacher rule on the rewards -CE (the rule only ranks them; the float64 CEs are
    compared as they are, not as bf16 rewards)."""
    import torch

    rewards = -torch.from_numpy(np.nan_to_num(np.stack(metrics, axis=-1), nan=NAN_AS))
    return mince_choice(rewards, pivot_is_candidate=True).numpy()  # ties: the first maximum


def select_fused(datasets, names: list[str], choice: np.ndarray, chunk_rows: int = 1024):
    """The first set's rows with, per row, the fused columns of ``datasets[choice[row]]`` (Arrow ``take``)."""
    import pyarrow as pa
    from datasets import Dataset, concatenate_datasets

    for ds, name in zip(datasets, names):
        require_columns(ds, FUSED_COLUMNS, name)
    for ds, name in zip(datasets[1:], names[1:]):
        check_same_conversations(datasets[0], ds, names[0], name, compare_input_ids=True)
    types = {repr(ds.features[FUSED_INDICES]) for ds in datasets}
    if len(types) > 1:
        raise InputError(f"the fused columns of {names} have different types; were they aligned to one pivot?")
    n = len(datasets[0])
    chunks = []
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        parts = [ds.with_format("arrow")[start:stop].select(list(FUSED_COLUMNS)) for ds in datasets]
        table = pa.concat_tables(parts)
        take = choice[start:stop] * (stop - start) + np.arange(stop - start)
        chunks.append(table.take(pa.array(take)))
    fused = Dataset(pa.concat_tables(chunks)).cast(datasets[0].select_columns(list(FUSED_COLUMNS)).features)
    base = datasets[0].remove_columns(list(FUSED_COLUMNS))
    return concatenate_datasets([without_indices_mapping(base), fused], axis=1)


def row_ids(dataset, rows) -> list[str]:
    if ID not in dataset.column_names:
        return [str(r) for r in rows]
    ids = arrow_column(dataset, ID)
    return [ids[int(r)].as_py() for r in rows]


def without_nan_rows(dataset, report_path: str, where: str = "the set"):
    """filter_nan: the set without its NaN-metric rows; their ids go to ``report_path`` (JSON) when
    there are any. Returns ``(kept set, dropped ids)``; a set with nothing left is an error."""
    from .storage import write_json

    bad = nan_rows(dataset, where=where)
    if len(dataset) and len(bad) == len(dataset):
        raise InputError(f"{where}: every one of its {len(dataset)} rows has a NaN metric; nothing would be left "
                         "to train on")
    ids = row_ids(dataset, bad)
    if len(bad):
        write_json(report_path, ids)
    return drop_rows(dataset, bad), ids


def fuse_by_mince(datasets, names: list[str]):
    """fuse_multi: per row, the fused columns of the set with the lowest ``fused_metric_ce``.
    Returns ``(fused set, rows taken from each set)``."""
    for ds, name in zip(datasets, names, strict=True):
        require_columns(ds, FUSED_COLUMNS, name)
    for ds, name in zip(datasets[1:], names[1:]):  # MinCE compares row r of every set: same conversations
        check_same_conversations(datasets[0], ds, names[0], name)
    choice = lowest_metric_choice([metric_values(ds, FUSED_METRIC_CE, name) for ds, name in zip(datasets, names)])
    return select_fused(datasets, names, choice), np.bincount(choice, minlength=len(datasets))
