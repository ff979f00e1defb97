"""The one rule for outputs and provenance (docs/guarantees.md), case by case through the entry points.

Each case: exit status 2, the first (and only) error line, and every file that existed before the
run byte for byte unchanged (``snapshot`` of the folders involved, models included).
"""

from __future__ import annotations

import errno
import json
import shutil
import stat
from pathlib import Path

import pytest

from bad_input_common import assert_one_error, run_script, snapshot, umask, user_folder, write_corpus
from driver_stubs import project, run as run_driver  # noqa: F401
from fusechat import provenance
from fusechat.cli import align_token_and_vocab, filter_nan, fuse_multi, get_data_representation, replace_model
from fusechat.eval import cli as eval_cli
from fusechat.fusellm import cli as fusellm_cli
from fusechat.fusellm import train as fusellm_train
from fusechat.merge import cli as merge_cli
from fusechat.storage import OUTPUT_MARKER, atomic_dir, sole_writer
from fusechat.training import run as train
from judge_stub import JUDGE, StubJudge, bench, judge_args  # noqa: F401
from train_fixtures import aligned_rows, save_set
from train_run_helpers import aligned_set, command  # noqa: F401


def eval_entry(capsys, entry, argv):
    """An eval console script (it calls run_cli itself): (exit status, stderr)."""
    capsys.readouterr()
    code = entry([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def work(tmp_path_factory, pivot_path, diff_vocab_source_path):
    """Copies of two models, a corpus and the tokenized sets of both models, made by the stages."""
    root = tmp_path_factory.mktemp("rule")
    pivot = shutil.copytree(pivot_path, root / "pivcopy")
    qwen = shutil.copytree(diff_vocab_source_path, root / "qwencopy")
    corpus = write_corpus(root / "conversations.json")
    for name, model in (("pivot_tk", pivot), ("qwen_tk", qwen)):
        code = get_data_representation.main(["--model_name_or_path", str(model), "--data_path", str(corpus),
                                             "--tknz_dataset_path", str(root / name)])
        assert code is None
    return {"root": root, "pivot": pivot, "qwen": qwen, "corpus": corpus, "pivot_tk": root / "pivot_tk",
            "qwen_tk": root / "qwen_tk"}


def refused(capsys, main, argv, expected, *roots, prog=None):
    """Run ``main``; it must exit 2 with one line starting ``expected`` and change nothing under ``roots``."""
    before = [snapshot(r) for r in roots]
    code, err = run_script(capsys, main, argv, prog)
    assert_one_error(code, err, expected, prog)
    assert [snapshot(r) for r in roots] == before
    return err


# ------------------------------------------------------------------ 1. align_token_and_vocab's outputs

def align_argv(work, *extra):
    return ["--base_model_name_or_path", work["pivot"], "--blending_model_name_or_path", work["qwen"],
            "--base_dataset_dir", work["pivot_tk"], "--blending_dataset_dir", work["qwen_tk"], "--do_token_alignment",
            *extra]


def test_the_mapping_file_may_not_lie_inside_the_pivot(work, capsys, tmp_path):
    config = work["pivot"] / "config.json"
    refused(capsys, align_token_and_vocab.main, align_argv(work, "--token_alignment_matrix_file", tmp_path / "m.npz",
                                                           "--blending_to_base_file", config),
            f"--blending_to_base_file {config} lies inside an input ({work['pivot']})", work["root"], tmp_path)


def test_the_matrix_file_may_not_replace_a_file_of_the_users(work, capsys, tmp_path):
    refused(capsys, align_token_and_vocab.main, align_argv(work, "--token_alignment_matrix_file", work["corpus"],
                                                           "--blending_to_base_file", tmp_path / "map.json"),
            f"--token_alignment_matrix_file {work['corpus']} is an existing file that this project did not write",
            work["root"], tmp_path)


def test_a_matrix_made_from_other_sets_is_not_reused(work, capsys, tmp_path, openchat_tokenizer):
    from fusechat.modeling import load_tokenizer
    from fusechat.storage import write_json

    # What a token pass of the same models over other sets leaves: marked files whose record names those sets.
    other = save_set(aligned_rows(openchat_tokenizer, count=3), tmp_path / "other", tokenizer=openchat_tokenizer)
    record = provenance.token_pass_record(load_tokenizer(str(work["pivot"])), load_tokenizer(str(work["qwen"])),
                                          [str(other)])

    write_json(tmp_path / "m.npz", "not read", record=record)
    write_json(tmp_path / "map.json", [0], record=dict(record, align_type="default"))
    refused(capsys, align_token_and_vocab.main, align_argv(work, "--token_alignment_matrix_file", tmp_path / "m.npz",
                                                           "--blending_to_base_file", tmp_path / "map.json"),
            f"--token_alignment_matrix_file {tmp_path / 'm.npz'} was made for another run (its sets differ",
            work["root"], tmp_path)


def test_base_and_source_sets_given_the_other_way_round_are_refused(work, capsys, tmp_path):
    argv = ["--base_model_name_or_path", work["pivot"], "--blending_model_name_or_path", work["qwen"],
            "--base_dataset_dir", work["qwen_tk"], "--blending_dataset_dir", work["pivot_tk"], "--do_token_alignment",
            "--token_alignment_matrix_file", tmp_path / "m.npz", "--blending_to_base_file", tmp_path / "map.json"]
    refused(capsys, align_token_and_vocab.main, argv,
            f"--base_dataset_dir {work['qwen_tk']} was tokenized with {str(work['qwen'])!r}", work["root"], tmp_path)


# ------------------------------------------------------------------ 2, 9, 11. FuseChat train.py

def test_train_output_that_is_the_model(work, capsys, aligned_set):
    refused(capsys, train.main, command(work["pivot"], aligned_set, work["pivot"]),
            f"--output_dir {work['pivot']} is also an input ({work['pivot']})", work["root"], aligned_set,
            prog="train.py")


def test_train_output_that_is_the_data(work, capsys, aligned_set):
    refused(capsys, train.main, command(work["pivot"], aligned_set, aligned_set),
            f"--output_dir {aligned_set} is also an input ({aligned_set})", work["root"], aligned_set,
            prog="train.py")


def test_train_output_that_is_a_folder_of_the_users(work, capsys, aligned_set, tmp_path):
    out = user_folder(tmp_path / "mine")
    refused(capsys, train.main, command(work["pivot"], aligned_set, out),
            f"--output_dir {out} is an existing folder that this project did not write", tmp_path, aligned_set,
            prog="train.py")


def test_a_set_without_its_record_is_refused_unless_the_flag_says_so(work, capsys, aligned_set, tmp_path,
                                                                      diff_vocab_source_path):
    copy = shutil.copytree(aligned_set, tmp_path / "copy")
    (copy / provenance.RECORD_FILE).unlink()
    refused(capsys, train.main, command(diff_vocab_source_path, copy, tmp_path / "out"),
            f"--data_path {copy} has no provenance record ({provenance.RECORD_FILE})", tmp_path, prog="train.py")
    assert not (tmp_path / "out").exists()


def test_a_set_of_the_pivots_tokenizer_is_refused_for_another_model(capsys, aligned_set, tmp_path,
                                                                     diff_vocab_source_path):
    refused(capsys, train.main, command(diff_vocab_source_path, aligned_set, tmp_path / "out"),
            f"--data_path {aligned_set} was tokenized with", aligned_set, tmp_path, prog="train.py")


def metric_set(tokenizer, path, column, value, row=1):
    rows = aligned_rows(tokenizer, count=4)
    rows[row][column] = value
    return save_set(rows, path, tokenizer=tokenizer)


@pytest.mark.parametrize("value, shown", [(float("-inf"), "-inf"), (float("inf"), "inf")])
def test_an_infinite_fused_metric_is_refused_by_every_stage(capsys, tmp_path, openchat_tokenizer, pivot_path, value,
                                                            shown):
    data = metric_set(openchat_tokenizer, tmp_path / "set", "fused_metric_ce", value)
    other = save_set(aligned_rows(openchat_tokenizer, count=4), tmp_path / "other", tokenizer=openchat_tokenizer)
    tail = f"row 1: fused_metric_ce is {shown} (1 such rows); a metric is a finite cross-entropy"
    refused(capsys, filter_nan.main, ["--input_data_dir", data, "--output_data_dir", tmp_path / "f"],
            f"--input_data_dir {data}: {tail}", tmp_path)
    refused(capsys, fuse_multi.main, ["--dataset_dir", f"{other},{data}", "--dataset_save_dir", tmp_path / "m"],
            f"{data}: {tail}", tmp_path)
    err = refused(capsys, train.main, command(pivot_path, data, tmp_path / "out"), f"{data}", tmp_path,
                  prog="train.py")
    assert f"fused_metric_ce is {shown}" in err


def test_an_infinite_metric_of_a_source_is_refused_by_replace_model(capsys, tmp_path, openchat_tokenizer):
    data = metric_set(openchat_tokenizer, tmp_path / "source", "metric_ce", float("-inf"))
    pivot = save_set(aligned_rows(openchat_tokenizer, count=4), tmp_path / "pivot", tokenizer=openchat_tokenizer)
    refused(capsys, replace_model.main, ["--dataset_dir", pivot, "--replace_dataset_dir", data, "--dataset_save_dir",
                                         tmp_path / "r"],
            f"{data}: row 1: metric_ce is -inf (1 such rows); a metric is a finite cross-entropy", tmp_path)


def test_an_infinite_metric_is_refused_by_fusellm_train(capsys, tmp_path, pivot_path):
    from test_fusellm_train import command as fusellm_command, packed_rows, save_packed

    rows = packed_rows(4, seed=1)
    rows[1]["metric_ce_aligned_0"] = float("-inf")
    data = save_packed(tmp_path / "packed", rows, packed_rows(2, seed=2))
    err = refused(capsys, fusellm_train.main, fusellm_command(pivot_path, data, tmp_path / "out"),
                  f"{data} [train]: row 1: metric_ce_aligned_0 is -inf", tmp_path)
    assert not (tmp_path / "out").exists(), err


def test_a_metric_stored_as_strings_is_named(capsys, tmp_path, openchat_tokenizer):
    from datasets import DatasetDict, load_from_disk

    data = save_set(aligned_rows(openchat_tokenizer, count=3), tmp_path / "set", tokenizer=openchat_tokenizer)
    split = load_from_disk(str(data))["train"]
    split = split.cast_column("fused_metric_ce", split.features["id"])
    DatasetDict({"train": split}).save_to_disk(str(tmp_path / "strings"))
    shutil.copy(data / provenance.RECORD_FILE, tmp_path / "strings")
    refused(capsys, filter_nan.main, ["--input_data_dir", tmp_path / "strings", "--output_data_dir", tmp_path / "f"],
            f"--input_data_dir {tmp_path / 'strings'}: fused_metric_ce holds string values, not numbers", tmp_path)


def test_filter_nan_refuses_to_drop_every_row(capsys, tmp_path, openchat_tokenizer):
    rows = aligned_rows(openchat_tokenizer, count=3)
    for row in rows:
        row["metric_ce"] = float("nan")
    data = save_set(rows, tmp_path / "set", tokenizer=openchat_tokenizer)
    refused(capsys, filter_nan.main, ["--input_data_dir", data, "--output_data_dir", tmp_path / "f"],
            f"--input_data_dir {data}: every one of its 3 rows has a NaN metric; nothing would be left", tmp_path)


def test_a_truncated_arrow_file_is_named(capsys, tmp_path, aligned_set):
    copy = shutil.copytree(aligned_set, tmp_path / "copy")
    arrow = next((copy / "train").glob("data-*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    refused(capsys, filter_nan.main, ["--input_data_dir", copy, "--output_data_dir", tmp_path / "f"],
            f"aligned set at {copy} is damaged (", tmp_path)


def test_a_checkpoint_with_truncated_weights_is_named(work, capsys, aligned_set, tmp_path):
    out = tmp_path / "out"
    checkpoint = shutil.copytree(work["pivot"], out / "checkpoint-2")
    (checkpoint / "trainer_state.json").write_text("{}")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (out / OUTPUT_MARKER).write_text("{}")  # the interrupted run's output folder
    refused(capsys, train.main, command(work["pivot"], aligned_set, out, resume_from_checkpoint=checkpoint),
            f"--resume_from_checkpoint {checkpoint}: damaged weights file model.safetensors", tmp_path,
            prog="train.py")


@pytest.mark.slow
def test_train_writes_the_model_with_the_users_umask(capsys, tmp_path, pivot_path, aligned_set):
    code, err = run_script(capsys, train.main, command(pivot_path, aligned_set, tmp_path / "out", max_steps=1))
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "out" / "model.safetensors").stat().st_mode) == 0o666 & ~umask()
    assert (tmp_path / "out" / OUTPUT_MARKER).is_file()


# ------------------------------------------------------------------ 10. a reused tokenized set

def test_a_copied_tokenized_set_without_its_record_is_not_reused(work, capsys, tmp_path):
    copy = shutil.copytree(work["pivot_tk"], tmp_path / "tk")
    (copy / provenance.RECORD_FILE).unlink()
    refused(capsys, get_data_representation.main, ["--model_name_or_path", work["qwen"], "--data_path", work["corpus"],
                                                   "--tknz_dataset_path", copy],
            f"--tknz_dataset_path {copy} has no provenance record", tmp_path, work["root"])


@pytest.mark.parametrize("content, expected", [
    ('[{"id": "a", "conversations": [{"from": "human", "value": "caf\xe9"}]}]'.encode("latin-1"),
     "line 1: not UTF-8 text (byte 0xe9); save the corpus as UTF-8"),
    (b'[{"id": "a", "conversations": [{"from": "human", "value": "x\\ud800y"}]}]',
     "line 1: \\ud800 is half of a UTF-16 surrogate pair, not a character"),
])
def test_a_corpus_that_is_not_utf8_text_is_named(work, capsys, tmp_path, content, expected):
    corpus = tmp_path / "corpus.json"
    corpus.write_bytes(content)
    refused(capsys, get_data_representation.main, ["--model_name_or_path", work["pivot"], "--data_path", corpus,
                                                   "--tknz_dataset_path", tmp_path / "tk"],
            f"{corpus}: {expected}", tmp_path)


# ------------------------------------------------------------------ 3, 4, 7, 8, 11. FuseLLM

def text_set(path, texts):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"text": texts})}).save_to_disk(str(path))
    return path


def recorded(path, tokenizer, model):
    """A FuseLLM set as forward_for_logits.py leaves it: its record names the tokenizer."""
    provenance.write_record(path, provenance.fusellm_record(tokenizer, str(model), 2048, ["corpus"]))
    return path


def test_fusellm_train_output_that_is_the_model(work, capsys, tmp_path, openchat_tokenizer):
    packed = recorded(text_set(tmp_path / "packed", ["a"]), openchat_tokenizer, work["pivot"])
    refused(capsys, fusellm_train.main, ["--model_name_or_path", work["pivot"], "--dataset_name", packed,
                                         "--output_dir", work["pivot"], "--do_train"],
            f"--output_dir {work['pivot']} is also an input ({work['pivot']})", work["root"], tmp_path)


def test_fusellm_train_output_that_is_a_folder_of_the_users(work, capsys, tmp_path, openchat_tokenizer):
    packed = recorded(text_set(tmp_path / "packed", ["a"]), openchat_tokenizer, work["pivot"])
    out = user_folder(tmp_path / "mine")
    refused(capsys, fusellm_train.main, ["--model_name_or_path", work["pivot"], "--dataset_name", packed,
                                         "--output_dir", out, "--do_train"],
            f"--output_dir {out} is an existing folder that this project did not write", tmp_path)


def test_fusellm_train_refuses_a_set_of_another_tokenizer_and_one_without_record(work, capsys, tmp_path,
                                                                                 openchat_tokenizer):
    packed = recorded(text_set(tmp_path / "packed", ["a"]), openchat_tokenizer, work["pivot"])
    bare = text_set(tmp_path / "bare", ["a"])
    argv = ["--model_name_or_path", work["qwen"], "--output_dir", tmp_path / "out", "--do_train", "--dataset_name"]
    refused(capsys, fusellm_train.main, argv + [packed], f"--dataset_name {packed} was tokenized with", tmp_path)
    refused(capsys, fusellm_train.main, argv + [bare], f"--dataset_name {bare} has no provenance record", tmp_path)
    assert not (tmp_path / "out").exists()


def test_fusellm_vocab_mapping_may_not_replace_a_tokenizer(work, capsys):
    target = work["qwen"] / "tokenizer.json"
    refused(capsys, fusellm_cli.vocab_mapping_main, ["--base_model_name_or_path", work["pivot"],
                                                     "--blending_model_name_or_path", work["qwen"],
                                                     "--vocab_mapping_save_dir", target],
            f"--vocab_mapping_save_dir {target} lies inside an input ({work['qwen']})", work["root"])


def test_fusellm_token_alignment_refuses_swapped_sets(work, capsys, tmp_path, openchat_tokenizer, qwen_tokenizer):
    base = recorded(text_set(tmp_path / "base", ["a"]), qwen_tokenizer, work["qwen"])
    blending = recorded(text_set(tmp_path / "blending", ["a"]), openchat_tokenizer, work["pivot"])
    refused(capsys, fusellm_cli.token_alignment_main, [
        "--base_model_name_or_path", work["pivot"], "--blending_model_name_or_path", work["qwen"],
        "--base_dataset_dir", base, "--blending_dataset_dir", blending, "--dataset_save_dir", tmp_path / "out"],
        f"--base_dataset_dir {base} was tokenized with {str(work['qwen'])!r}", tmp_path, work["root"])


def test_fusellm_packing_refuses_an_infinite_metric(capsys, tmp_path, openchat_tokenizer, pivot_path):
    from datasets import Dataset, DatasetDict

    columns = {"input_ids": [[1, 2], [3, 4]], "attention_mask": [[1, 1], [1, 1]], "labels": [[1, 2], [3, 4]],
               "metric_ce_aligned_0": [1.0, float("-inf")]}
    data = tmp_path / "aligned"
    DatasetDict({"train": Dataset.from_dict(columns)}).save_to_disk(str(data))
    recorded(data, openchat_tokenizer, pivot_path)
    err = refused(capsys, fusellm_cli.packing_main, ["--dataset_dir", data, "--dataset_save_dir", tmp_path / "p",
                                                     "--model_max_length", "2"], f"{data} split 'train'", tmp_path)
    assert "row 1: metric_ce_aligned_0 is -inf" in err


@pytest.mark.parametrize("texts, expected", [
    (["fine", None], "row 1: text is null (1 such rows)"),
    ([1, 2], "column 'text' holds int64 values, not strings"),
])
def test_split_long_text_names_texts_that_are_not_strings(work, capsys, tmp_path, texts, expected):
    data = text_set(tmp_path / "corpus", texts)
    refused(capsys, fusellm_cli.split_long_text_main, [
        "--base_model_name_or_path", work["pivot"], "--blending_model_name_or_path", work["qwen"],
        "--another_blending_model_name_or_path", work["qwen"], "--dataset", data, "--dataset_save_dir",
        tmp_path / "out"], f"--dataset {data} split 'train': {expected}", tmp_path)


def test_forward_for_logits_names_top_k_above_the_vocabulary(work, capsys, tmp_path):
    data = text_set(tmp_path / "texts", ["Hello there."])
    refused(capsys, fusellm_cli.forward_for_logits_main, [
        "--model_name_or_path", work["pivot"], "--dataset", data, "--dataset_save_dir", tmp_path / "out",
        "--top_k_logits", "999999"], f"--top_k_logits 999999 is above the vocabulary size 32002 of {work['pivot']}",
        tmp_path, work["root"])


# ------------------------------------------------------------------ 5, 6, 12. evaluation

def judgments(path, *lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_show_result_may_not_replace_the_judgments(capsys, tmp_path):
    judged = judgments(tmp_path / "j.jsonl", {"question_id": 81, "model": "m", "score": 5, "turn": 1})
    before = snapshot(tmp_path)
    for flag in ("--output-json", "--plot-file"):
        code, err = eval_entry(capsys, eval_cli.show_result, ["--data-dir", tmp_path, "--input-file", judged,
                                                              flag, judged])
        assert_one_error(code, err, f"{flag} {judged} is also an input ({judged})", "show_result.py")
    assert snapshot(tmp_path) == before


def test_show_result_refuses_repeated_judgments(capsys, tmp_path):
    line = {"question_id": 81, "model": "m", "score": 5, "turn": 1}
    judged = judgments(tmp_path / "j.jsonl", line, {**line, "score": 9})
    before = snapshot(tmp_path)
    code, err = eval_entry(capsys, eval_cli.show_result, ["--data-dir", tmp_path, "--input-file", judged])
    assert_one_error(code, err, f"{judged}: judgment on line 2 repeats line 1 (model 'm', question 81, turn 1)",
                     "show_result.py")
    assert snapshot(tmp_path) == before


def test_a_full_disk_is_one_line(capsys, tmp_path, monkeypatch):
    judged = judgments(tmp_path / "j.jsonl", {"question_id": 81, "model": "m", "score": 5, "turn": 1})
    before = snapshot(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    out = tmp_path / "t.json"
    code, err = eval_entry(capsys, eval_cli.show_result, ["--data-dir", tmp_path, "--input-file", judged,
                                                          "--output-json", out])
    assert_one_error(code, err, f"no space left on the device writing {out}", "show_result.py")
    assert snapshot(tmp_path) == before


def test_gen_alpaca_eval_may_not_replace_the_instructions(capsys, tmp_path, pivot_path):
    instructions = tmp_path / "alpaca_eval.json"
    instructions.write_text(json.dumps([{"instruction": "Say hi."}]))
    before = snapshot(tmp_path)
    code, err = eval_entry(capsys, eval_cli.gen_alpaca_eval, [
        "--model-path", pivot_path, "--model-id", "m", "--instruction-file", instructions,
        "--output-file", instructions])
    assert_one_error(code, err, f"--output-file {instructions} is also an input ({instructions})",
                     "gen_alpaca_eval.py")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("model_id", ["../alpaca_eval", "../../x", "/tmp/x", "org/name", ".."])
def test_a_model_id_is_a_plain_name(capsys, tmp_path, pivot_path, model_id):
    before = snapshot(tmp_path)
    for entry, prog, extra in ((eval_cli.gen_alpaca_eval, "gen_alpaca_eval.py", []),
                               (eval_cli.gen_model_answer, "gen_model_answer.py", ["--data-dir", tmp_path])):
        code, err = eval_entry(capsys, entry, ["--model-path", pivot_path, "--model-id", model_id, *extra])
        assert_one_error(code, err, f"--model-id {model_id!r}: must be a plain name without '/'", prog)
    assert snapshot(tmp_path) == before


def test_two_judging_runs_on_one_file_are_refused(bench, capsys):  # noqa: F811
    output = bench / "jc.jsonl"
    before = snapshot(bench)
    with StubJudge() as stub, sole_writer(output, "--output-file"):
        code, err = eval_entry(capsys, eval_cli.gen_judgment, judge_args(bench, stub.url, "--output-file", output))
        assert not stub.requests
    assert_one_error(code, err, f"--output-file {output} is being written by another run right now",
                     "gen_judgment.py")
    assert snapshot(bench) == before


def test_a_question_file_cut_short_is_refused(bench, capsys):  # noqa: F811
    questions = bench / "mt_bench" / "question.jsonl"
    questions.write_bytes(questions.read_bytes().rstrip(b"\n")[:-5])
    before = snapshot(bench)
    with StubJudge() as stub:
        code, err = eval_entry(capsys, eval_cli.gen_judgment, judge_args(bench, stub.url))
    lines = questions.read_text().count("\n") + 1
    assert_one_error(code, err, f"{questions}: malformed JSON on line {lines} (the last line is cut short)",
                     "gen_judgment.py")
    assert snapshot(bench) == before


def test_a_key_in_the_judge_url_is_refused_and_not_echoed(bench, capsys):  # noqa: F811
    before = snapshot(bench)
    code, err = eval_entry(capsys, eval_cli.gen_judgment,
                           judge_args(bench, "http://user:SECRETKEY@127.0.0.1:9/v1"))
    assert_one_error(code, err, "--openai-api-base http://***@127.0.0.1:9/v1: the URL holds a user name or key",
                     "gen_judgment.py")
    assert "SECRETKEY" not in err
    assert snapshot(bench) == before


# ------------------------------------------------------------------ merge, fixtures, drivers

def test_merge_refuses_a_model_with_truncated_weights(capsys, tmp_path, pivot_path):
    import yaml

    from merge_fixtures import perturbed_copy

    target = perturbed_copy(pivot_path, tmp_path / "target", 3, 0.02)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    config = tmp_path / "linear.yml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(pivot_path), "parameters": {"weight": 0.5}}, {"model": str(target), "parameters": {"weight": 0.5}}]}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        merge_cli.main([str(config), str(tmp_path / "merged")])
    assert_one_error(exit_info.value.code, capsys.readouterr().err,
                     f"{config}: model {target}: damaged weights file model.safetensors", "fusechat-merge")
    assert snapshot(tmp_path) == before


def test_merge_writes_the_weights_with_the_users_umask(capsys, tmp_path, pivot_path):
    import yaml

    from merge_fixtures import perturbed_copy

    target = perturbed_copy(pivot_path, tmp_path / "target", 3, 0.02)
    config = tmp_path / "linear.yml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(pivot_path), "parameters": {"weight": 0.5}}, {"model": str(target), "parameters": {"weight": 0.5}}]}))
    merge_cli.main([str(config), str(tmp_path / "merged")])
    for path in (tmp_path / "merged").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask(), path


def test_atomic_folders_get_the_users_umask(tmp_path):
    """The fixtures and every set are written through atomic_dir; safetensors saves files 0600."""
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "model.safetensors").write_bytes(b"weights")
        (tmp / "model.safetensors").chmod(0o600)
    assert stat.S_IMODE((tmp_path / "model" / "model.safetensors").stat().st_mode) == 0o666 & ~umask()
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask()


@pytest.mark.slow
def test_a_driver_stops_when_a_setting_changed_instead_of_skipping(project, tmp_path):  # noqa: F811
    result = run_driver("get_representation.sh", project["env"])
    assert result.returncode == 0, result.stderr
    before = snapshot(project["work"] / "representations")
    corpus = write_corpus(tmp_path / "other.json")
    for setting in ({"DATA_PATH": str(corpus)}, {"MODEL_MAX_LENGTH": "1024"}):
        result = run_driver("get_representation.sh", project["env"], **setting)
        assert result.returncode != 0
        first = [line for line in result.stderr.splitlines() if line.startswith("error: ")][0]
        assert "was made with other settings than this run's" in first, result.stderr
        assert snapshot(project["work"] / "representations") == before
    result = run_driver("get_representation.sh", project["env"])
    assert result.returncode == 0 and "skipped" in result.stdout, result.stderr



def test_a_tokenizer_json_without_its_vocabulary_is_named(work, capsys, tmp_path):
    model = shutil.copytree(work["pivot"], tmp_path / "novocab")
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"] = {}
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    refused(capsys, fusellm_cli.vocab_mapping_main, [
        "--base_model_name_or_path", work["pivot"], "--blending_model_name_or_path", model,
        "--vocab_mapping_save_dir", tmp_path / "map.json"],
        f"{model}: cannot load the tokenizer: damaged tokenizer.json (Token `▁` out of vocabulary", tmp_path,
        work["root"])
