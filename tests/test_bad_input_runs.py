"""Bad input and faults around whole runs: merge outputs, damaged model folders, flags beyond what the
data allows, interrupted runs (SIGKILL, half-written checkpoints), train.py's flags and the drivers.
Each case: the exit status, the one error line naming the path or flag, and nothing written or lost."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bad_input_common import assert_one_error, run_script, snapshot, umask, user_folder, write_corpus
from fusechat.cli import align_token_and_vocab, fuse_multi, get_data_representation
from fusechat.merge import cli as merge_cli
from fusechat.storage import OUTPUT_MARKER, atomic_file, mark_output, stale_siblings
from fusechat.training import run as train
from driver_stubs import no_work_done, project, run as run_driver, tokenizer_dirs  # noqa: F401
from merge_fixtures import perturbed_copy
from train_fixtures import aligned_rows, save_set
from train_run_helpers import aligned_set, command  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ fusechat-merge outputs

def merge(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    try:
        merge_cli.main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.fixture(scope="module")
def recipe_models(pivot_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    pivot = shutil.copytree(pivot_path, root / "pivot")
    target = perturbed_copy(pivot_path, root / "target", 11, 0.02)
    config = root / "linear.yml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(pivot), "parameters": {"weight": 0.5}}, {"model": str(target), "parameters": {"weight": 0.5}}]}))
    return {"root": root, "pivot": pivot, "target": target, "config": config}


@pytest.mark.parametrize("which", ["pivot", "target"])
def test_merge_refuses_an_output_that_is_a_model_of_the_recipe(recipe_models, capsys, which):
    before = snapshot(recipe_models["root"])
    code, err = merge(capsys, recipe_models["config"], recipe_models[which])
    out = recipe_models[which]
    assert_one_error(code, err, f"OUT_PATH {out} is also an input ({out})", prog="fusechat-merge")
    assert snapshot(recipe_models["root"]) == before


def test_merge_refuses_a_folder_it_did_not_write(recipe_models, tmp_path, capsys):
    out = user_folder(tmp_path / "merged")
    before = snapshot(tmp_path)
    code, err = merge(capsys, recipe_models["config"], out)
    assert_one_error(code, err, f"OUT_PATH {out} is an existing folder that this project did not write",
                     prog="fusechat-merge")
    assert snapshot(tmp_path) == before


def test_merge_replaces_its_own_earlier_output(recipe_models, tmp_path, capsys):
    out = tmp_path / "merged"
    for _ in range(2):
        code, err = merge(capsys, recipe_models["config"], out)
        assert code == 0, err
    assert (out / OUTPUT_MARKER).is_file() and (out / "model.safetensors").is_file()
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


# ------------------------------------------------------------------ damaged model folders, impossible flags

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.json")


def damaged_copy(pivot_path, tmp_path, damage: str) -> Path:
    folder = tmp_path / damage.replace(" ", "_")
    if damage == "not a model":
        folder.mkdir()
        (folder / "notes.txt").write_text("not a model")
        return folder
    shutil.copytree(pivot_path, folder)
    if damage == "no tokenizer":
        for path in folder.glob("tokenizer*"):
            path.unlink()
    elif damage == "no weights":
        (folder / "model.safetensors").unlink()
    elif damage == "truncated weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize("damage, expected", [
    ("not a model", "cannot load the tokenizer (is it a complete model folder?)"),
    ("no tokenizer", "cannot load the tokenizer (is it a complete model folder?)"),
    ("no weights", "cannot load the model weights (is it a complete model folder?): Error no file named"),
    ("truncated weights", "cannot load the model weights: damaged weights file"),
])
def test_a_damaged_model_folder_is_named(tmp_path, capsys, pivot_path, corpus, damage, expected):
    model = damaged_copy(pivot_path, tmp_path, damage)
    out = tmp_path / "out"
    code, err = run_script(capsys, get_data_representation.main, [
        "--model_name_or_path", model, "--data_path", corpus, "--tknz_dataset_path", out / "tk",
        "--dataset_save_dir", out / "rep", "--get_representation"])
    assert_one_error(code, err, f"{model}: {expected}")
    assert not (out / "rep").exists()


def test_top_k_above_the_vocabulary_is_named(tmp_path, capsys, pivot_path, corpus):
    code, err = run_script(capsys, get_data_representation.main, [
        "--model_name_or_path", pivot_path, "--data_path", corpus, "--tknz_dataset_path", tmp_path / "tk",
        "--dataset_save_dir", tmp_path / "rep", "--get_representation", "--top_k_logits", "40000"])
    assert_one_error(code, err, f"--top_k_logits 40000 is above the vocabulary size 32002 of {pivot_path}")
    assert not (tmp_path / "rep").exists()


def test_more_splits_than_records_is_a_warning(tmp_path, capsys, caplog, pivot_path, corpus):
    with caplog.at_level(logging.WARNING):
        code, err = run_script(capsys, get_data_representation.main, [
            "--model_name_or_path", pivot_path, "--data_path", corpus, "--tknz_dataset_path", tmp_path / "tk",
            "--dataset_split_num", "6", "--dataset_index", "5"])
    assert code == 0, err
    assert "--dataset_split_num 6 is above the record count 4" in caplog.text


# ------------------------------------------------------------------ the alignment and fusion stages

@pytest.fixture(scope="module")
def rep_sets(tmp_path_factory, pivot_path, diff_vocab_source_path, corpus):
    root = tmp_path_factory.mktemp("rep_sets")
    for name, model in (("pivot", pivot_path), ("qwen", diff_vocab_source_path)):
        get_data_representation.main(["--model_name_or_path", str(model), "--data_path", str(corpus),
                                      "--tknz_dataset_path", str(root / f"{name}_tk"), "--dataset_save_dir",
                                      str(root / f"{name}_rep"), "--get_representation", "--mask_instruction"])
    return root


def align_argv(pivot_path, qwen_path, base, blending, out, *extra):
    return ["--base_model_name_or_path", pivot_path, "--blending_model_name_or_path", qwen_path,
            "--base_dataset_dir", base, "--blending_dataset_dir", blending, "--do_distribution_alignment",
            "--aligned_dataset_save_dir", out, "--align_type", "hard", *extra]


def test_distribution_alignment_with_unequal_set_lists_is_named(rep_sets, tmp_path, capsys, pivot_path,
                                                                diff_vocab_source_path):
    base = f"{rep_sets / 'pivot_rep'},{rep_sets / 'pivot_rep'}"
    code, err = run_script(capsys, align_token_and_vocab.main, align_argv(
        pivot_path, diff_vocab_source_path, base, rep_sets / "qwen_rep", tmp_path / "aligned"))
    assert_one_error(code, err, "--base_dataset_dir lists 2 sets but --blending_dataset_dir 1")
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_count_matrix_is_named(rep_sets, tmp_path, capsys, pivot_path, diff_vocab_source_path):
    import numpy as np
    from scipy import sparse

    matrix = tmp_path / "matrix.npz"
    sparse.save_npz(matrix, sparse.csr_matrix(np.eye(4)))
    matrix.write_bytes(matrix.read_bytes()[:100])
    code, err = run_script(capsys, align_token_and_vocab.main, align_argv(
        pivot_path, diff_vocab_source_path, rep_sets / "pivot_rep", rep_sets / "qwen_rep", tmp_path / "aligned",
        "--use_token_alignment_matrix", "--token_alignment_matrix_file", matrix, "--accept_sets_without_provenance"))
    assert_one_error(code, err, f"--token_alignment_matrix_file {matrix}: not a scipy sparse .npz")
    assert [p.name for p in tmp_path.iterdir()] == ["matrix.npz"]


def test_fuse_multi_with_sets_of_different_row_counts_names_them(tmp_path, capsys, openchat_tokenizer):
    first, second = tmp_path / "first", tmp_path / "second"
    save_set(aligned_rows(openchat_tokenizer, count=6, seed=1), first, tokenizer=openchat_tokenizer)
    save_set(aligned_rows(openchat_tokenizer, count=4, seed=2), second, tokenizer=openchat_tokenizer)
    before = snapshot(tmp_path)
    code, err = run_script(capsys, fuse_multi.main, ["--dataset_dir", f"{first},{second}", "--dataset_save_dir",
                                                     tmp_path / "fused"])
    assert_one_error(code, err, f"{first} has 6 rows but {second} has 4")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ interrupted runs

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from fusechat.storage import atomic_dir, atomic_file, scratch_dir
    root = Path(sys.argv[1])
    with scratch_dir(root / "rep") as scratch:
        (scratch / "chunk").write_bytes(b"x" * 4096)
        with atomic_dir(root / "rep") as tmp, atomic_file(root / "answers.jsonl") as handle:
            (tmp / "part").write_text("half")
            handle.write("partial")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_next_run_removes_what_a_killed_run_left(tmp_path, capsys, pivot_path, corpus):
    result = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=os.environ.copy())
    assert result.returncode == -9
    left = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert left == [".answers.jsonl.tmp", ".rep.scratch", ".rep.tmp"]
    assert len(stale_siblings(tmp_path / "rep")) == 2
    code, err = run_script(capsys, get_data_representation.main, [
        "--model_name_or_path", pivot_path, "--data_path", corpus, "--tknz_dataset_path", tmp_path / "tk",
        "--dataset_save_dir", tmp_path / "rep", "--get_representation"])
    assert code == 0, err
    with atomic_file(tmp_path / "answers.jsonl") as handle:
        handle.write("{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".answers.jsonl{OUTPUT_MARKER}", "answers.jsonl", "rep", "tk"]
    assert (tmp_path / "answers.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask()


def test_an_explicit_incomplete_checkpoint_is_named(tmp_path, capsys, pivot_path, aligned_set):
    half = tmp_path / "out" / "checkpoint-3"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    mark_output(tmp_path / "out")  # as the interrupted run left it
    code, err = run_script(capsys, train.main, command(pivot_path, aligned_set, tmp_path / "out",
                                                       resume_from_checkpoint=half), prog="train.py")
    assert_one_error(code, err, f"--resume_from_checkpoint {half}: incomplete checkpoint (no trainer_state.json",
                     prog="train.py")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [OUTPUT_MARKER, "checkpoint-3"]


@pytest.mark.slow
def test_a_half_written_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, pivot_path, aligned_set):
    out = tmp_path / "out"
    half = out / "checkpoint-99"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    mark_output(out)  # as the interrupted run left it
    with caplog.at_level(logging.WARNING):
        trainer = train.main(command(pivot_path, aligned_set, out))
    assert f"skipping {half}: no trainer_state.json" in caplog.text
    assert trainer.state.global_step == 3  # trained from the start: 12 rows, 4 a step


def test_an_unknown_train_flag_is_an_argparse_style_error(tmp_path, capsys, pivot_path, aligned_set):
    argv = command(pivot_path, aligned_set, tmp_path / "out") + ["--no_such_flag", "3"]
    code, err = run_script(capsys, train.main, argv, prog="train.py")
    assert_one_error(code, err, "unrecognized arguments: --no_such_flag 3", prog="train.py")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_train_script_reports_an_unknown_flag_in_one_line(tmp_path, pivot_path, aligned_set):
    argv = command(pivot_path, aligned_set, tmp_path / "out") + ["--no_such_flag"]
    result = subprocess.run([sys.executable, str(REPO / "FuseChat" / "train" / "train.py"), *map(str, argv)],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error:" in line] == [
        "train.py: error: unrecognized arguments: --no_such_flag"]


# ------------------------------------------------------------------ drivers

@pytest.mark.parametrize("script", ["get_representation.sh", "align_same_vocab.sh", "pipeline.sh"])
def test_an_empty_sources_list_is_refused_not_replaced_by_the_published_one(project, script):
    result = run_driver(script, project["env"], SOURCES="")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[0] == "error: SOURCES is empty: name at least one model"
    assert no_work_done(project)
