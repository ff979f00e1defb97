"""The bash drivers (scripts/*.sh) without models: every stage script is replaced by a stub that
records its arguments and creates the outputs it was asked for, so these tests check the folder
layout, the flags, the order of the stages, skipping, failures and the checks made before any work.
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from driver_stubs import CORPUS, calls, no_work_done, project, run, tokenizer_dirs  # noqa: F401

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

def flag(call: dict, name: str):
    args = call["args"]
    return args[args.index(name) + 1] if name in args else None


def steps(project) -> list[list[str]]:
    return [line.split("\t") for line in (project["work"] / "logs" / "steps.tsv").read_text().splitlines()]


def test_pipeline_runs_every_stage_in_order_with_the_reference_layout(project):
    result = run("pipeline.sh", project["env"])
    assert result.returncode == 0, result.stderr
    work = project["work"]
    rep, aligned, ckpt = work / "representations", work / "aligned_representations", work / "checkpoints"
    made = calls(project)
    assert [c["stage"] for c in made] == (
        ["get_data_representation"] * 6 + ["replace_model"] * 2 + ["align_token_and_vocab"] * 3
        + ["filter_nan"] * 4 + ["torchrun", "train"] * 2 + ["fusechat-merge"])

    representation = made[:6]
    expected = [(m, i) for m in ("pivot-lm", "same-lm", "other-lm") for i in (0, 1)]
    for call, (model, i) in zip(representation, expected):
        assert flag(call, "--model_name_or_path") == str(work / "models" / model)
        assert flag(call, "--dataset_save_dir") == str(rep / f"{model}_representation_split{i}")
        assert flag(call, "--tknz_dataset_path") == str(rep / f"{model}_tknz_split{i}")
        assert (flag(call, "--dataset_split_num"), flag(call, "--dataset_index")) == ("2", str(i))
        assert flag(call, "--data_path") == str(CORPUS)
        assert flag(call, "--load_in_half") == "none"  # no GPUS: float32, no flash attention
        assert "--flash_attn_transformers" not in call["args"]
        assert call["cuda"] == ""

    for call, i in zip(made[6:8], (0, 1)):  # only the same-vocabulary source goes to replace_model
        assert flag(call, "--dataset_dir") == str(rep / f"pivot-lm_representation_split{i}")
        assert flag(call, "--replace_dataset_dir") == str(rep / f"same-lm_representation_split{i}")
        assert flag(call, "--dataset_save_dir") == str(aligned / f"pivot-lm_same-lm_representation_split{i}")
        assert flag(call, "--replace_model") == "source"

    token, *distribution = made[8:11]  # the other source: token alignment over all splits first
    assert "--do_token_alignment" in token["args"] and "--do_distribution_alignment" not in token["args"]
    assert flag(token, "--base_dataset_dir") == f"{rep}/pivot-lm_tknz_split0,{rep}/pivot-lm_tknz_split1"
    assert flag(token, "--blending_dataset_dir") == f"{rep}/other-lm_tknz_split0,{rep}/other-lm_tknz_split1"
    assert flag(token, "--align_type") == "default"
    for call, i in zip(distribution, (0, 1)):
        assert {"--do_distribution_alignment", "--use_token_alignment_matrix"} <= set(call["args"])
        assert flag(call, "--base_dataset_dir") == str(rep / f"pivot-lm_representation_split{i}")
        assert flag(call, "--blending_dataset_dir") == str(rep / f"other-lm_representation_split{i}")
        assert flag(call, "--aligned_dataset_save_dir") == str(aligned / f"pivot-lm_other-lm_representation_split{i}")
        for name in ("--token_alignment_matrix_file", "--blending_to_base_file", "--aligned_dataset_tknz_save_dir"):
            assert flag(call, name) == flag(token, name)
    assert flag(token, "--aligned_dataset_tknz_save_dir") == str(aligned / "pivot-lm_other-lm_tknz")

    for call, (source, i) in zip(made[11:15], [(s, i) for s in ("same-lm", "other-lm") for i in (0, 1)]):
        split = aligned / f"pivot-lm_{source}_representation_split{i}"
        assert (flag(call, "--input_data_dir"), flag(call, "--output_data_dir")) == (str(split), f"{split}_fnan")

    for launcher, train, source in ((made[15], made[16], "same-lm"), (made[17], made[18], "other-lm")):
        assert launcher["args"] == ["--nproc_per_node", "1", "--standalone"]
        assert flag(train, "--data_path") == (f"{aligned}/pivot-lm_{source}_representation_split0_fnan,"
                                              f"{aligned}/pivot-lm_{source}_representation_split1_fnan")
        assert flag(train, "--output_dir") == str(ckpt / f"pivot-lm_{source}_pairwise_fusion_ckpt")
        assert flag(train, "--model_name_or_path") == str(work / "models" / "pivot-lm")
        published = {"--do_fuse": "True", "--fuse_with_ref_model": "True", "--lm_loss_weight": "0.9",
                     "--learning_rate": "5e-6", "--num_train_epochs": "3", "--per_device_train_batch_size": "4",
                     "--gradient_accumulation_steps": "4", "--lr_scheduler_type": "cosine",
                     "--warmup_ratio": "0.03", "--model_max_length": "2048", "--conv_temp": "openchat_3.5"}
        assert {k: flag(train, k) for k in published} == published
        assert flag(train, "--use_cpu") == "True"
        assert not {"--bf16", "--fsdp", "--tf32", "--flash_attn_transformers"} & set(train["args"])

    merge = made[19]
    merged = ckpt / "pivot-lm_fusechat-sce"
    assert merge["args"][:2] == [f"{merged}.yml", str(merged)]
    pivot, targets = str(work / "models" / "pivot-lm"), [str(ckpt / f"pivot-lm_{s}_pairwise_fusion_ckpt")
                                                         for s in ("same-lm", "other-lm")]
    assert merge["recipe"]["base_model"] == pivot
    assert [entry["model"] for entry in merge["recipe"]["models"]] == [pivot, *targets]
    assert merge["recipe"]["merge_method"] == "fusechat_sce"

    recorded = steps(project)
    assert all(status == "ran" for _, _, status, _, _ in recorded)
    assert len(recorded) == 20 - 2  # every call but the two launchers is one step
    for stage, unit, *_ in recorded:
        assert (work / "logs" / stage / f"{unit}.log").is_file()


def test_a_failed_stage_stops_the_pipeline_and_reruns_resume_where_work_is_missing(project):
    result = run("pipeline.sh", project["env"], STUB_FAIL="filter_nan")
    assert result.returncode != 0
    assert "filter_nan" in result.stderr and "FAILED" in result.stderr
    assert "filter_nan: simulated failure" in result.stderr  # the end of the step's log is shown
    log = project["work"] / "logs" / "filter_nan" / "same-lm_split0.log"
    assert "simulated failure" in log.read_text()
    assert [c["stage"] for c in calls(project)][-1] == "filter_nan"  # nothing after the failure

    project["calls"].unlink()
    result = run("pipeline.sh", project["env"])
    assert result.returncode == 0, result.stderr
    assert [c["stage"] for c in calls(project)] == ["filter_nan"] * 4 + ["torchrun", "train"] * 2 + ["fusechat-merge"]
    assert "skipped" in result.stdout

    # A training run that died after writing a checkpoint-* folder is run again; so is a missing merge.
    project["calls"].unlink()
    (project["work"] / "checkpoints" / "pivot-lm_fusechat-sce").rename(project["work"] / "merged-elsewhere")
    interrupted = project["work"] / "checkpoints" / "pivot-lm_other-lm_pairwise_fusion_ckpt"
    (interrupted / "config.json").unlink()
    (interrupted / "checkpoint-2").mkdir()
    result = run("pipeline.sh", project["env"])
    assert result.returncode == 0, result.stderr
    assert [c["stage"] for c in calls(project)] == ["torchrun", "train", "fusechat-merge"]
    assert flag(calls(project)[1], "--output_dir") == str(interrupted)
    ran = [(stage, unit) for stage, unit, status, _, _ in steps(project) if status == "ran"]
    assert ran == [("pairwise_fusion", "other-lm"), ("merge", "pivot-lm_fusechat-sce")]


def test_gpu_runs_spread_splits_over_gpus_and_use_the_published_training_flags(project):
    env = {**project["env"], "GPUS": "0,1", "SOURCES": "same-lm"}
    result = run("get_representation.sh", env)
    assert result.returncode == 0, result.stderr
    by_device = {}
    for call in calls(project):
        by_device.setdefault(call["cuda"], []).append(Path(flag(call, "--dataset_save_dir")).name)
        assert flag(call, "--load_in_half") == "bf16" and "--flash_attn_transformers" in call["args"]
    assert by_device == {"0": ["pivot-lm_representation_split0", "same-lm_representation_split0"],
                         "1": ["pivot-lm_representation_split1", "same-lm_representation_split1"]}

    for i in (0, 1):
        (project["work"] / "aligned_representations" / f"pivot-lm_same-lm_representation_split{i}_fnan").mkdir(
            parents=True)
    project["calls"].unlink()
    result = run("pairwise_fusion.sh", env, MASTER_PORT="20001")
    assert result.returncode == 0, result.stderr
    launcher, train = calls(project)
    assert launcher["args"] == ["--nproc_per_node", "2", "--master_port", "20001"]
    assert flag(train, "--bf16") == "True" and flag(train, "--tf32") == "True"
    assert flag(train, "--fsdp") == "full_shard auto_wrap"  # one argument, as the published command
    assert flag(train, "--fsdp_transformer_layer_cls_to_wrap") == "MistralDecoderLayer"
    assert "--use_cpu" not in train["args"]


@pytest.mark.parametrize("script", ["pipeline.sh", "get_representation.sh", "align_same_vocab.sh",
                                    "align_diff_vocab.sh", "filter_nan.sh", "pairwise_fusion.sh", "merge.sh"])
@pytest.mark.parametrize("variable, value", [("PIVOT", "no-such-pivot"), ("SOURCES", "same-lm no-such-source")])
def test_a_missing_model_folder_names_the_variable_before_any_work(project, script, variable, value):
    result = run(script, project["env"], **{variable: value})
    assert result.returncode != 0
    assert "model folder not found" in result.stderr and f"set {variable}" in result.stderr
    assert value.split()[-1] in result.stderr
    assert no_work_done(project)


@pytest.mark.parametrize("script", ["pipeline.sh", "get_representation.sh", "demo.sh"])
def test_a_missing_corpus_names_data_path_before_any_work(project, script):
    result = run(script, project["env"], DATA_PATH=str(project["work"] / "nowhere.json"))
    assert result.returncode != 0
    assert "corpus not found" in result.stderr and "set DATA_PATH" in result.stderr
    assert no_work_done(project) and not (project["work"] / "models" / "openchat_3.5-tiny").exists()


@pytest.mark.parametrize("script, needs", [("align_same_vocab.sh", "get_representation.sh"),
                                           ("align_diff_vocab.sh", "get_representation.sh"),
                                           ("filter_nan.sh", "align_same_vocab.sh"),
                                           ("pairwise_fusion.sh", "filter_nan.sh"),
                                           ("merge.sh", "pairwise_fusion.sh")])
def test_a_driver_without_its_inputs_names_the_driver_to_run_first(project, script, needs):
    result = run(script, project["env"])
    assert result.returncode != 0
    assert f"run scripts/{needs}" in result.stderr
    assert no_work_done(project)


def test_bad_settings_are_refused_before_any_work(project):
    result = run("pipeline.sh", project["env"], SPLIT_NUM="0")
    assert result.returncode != 0 and "SPLIT_NUM" in result.stderr
    for script in ("pipeline.sh", "merge.sh"):  # the merge recipe is checked before the first stage
        result = run(script, project["env"], RECIPE=str(project["work"] / "no.yml"))
        assert result.returncode != 0 and "set RECIPE" in result.stderr
    assert no_work_done(project)


def write_recipe(tmp_path, recipe: dict) -> Path:
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def localize(tmp_path, recipe_path, pivot, targets) -> subprocess.CompletedProcess:
    return subprocess.run(["python", "-m", "fusechat.drivers", "recipe", str(recipe_path), str(tmp_path / "local.yml"),
                           "--pivot", pivot, "--targets", ",".join(targets)], capture_output=True, text=True)


def test_recipe_copy_swaps_hub_models_for_local_folders(tmp_path):
    recipe = {"models": [{"model": "org/pivot"},
                         {"model": "org/target-a", "parameters": {"weight": 0.3}},
                         {"model": "org/target-b", "parameters": {"weight": 0.7}}],
              "merge_method": "ties", "base_model": "org/pivot", "parameters": {"normalize": True},
              "dtype": "bfloat16"}
    # Three local targets for a recipe with two: the third takes the last recipe target's parameters.
    result = localize(tmp_path, write_recipe(tmp_path, recipe), "/m/pivot", ["/c/t1", "/c/t2", "/c/t3"])
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "local.yml").read_text()) == {
        "models": [{"model": "/m/pivot"},
                   {"model": "/c/t1", "parameters": {"weight": 0.3}},
                   {"model": "/c/t2", "parameters": {"weight": 0.7}},
                   {"model": "/c/t3", "parameters": {"weight": 0.7}}],
        "merge_method": "ties", "base_model": "/m/pivot", "parameters": {"normalize": True}, "dtype": "bfloat16"}


def test_recipe_without_base_model_lists_targets_only(tmp_path):
    recipe = {"models": [{"model": f"org/t{k}", "parameters": {"weight": 0.2}} for k in range(5)],
              "merge_method": "linear", "dtype": "float16"}
    result = localize(tmp_path, write_recipe(tmp_path, recipe), "/m/pivot", ["/c/t1", "/c/t2"])
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "local.yml").read_text()) == {
        "models": [{"model": "/c/t1", "parameters": {"weight": 0.2}}, {"model": "/c/t2", "parameters": {"weight": 0.2}}],
        "merge_method": "linear", "dtype": "float16"}


def test_recipe_copy_refuses_what_it_cannot_localize(tmp_path):
    sliced = {"slices": [{"sources": [{"model": "org/a", "layer_range": [0, 2]}]}], "merge_method": "passthrough"}
    result = localize(tmp_path, write_recipe(tmp_path, sliced), "/m/pivot", ["/c/t1"])
    assert result.returncode == 2 and "models:" in result.stderr
    result = localize(tmp_path, tmp_path / "missing.yml", "/m/pivot", ["/c/t1"])
    assert result.returncode == 2 and "merge recipe not found" in result.stderr
    assert not (tmp_path / "local.yml").exists()
