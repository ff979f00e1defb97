"""Bad input to the data stages: stale tokenized sets, outputs that would destroy inputs or user files,
dropped or duplicated conversations, impossible sizes. Each case through the stage's entry point:
exit status 2, one error line naming what and where, and nothing written or lost."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from datasets import load_from_disk

from bad_input_common import (GOOD_RECORDS, assert_one_error, conversation, run_script, snapshot, umask,
                              user_folder, write_corpus)
from fusechat import provenance
from fusechat.cli import filter_nan, fuse_multi, get_data_representation, replace_model
from fusechat.storage import OUTPUT_MARKER
from fusechat.training import run as train


def representation_argv(model, corpus, tk, rep=None, *extra):
    argv = ["--model_name_or_path", model, "--data_path", corpus, "--tknz_dataset_path", tk, "--mask_instruction",
            "--model_max_length", "128", "--conv_temp", "openchat_3.5", *extra]
    if rep is not None:
        argv += ["--dataset_save_dir", rep, "--get_representation"]
    return argv


@pytest.fixture(scope="module")
def made(tmp_path_factory, pivot_path):
    """A tokenized and a representation set of the pivot, made once."""
    root = tmp_path_factory.mktemp("made")
    corpus = write_corpus(root / "corpus.json")
    tk, rep = root / "tk", root / "rep"
    get_data_representation.main([str(a) for a in representation_argv(pivot_path, corpus, tk, rep)])
    return {"root": root, "corpus": corpus, "tk": tk, "rep": rep}


# ------------------------------------------------------------------ stale tokenized sets

def test_a_set_records_what_made_it(made, pivot_path, openchat_tokenizer):
    record = provenance.read_record(made["tk"])
    assert record["tokenizer"]["path"] == str(pivot_path)
    assert record["tokenizer"]["size"] == 32002
    assert record["conv_temp"] == "openchat_3.5" and record["separator"] == "<|end_of_turn|>"
    assert record["model_max_length"] == 128 and record["mask_instruction"] is True
    assert (record["split_num"], record["split_index"], record["sample_prop"]) == (None, None, None)
    assert record["corpus"]["fingerprint"] == provenance.file_fingerprint(made["corpus"])
    rep_record = provenance.read_record(made["rep"])
    assert rep_record["kind"] == "representation" and rep_record["top_k_logits"] == 10
    assert rep_record["tokenizer"] == record["tokenizer"]


@pytest.mark.parametrize("change, first_difference", [
    ("tokenizer", "tokenizer: made with"),
    ("corpus", "corpus: made from"),
    ("split", "split_num: None in the set, 2 in this run"),
    ("sample", "sample_prop: None in the set, 0.5 in this run"),
    ("template", "conv_temp: 'openchat_3.5' in the set, 'qwen' in this run"),
    ("max_length", "model_max_length: 128 in the set, 64 in this run"),
    ("mask", "mask_instruction: True in the set, False in this run"),
])
def test_a_stale_tokenized_set_is_refused_saying_what_differs(made, tmp_path, capsys, pivot_path,
                                                              diff_vocab_source_path, change, first_difference):
    model, corpus = pivot_path, made["corpus"]
    argv = representation_argv(model, corpus, made["tk"], tmp_path / "rep")
    if change == "tokenizer":  # a Qwen model on OpenChat ids
        argv[1] = diff_vocab_source_path
    elif change == "corpus":
        argv[3] = write_corpus(tmp_path / "other.json", GOOD_RECORDS[:3])
    elif change == "split":
        argv += ["--dataset_split_num", "2", "--dataset_index", "1"]
    elif change == "sample":
        argv += ["--dataset_sample_prop", "0.5"]
    elif change == "template":
        argv[argv.index("--conv_temp") + 1] = "qwen"
    elif change == "max_length":
        argv[argv.index("--model_max_length") + 1] = "64"
    elif change == "mask":
        argv.remove("--mask_instruction")
    before = snapshot(made["root"])
    code, err = run_script(capsys, get_data_representation.main, argv)
    line = assert_one_error(code, err, f"--tknz_dataset_path {made['tk']} was made with other settings: ")
    assert first_difference in line
    assert snapshot(made["root"]) == before and not (tmp_path / "rep").exists()


def test_the_same_corpus_at_another_path_is_reused(made, tmp_path, capsys, pivot_path):
    copy = shutil.copy(made["corpus"], tmp_path / "moved.json")
    code, err = run_script(capsys, get_data_representation.main,
                           representation_argv(pivot_path, copy, made["tk"], tmp_path / "rep"))
    assert code == 0, err
    assert load_from_disk(str(tmp_path / "rep"))["train"]["id"] == ["a", "b", "c", "d"]


def test_train_refuses_a_set_made_with_another_tokenizer(made, tmp_path, capsys, diff_vocab_source_path):
    out = tmp_path / "ckpt"
    argv = ["--model_name_or_path", diff_vocab_source_path, "--data_path", made["rep"], "--output_dir", out,
            "--train_baseline", "True", "--use_cpu", "True", "--model_max_length", "128",
            "--conv_temp", "openchat_3.5", "--report_to", "none"]
    code, err = run_script(capsys, train.main, argv, prog="train.py")
    line = assert_one_error(code, err, f"--data_path {made['rep']} was tokenized with ", prog="train.py")
    assert "32002 tokens" in line and "151646 tokens" in line
    assert not out.exists()


# ------------------------------------------------------------------ outputs that are inputs or user folders

def replace_argv(pivot_set, source_set, out):
    return ["--dataset_dir", pivot_set, "--replace_dataset_dir", source_set, "--dataset_save_dir", out]


@pytest.mark.parametrize("which", ["rep", "tk"])
def test_replace_model_refuses_an_output_that_is_an_input(made, capsys, which):
    before = snapshot(made["root"])
    target = made[which]  # the --dataset_dir set or the --replace_dataset_dir set
    code, err = run_script(capsys, replace_model.main, replace_argv(made["rep"], made["tk"], target))
    assert_one_error(code, err, f"--dataset_save_dir {target} is also an input ({target})")
    assert snapshot(made["root"]) == before


def test_replace_model_refuses_a_folder_it_did_not_write(made, tmp_path, capsys):
    out = user_folder(tmp_path / "mine")
    before = snapshot(tmp_path)
    code, err = run_script(capsys, replace_model.main, replace_argv(made["rep"], made["rep"], out))
    assert_one_error(code, err, f"--dataset_save_dir {out} is an existing folder that this project did not write")
    assert snapshot(tmp_path) == before


def test_an_output_of_ours_is_replaced_with_user_permissions(made, tmp_path, capsys):
    out = tmp_path / "replaced"
    for _ in range(2):  # the second run replaces the first run's output
        code, err = run_script(capsys, replace_model.main, replace_argv(made["rep"], made["rep"], out))
        assert code == 0, err
    assert (out / OUTPUT_MARKER).is_file()
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask()
    assert (out / provenance.RECORD_FILE).stat().st_mode & 0o777 == 0o666 & ~umask()
    assert [p.name for p in tmp_path.iterdir()] == ["replaced"]  # no hidden siblings left
    assert provenance.read_record(out)["kind"] == "replaced"


def test_filter_nan_and_fuse_multi_refuse_their_input_as_output(made, capsys):
    before = snapshot(made["root"])
    code, err = run_script(capsys, filter_nan.main, ["--input_data_dir", made["rep"], "--output_data_dir", made["rep"]])
    assert_one_error(code, err, f"--output_data_dir {made['rep']} is also an input")
    code, err = run_script(capsys, fuse_multi.main, ["--dataset_dir", f"{made['rep']},{made['rep']}",
                                                     "--dataset_save_dir", made["rep"]])
    assert_one_error(code, err, f"--dataset_save_dir {made['rep']} is also an input")
    assert snapshot(made["root"]) == before


def test_representation_output_equal_to_the_tokenized_set_is_refused(made, tmp_path, capsys, pivot_path):
    before = snapshot(made["root"])
    code, err = run_script(capsys, get_data_representation.main,
                           representation_argv(pivot_path, made["corpus"], made["tk"], made["tk"]))
    assert_one_error(code, err, f"--dataset_save_dir {made['tk']} is also an input")
    assert snapshot(made["root"]) == before


def test_an_output_under_a_file_is_refused_before_any_work(made, tmp_path, capsys, pivot_path):
    (tmp_path / "afile").write_text("x")
    code, err = run_script(capsys, get_data_representation.main,
                           representation_argv(pivot_path, made["corpus"], tmp_path / "afile" / "tk"))
    assert_one_error(code, err, f"--tknz_dataset_path {tmp_path / 'afile' / 'tk'}: cannot write in")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


# ------------------------------------------------------------------ dropped, duplicated or empty content

def tokenize(capsys, model, corpus, tk, *extra):
    return run_script(capsys, get_data_representation.main,
                      ["--model_name_or_path", model, "--data_path", corpus, "--tknz_dataset_path", tk, *extra])


def test_a_dropped_system_message_is_listed_and_logged(tmp_path, capsys, caplog, pivot_path):
    records = [conversation("sys", ("system", "You are terse."), ("human", "Hi"), ("gpt", "Hello.")),
               *GOOD_RECORDS[:2]]
    corpus = write_corpus(tmp_path / "corpus.json", records)
    with caplog.at_level(logging.WARNING):
        code, err = tokenize(capsys, pivot_path, corpus, tmp_path / "tk")
    assert code == 0, err
    report = json.loads((tmp_path / "tk.dropped_messages.json").read_text())
    assert [r["id"] for r in report] == ["sys"] and "'system'" in report[0]["reason"]
    assert "1 record(s) kept without their first message (ids: sys)" in caplog.text
    assert load_from_disk(str(tmp_path / "tk"))["train"]["id"] == ["sys", "a", "b"]


@pytest.mark.parametrize("records, expected", [
    ([conversation("g", ("gpt", "Welcome!"), ("human", "Thanks"))],
     "record g: no gpt reply after the first human message"),
    ([conversation("h", ("human", "Anyone?"))], "record h: no gpt reply after the first human message"),
    ([GOOD_RECORDS[0], GOOD_RECORDS[1], {**GOOD_RECORDS[2], "id": "a"}],
     "record a: duplicate id (also record #2)"),
    ([conversation("s", ("human", "Hi"), ("system", "be nice"), ("gpt", "Hi"))],
     "record s: message 1 has unknown role 'system'"),
])
def test_conversations_that_cannot_be_used_are_named(tmp_path, capsys, pivot_path, records, expected):
    corpus = write_corpus(tmp_path / "corpus.json", [*GOOD_RECORDS[2:], *records])
    code, err = tokenize(capsys, pivot_path, corpus, tmp_path / "tk")
    assert_one_error(code, err, expected)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.json"]


def test_skip_invalid_lists_duplicates(tmp_path, capsys, pivot_path):
    corpus = write_corpus(tmp_path / "corpus.json", [*GOOD_RECORDS, {**GOOD_RECORDS[0], "id": "b"}])
    code, err = tokenize(capsys, pivot_path, corpus, tmp_path / "tk", "--skip_invalid")
    assert code == 0, err
    report = json.loads((tmp_path / "tk.skipped.json").read_text())
    assert report == [{"id": "b", "reason": "record b: duplicate id (also record #1); later stages match rows by id"}]
    assert load_from_disk(str(tmp_path / "tk"))["train"]["id"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("flag", ["--model_max_length", "--batch_size", "--top_k_logits"])
def test_zero_sizes_are_refused(tmp_path, capsys, pivot_path, flag):
    corpus = write_corpus(tmp_path / "corpus.json")
    code, err = tokenize(capsys, pivot_path, corpus, tmp_path / "tk", flag, "0")
    assert_one_error(code, err, f"{flag} must be at least 1, got 0")
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.json"]
