"""storage: the scratch folder beside an output and the train-split helpers."""

import pytest
from datasets import Dataset

from fusechat.errors import InputError
from fusechat.storage import load_train_splits, read_json, save_train_split, scratch_dir


def test_scratch_dir_sits_beside_the_output_and_is_removed_even_on_error(tmp_path):
    out = tmp_path / "deep" / "aligned"
    with pytest.raises(RuntimeError):
        with scratch_dir(out, "scratch") as scratch:
            assert scratch.parent == out.parent and scratch.name.startswith(".aligned.scratch-")
            (scratch / "cache.arrow").write_text("x")
            raise RuntimeError("interrupted")
    assert not scratch.exists() and list(out.parent.iterdir()) == []


def test_train_splits_round_trip_in_the_order_given(tmp_path):
    for name, rows in (("a", [1, 2]), ("b", [3])):
        save_train_split(Dataset.from_dict({"x": rows}), tmp_path / name)
    sets, names = load_train_splits(f"{tmp_path / 'b'}, {tmp_path / 'a'}", "set")
    assert names == [str(tmp_path / "b"), str(tmp_path / "a")]
    assert [s["x"] for s in sets] == [[3], [1, 2]]
    with pytest.raises(InputError, match="no set given"):
        load_train_splits(" , ", "set")
    with pytest.raises(InputError, match="set folder not found"):
        load_train_splits(str(tmp_path / "missing"), "set")


def test_read_json_names_the_flag_and_how_to_make_a_missing_file(tmp_path):
    good, bad = tmp_path / "map.json", tmp_path / "bad.json"
    good.write_text('{"a": [1, 2]}', encoding="utf-8")
    bad.write_text("{not json", encoding="utf-8")
    assert read_json(good, "--map", "run x") == {"a": [1, 2]}
    with pytest.raises(InputError, match=r"^--map .*missing\.json: no such file \(run x first\)$"):
        read_json(tmp_path / "missing.json", "--map", "run x first")
    with pytest.raises(InputError, match=r"^--map .*bad\.json: not valid JSON"):
        read_json(bad, "--map", "run x")
    with pytest.raises(InputError, match="no such file"):
        read_json(tmp_path, "--map", "run x")  # a folder is not the file
