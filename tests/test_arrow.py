"""The Arrow helpers and the padder, against hand-written expectations."""

import numpy as np
import pyarrow as pa
from datasets import Dataset

from fusechat.arrow import (first_differing_row, list_lengths, list_values, nested_lists, record_batches, row_lengths,
                            without_indices_mapping)
from fusechat.padding import pad_lists, pad_rows


def test_without_indices_mapping_relies_on_a_datasets_internal_that_must_still_exist():
    """``datasets`` has no public test for an indices mapping: if ``_indices`` goes away or changes
    meaning, this fails loudly instead of sets being copied (or not flattened) silently."""
    plain = Dataset.from_dict({"x": [10, 11, 12]})
    assert plain._indices is None and without_indices_mapping(plain) is plain
    selected = plain.select([2, 0])
    assert selected._indices is not None
    flat = without_indices_mapping(selected)
    assert flat._indices is None and flat["x"] == [12, 10]


def test_record_batches_follow_the_row_order_of_a_selection():
    ds = Dataset.from_dict({"id": list("abcde"), "v": [[1], [2, 2], [], [4], [5, 5, 5]]}).select([4, 0, 2, 1, 3])
    batches = list(record_batches(ds, ["id", "v"], rows=2))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert [i for b in batches for i in b.column("id").to_pylist()] == list("eacbd")
    assert row_lengths(ds, "v").tolist() == [3, 1, 0, 2, 1]


def test_list_lengths_of_plain_sliced_large_and_null_lists():
    lists = pa.array([[1, 2], [], [3, 4, 5], [6]])
    assert list_lengths(lists).tolist() == [2, 0, 3, 1]
    assert list_lengths(lists.slice(1, 2)).tolist() == [0, 3]
    assert list_lengths(pa.array([[1], [2, 3]], pa.large_list(pa.int64()))).tolist() == [1, 2]
    assert list_lengths(pa.array([[1], None, [2, 3]])).tolist() == [1, 0, 2]
    # a null list whose offsets span values still counts 0 entries
    spanning = pa.ListArray.from_arrays(pa.array([0, 1, 3, 4]), pa.array([1, 2, 3, 4]),
                                        mask=pa.array([False, True, False]))
    assert list_lengths(spanning).tolist() == [1, 0, 1]
    assert list_lengths(lists).dtype == np.int64


def test_list_values_are_the_entries_of_the_lists_in_view():
    lists = pa.array([[1, 2], [3], [], [4, 5, 6]])
    assert list_values(lists).to_pylist() == [1, 2, 3, 4, 5, 6]
    assert list_values(lists.slice(1, 2)).to_pylist() == [3]
    assert list_values(lists.slice(2)).to_pylist() == [4, 5, 6]
    assert list_values(pa.array([[[1.0], [2.0, 3.0]], [[4.0]]]).slice(1)).to_pylist() == [[4.0]]
    spanning = pa.ListArray.from_arrays(pa.array([0, 1, 3, 4]), pa.array([1, 2, 3, 4]),
                                        mask=pa.array([False, True, False]))
    assert list_values(spanning).to_pylist() == [1, 4]


def test_nested_lists_of_plain_sliced_and_null_lists():
    def as_lists(array):
        positions, lengths, values = nested_lists(array)
        return positions.tolist(), lengths.tolist(), values.tolist()

    rows = pa.array([[[1.5, 2.5], []], [[3.5]], [[4.5, 5.5, 6.5], [7.5]]], pa.list_(pa.list_(pa.float16())))
    assert as_lists(rows) == ([2, 1, 2], [2, 0, 1, 3, 1], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
    assert nested_lists(rows)[2].dtype == np.float16
    assert as_lists(rows.slice(1, 2)) == ([1, 2], [1, 3, 1], [3.5, 4.5, 5.5, 6.5, 7.5])
    assert as_lists(rows.slice(2)) == ([2], [3, 1], [4.5, 5.5, 6.5, 7.5])
    assert as_lists(pa.array([[[1], None], None, [[2, 3]]])) == ([2, 0, 1], [1, 0, 2], [1, 2, 3])
    assert as_lists(pa.array([[[]], [[], []]])) == ([1, 2], [0, 0, 0], [])


def test_first_differing_row():
    left = pa.array([[1, 2], [3], [4, 5]])
    assert first_differing_row(left, pa.array([[1, 2], [3], [4, 5]])) is None
    assert first_differing_row(left, pa.array([[1, 2], [3], [4, 6]])) == 2
    assert first_differing_row(left, pa.array([[1, 2], [3, 0], [4, 5]])) == 1
    assert first_differing_row(pa.array(["a", "b"]), pa.array(["a", "c"])) == 1


def test_padders():
    assert pad_lists([[1, 2, 3], [4], []], -1, np.int64).tolist() == [[1, 2, 3], [4, -1, -1], [-1, -1, -1]]
    assert pad_lists([[0.5, 1.0], [2.0, 3.0]], 0.0, np.float64).tolist() == [[0.5, 1.0], [2.0, 3.0]]
    assert pad_lists([], 0, np.int64).shape == (0, 0)
    values, lengths = np.array([1, 2, 3, 4, 5, 6]), np.array([3, 1, 2])
    assert pad_rows(values, lengths, 4, 0, np.int64, limit=2).tolist() == [[1, 2, 0, 0], [4, 0, 0, 0], [5, 6, 0, 0]]
    assert pad_rows(values, lengths, 3, 9, np.int64).tolist() == [[1, 2, 3], [4, 9, 9], [5, 6, 9]]
    full = np.array([1, 2, 3, 4, 5, 6], np.int32)  # every row as long as the width: no padding
    padded = pad_rows(full, np.array([3, 3]), 3, 0, np.int64)
    assert padded.dtype == np.int64 and padded.tolist() == [[1, 2, 3], [4, 5, 6]]
    padded[0, 0] = 7
    assert full[0] == 1  # a copy, not a view of the values
    assert pad_rows(full, np.array([3, 3]), 3, 0, np.int64, limit=2).tolist() == [[1, 2, 0], [4, 5, 0]]


def test_dataset_from_tables_casts_to_the_features_and_keeps_the_table_order(tmp_path):
    from datasets import Features, List, Value

    from fusechat.arrow import dataset_from_tables

    features = Features({"ids": List(Value("int32")), "metric": Value("float64"), "logits": List(Value("float16"))})
    tables = [pa.table({"ids": [[1, 2], [3]], "metric": [0.5, 1.25], "logits": [[1.5, 2.0], [0.25]]}),
              pa.table({"ids": [[]], "metric": [2.0], "logits": [[]]})]
    out = dataset_from_tables(iter(tables), features, tmp_path / "rows.arrow")
    assert out.features == features
    assert out.to_dict() == {"ids": [[1, 2], [3], []], "metric": [0.5, 1.25, 2.0], "logits": [[1.5, 2.0], [0.25], []]}
    empty = dataset_from_tables([], features, tmp_path / "none.arrow")
    assert len(empty) == 0 and empty.features == features
