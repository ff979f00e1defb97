"""storage: the scratch folder beside an output and the train-split helpers."""

import threading
import time

import pytest
from datasets import Dataset

from fusechat.errors import InputError
from fusechat import fixtures
from fusechat.storage import build_lock, load_train_splits, read_json, save_train_split, scratch_dir


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


def test_build_lock_makes_concurrent_builders_take_turns(tmp_path):
    final = tmp_path / "model"
    events = []

    def build(name):
        with build_lock(final):
            events.append(("enter", name))
            time.sleep(0.2)
            events.append(("leave", name))

    threads = [threading.Thread(target=build, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = events[0][1], events[2][1]
    assert events == [("enter", first), ("leave", first), ("enter", second), ("leave", second)]
    assert {first, second} == {"a", "b"}


def test_concurrent_fixture_builds_give_one_complete_folder(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(fixtures.build_tokenizer("mistral", tmp_path)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert (results[0] / "tokenizer_config.json").is_file()
    # Only the finished folder and its lock remain: no half-built or replaced copies.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([results[0].name, f".{results[0].name}.lock"])
