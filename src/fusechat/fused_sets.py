"""Dataset-level steps between capture and training (DESIGN.md 5 and 7).

* ``replace_columns``: same-vocabulary sources (replace_model): the source's distributions become the
  pivot rows' fused columns, or (``pivot`` mode) overwrite the pivot's own columns.
* ``nan_rows`` / ``drop_rows``: filter_nan.
* ``mince_choice`` / ``select_fused``: fuse_multi, FuseLLM's multi-source MinCE (``fuse-all-mince``)
  and plugging in a new source (``add-new``).

All work on Arrow columns, never on Python loops over rows.
"""

from __future__ import annotations

import numpy as np

from .arrow import arrow_column, without_indices_mapping
from .errors import InputError
from .schema import (
    FUSED_COLUMNS, FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, INDICES, LOGITS, METRIC_CE,
    PER_STEP_METRIC_CE, REPRESENTATION_COLUMNS, TOKEN_COLUMNS, check_same_conversations,
    require_columns,
)

NAN_AS = 1e5  # fuse_multi: a NaN metric loses against any real one


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


def replace_columns(pivot, source, mode: str, pivot_name: str, source_name: str):
    """DESIGN.md 5. ``source``: add the source's distributions as the fused columns of the pivot's rows.
    ``pivot``: overwrite the pivot's token and representation columns with the source's."""
    for ds, name in ((pivot, pivot_name), (source, source_name)):
        require_columns(ds, (*TOKEN_COLUMNS, *REPRESENTATION_COLUMNS), name)
    _check_same_vocabulary_dtype(pivot, source, pivot_name, source_name)
    check_same_conversations(pivot, source, pivot_name, source_name, compare_input_ids=True)
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


def metric_values(dataset, column: str) -> np.ndarray:
    return np.asarray(arrow_column(dataset, column).to_numpy(zero_copy_only=False), dtype=np.float64)


def nan_rows(dataset, columns=(METRIC_CE, FUSED_METRIC_CE)) -> np.ndarray:
    """Rows whose sequence metrics (those present among ``columns``) are NaN."""
    present = [c for c in columns if c in dataset.column_names]
    if not present:
        raise InputError(f"no metric column among {list(columns)}; found {dataset.column_names}")
    bad = np.zeros(len(dataset), dtype=bool)
    for column in present:
        bad |= np.isnan(metric_values(dataset, column))
    return np.flatnonzero(bad)


def drop_rows(dataset, rows: np.ndarray):
    keep = np.setdiff1d(np.arange(len(dataset)), rows)
    return dataset.select(keep)


def mince_choice(metrics: list[np.ndarray]) -> np.ndarray:
    """Per row, the index of the lowest metric (NaN counts as 1e5; ties to the earlier one)."""
    stacked = np.nan_to_num(np.stack(metrics), nan=NAN_AS)
    return np.argmin(stacked, axis=0)


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


def without_nan_rows(dataset, report_path: str):
    """filter_nan: the set without its NaN-metric rows; their ids go to ``report_path`` (JSON) when
    there are any. Returns ``(kept set, dropped ids)``."""
    from .storage import write_json

    bad = nan_rows(dataset)
    ids = row_ids(dataset, bad)
    if len(bad):
        write_json(report_path, ids)
    return drop_rows(dataset, bad), ids


def fuse_by_mince(datasets, names: list[str]):
    """fuse_multi: per row, the fused columns of the set with the lowest ``fused_metric_ce``.
    Returns ``(fused set, rows taken from each set)``."""
    for ds, name in zip(datasets, names, strict=True):
        require_columns(ds, FUSED_COLUMNS, name)
    choice = mince_choice([metric_values(ds, FUSED_METRIC_CE) for ds in datasets])
    return select_fused(datasets, names, choice), np.bincount(choice, minlength=len(datasets))
