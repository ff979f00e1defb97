"""Arrow helpers shared by the stages: columns of saved sets read without Python lists per token,
list lengths and values, and the one place that relies on a ``datasets`` internal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def arrow_column(dataset, name: str):
    """One column as a single pyarrow array, rows in the dataset's order (index mappings applied)."""
    column = dataset.with_format("arrow")[name]
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def row_lengths(dataset, column: str = "input_ids"):
    """Per-row lengths of a list column, read from Arrow offsets (no Python lists of tokens)."""
    return np.diff(np.asarray(arrow_column(dataset, column).offsets))


def first_differing_row(left, right) -> int | None:
    """First row where two equal-length list<int> (or string) columns differ, else None; vectorised."""
    if pa.types.is_list(left.type) or pa.types.is_large_list(left.type):
        lo, ro = np.asarray(left.offsets) - left.offsets[0].as_py(), np.asarray(right.offsets) - right.offsets[0].as_py()
        lengths_differ = np.flatnonzero(np.diff(lo) != np.diff(ro))
        limit = int(lengths_differ[0]) if lengths_differ.size else len(left)
        lv = np.asarray(left.flatten()[: lo[limit]], dtype=np.int64)
        rv = np.asarray(right.flatten()[: ro[limit]], dtype=np.int64)
        values_differ = np.flatnonzero(lv != rv)
        if values_differ.size:
            return int(np.searchsorted(lo, values_differ[0], side="right") - 1)
        return limit if lengths_differ.size else None
    equal = pc.fill_null(pc.equal(left, right), False)
    differ = np.flatnonzero(~np.asarray(equal))
    return int(differ[0]) if differ.size else None


def column_array(table: pa.Table, name: str) -> pa.Array:
    """One column of a table as a single array."""
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def list_lengths(array: pa.Array) -> np.ndarray:
    """Entries of each list of a list array (0 for a null list)."""
    if array.null_count == 0:  # the offsets alone (a null list's offsets need not be equal)
        offsets = np.asarray(array.offsets).astype(np.int64, copy=False)
        return offsets[1:] - offsets[:-1]
    return pc.list_value_length(array).fill_null(0).to_numpy().astype(np.int64)


def list_values(array: pa.Array) -> pa.Array:
    """The entries of all lists of a list array, end to end (``flatten``), as an Arrow array."""
    if array.null_count:  # a null list may span values that are not its entries
        return array.flatten()
    offsets = np.asarray(array.offsets)  # the slice of ``values`` this array's lists span
    return array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def flat_values(array: pa.Array) -> np.ndarray:
    """The entries of all lists of a list array, end to end, in their stored dtype."""
    flat = list_values(array)
    if pa.types.is_null(flat.type):  # every list is empty (from Python rows, the type is unknown)
        return np.zeros(len(flat), np.int64)
    return flat.to_numpy(zero_copy_only=False)


def nested_lists(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<T>> array as numpy: (entries per row [B], entries per inner list [P], the values
    end to end [E]), the counts in the offsets' integer type. Read straight from the offsets and
    values buffers (zero-copy) when nothing is null: a top-k column of a batch then costs a few
    microseconds, not one Arrow kernel per step."""
    child = array.values
    leaf = child.values
    if array.null_count or child.null_count or leaf.null_count or pa.types.is_null(leaf.type):
        inner = list_values(array)
        return list_lengths(array), list_lengths(inner), flat_values(inner)
    outer = np.asarray(array.offsets)
    inner = np.asarray(child.offsets)[outer[0]:outer[-1] + 1]
    values = leaf.to_numpy()[inner[0]:inner[-1]]
    return outer[1:] - outer[:-1], inner[1:] - inner[:-1], values


def record_batches(dataset, columns: Sequence[str], rows: int) -> Iterator[pa.RecordBatch]:
    """``columns`` of a ``datasets.Dataset`` as record batches of at most ``rows`` rows, in row order."""
    for table in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=rows):
        yield from table.combine_chunks().to_batches()


def dataset_from_tables(tables: Iterable[pa.Table], features, path):
    """A ``datasets.Dataset`` of ``tables`` written one by one to the Arrow stream file ``path`` (cast
    to ``features``), so only one table is in memory; the dataset is memory-mapped from ``path``."""
    from datasets import Dataset

    schema = features.arrow_schema  # carries the features as metadata, so they are read back exactly
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for table in tables:
            writer.write_table(table.cast(schema))
    return Dataset.from_file(str(path))


def without_indices_mapping(dataset):
    """The dataset with its rows in order on disk: ``flatten_indices`` when it has an indices mapping
    (after ``select``/``shuffle``), else the dataset itself, so unmapped sets are never copied.

    ``datasets`` has no public way to ask for the mapping; ``_indices`` is read here only, and
    tests/test_arrow.py fails if it changes.
    """
    return dataset.flatten_indices() if dataset._indices is not None else dataset
