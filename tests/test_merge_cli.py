"""fusechat-merge end to end on the tiny pivot and three perturbed copies of it (docs/design.md 9)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from fusechat.merge import cli, varm_analysis
from fusechat.storage import OUTPUT_MARKER, mark_output
from merge_fixtures import perturbed_copy
from merge_oracles import as64, assert_within_ulp, sce_oracle, varm_oracle

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

RECIPES = Path(__file__).resolve().parents[1] / "mergekit" / "fusechat_configs"
PIVOT_NAME = "openchat/openchat_3.5"
TARGET_NAMES = [f"FuseAI/OpenChat-3.5-7B-{name}-v2.0" for name in ("Starling", "SOLAR", "InternLM", "Mixtral", "Qwen")]
UNCHANGED_IN_THIRD = "model.norm.weight"  # the third copy leaves it alone: a zero variation


@pytest.fixture(scope="module")
def models(pivot_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_models")

    def keep_norm(state, g):
        state[UNCHANGED_IN_THIRD] = load_file(pivot_path / "model.safetensors")[UNCHANGED_IN_THIRD]

    copies = [perturbed_copy(pivot_path, root / "t0", 1, 0.02),
              perturbed_copy(pivot_path, root / "t1", 2, 0.05),
              perturbed_copy(pivot_path, root / "t2", 3, 0.01, keep_norm)]
    return {"pivot": Path(pivot_path), "targets": copies, "root": root}


def localize(recipe: str, models, out_dir: Path, **overrides) -> Path:
    """The recipe with the hub names pointed at the local folders (targets beyond the copies dropped)."""
    config = yaml.safe_load((RECIPES / recipe).read_text())
    names = {PIVOT_NAME: str(models["pivot"]), **{n: str(p) for n, p in zip(TARGET_NAMES, models["targets"])}}
    config["models"] = [dict(entry, model=names[entry["model"]]) for entry in config["models"] if entry["model"] in names]
    if "base_model" in config:
        config["base_model"] = names[config["base_model"]]
    config.update(overrides)
    path = out_dir / recipe
    path.write_text(yaml.safe_dump(config))
    return path


def load_inputs(models, dtype):
    pivot = {k: v.to(dtype) for k, v in load_file(models["pivot"] / "model.safetensors").items()}
    targets = [{k: v.to(dtype) for k, v in load_file(t / "model.safetensors").items()} for t in models["targets"]]
    return pivot, targets


def run_cli(capsys, *args):
    try:
        code = cli.cli([str(a) for a in args])
    except SystemExit as exc:  # click's usage errors
        code = exc.code
    return code, capsys.readouterr().err


def assert_carries_pivot_tokenizer(out: Path, pivot: Path):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (pivot / name).read_bytes(), name
    from transformers import AutoTokenizer

    merged, original = AutoTokenizer.from_pretrained(str(out)), AutoTokenizer.from_pretrained(str(pivot))
    messages = [{"role": "user", "content": "Hi"}]
    assert merged.chat_template and merged.chat_template == original.chat_template
    assert merged.apply_chat_template(messages, add_generation_prompt=True) == \
        original.apply_chat_template(messages, add_generation_prompt=True)


# ---------------------------------------------------------------- the recipes

def test_sce_recipe_is_fusechat_sce_exactly(models, tmp_path, capsys):
    config = localize("fusechat-sce.yml", models, tmp_path)
    out = tmp_path / "FuseChat-SCE"
    code, err = run_cli(capsys, config, out)
    assert code == 0, err
    merged = load_file(out / "model.safetensors")
    pivot, targets = load_inputs(models, torch.bfloat16)  # the recipe merges in bfloat16
    assert set(merged) == set(pivot)
    for name, base in pivot.items():
        want = sce_oracle(as64(base), [as64(t[name]) for t in targets], 0.1)
        assert_within_ulp(merged[name], want, torch.bfloat16)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 32002
    assert (out / "README.md").read_text().count("FuseChat-SCE") >= 1
    assert_carries_pivot_tokenizer(out, models["pivot"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_varm_recipe_matches_oracle(models, tmp_path, capsys):
    out = tmp_path / "varm"
    code, err = run_cli(capsys, localize("fusechat-varm.yml", models, tmp_path), out)
    assert code == 0, err
    merged = load_file(out / "model.safetensors")
    pivot, targets = load_inputs(models, torch.bfloat16)
    for name, base in pivot.items():
        assert_within_ulp(merged[name], varm_oracle(as64(base), [as64(t[name]) for t in targets]), torch.bfloat16)
    # the third target did not change the final norm: uniform weights there
    want = sum(as64(t[UNCHANGED_IN_THIRD]) for t in targets) / 3
    assert_within_ulp(merged[UNCHANGED_IN_THIRD], want, torch.bfloat16)
    assert_carries_pivot_tokenizer(out, models["pivot"])


def group_oracle(name, granularity):
    """Group of a tensor name for the tiny Mistral, written out by hand."""
    parts = name.split(".")
    if granularity == "model":
        return "*"
    if parts[1] != "layers":
        return name
    return parts[2] if granularity == "layer" else ".".join(parts[:4])


@pytest.mark.parametrize("granularity,softmax", [("module", False), ("layer", True), ("model", False)])
def test_varm_granularity_sums_per_tensor_variations(models, tmp_path, capsys, granularity, softmax):
    config = localize("fusechat-varm.yml", models, tmp_path,
                      parameters={"granularity": granularity, "softmax": softmax, "temperature": 0.001})
    out = tmp_path / "varm"
    code, err = run_cli(capsys, config, out)
    assert code == 0, err
    merged = load_file(out / "model.safetensors")
    pivot, targets = load_inputs(models, torch.bfloat16)
    r = [{} for _ in targets]
    for i, t in enumerate(targets):
        for name, base in pivot.items():
            key = group_oracle(name, granularity)
            r[i][key] = r[i].get(key, 0.0) + ((as64(t[name]) - as64(base)) ** 2).mean()
    for name, base in pivot.items():
        rs = np.array([ri[group_oracle(name, granularity)] for ri in r])
        if (rs == 0).any():
            w = np.full(len(rs), 1 / len(rs))
        elif softmax:
            e = np.exp((rs - rs.max()) / 0.001)
            w = e / e.sum()
        else:
            w = rs / rs.sum()
        assert_within_ulp(merged[name], sum(wi * as64(t[name]) for wi, t in zip(w, targets)), torch.bfloat16)


@pytest.mark.parametrize("recipe,dtype", [("fusechat-linear.yml", torch.float16), ("fusechat-ta.yml", torch.bfloat16),
                                          ("fusechat-ties.yml", torch.bfloat16), ("fusechat-dare.yml", torch.bfloat16)])
def test_every_mergekit_recipe_runs(models, tmp_path, capsys, recipe, dtype):
    out = tmp_path / "merged"
    options = ["--random-seed", "1", "--out-shard-size", "3M", "--no-write-model-card"]
    code, err = run_cli(capsys, localize(recipe, models, tmp_path), out, *options)
    assert code == 0, err
    index = json.loads((out / "model.safetensors.index.json").read_text())  # --out-shard-size honoured
    merged = {}
    for shard in set(index["weight_map"].values()):
        merged.update(load_file(out / shard))
    assert not (out / "README.md").exists()  # --no-write-model-card honoured
    pivot, targets = load_inputs(models, dtype)
    assert {k: v.shape for k, v in merged.items()} == {k: v.shape for k, v in pivot.items()}
    assert all(v.dtype == dtype for v in merged.values())
    name = "model.layers.1.mlp.up_proj.weight"
    if recipe == "fusechat-linear.yml":  # weights 0.2 each, normalised: the mean of the targets
        assert_within_ulp(merged[name], sum(as64(t[name]) for t in targets) / 3, dtype, ulps=2)
    if recipe == "fusechat-ta.yml":  # base + 0.3 * sum of deltas (mergekit rounds the deltas to bfloat16)
        want = as64(pivot[name]) + 0.3 * sum(as64(t[name]) - as64(pivot[name]) for t in targets)
        np.testing.assert_allclose(as64(merged[name]), want, rtol=2 ** -8, atol=1e-3)
    assert_carries_pivot_tokenizer(out, models["pivot"])


# ---------------------------------------------------------------- shape rules

def test_larger_vocabulary_contributes_its_leading_block(models, tmp_path, capsys):
    def widen(state, g):
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            state[name] = torch.cat([state[name], torch.randn(8, state[name].shape[1], generator=g)])

    wide = perturbed_copy(models["pivot"], tmp_path / "wide", 5, 0.03, widen)
    cfg = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps(dict(cfg, vocab_size=32010)))
    config = tmp_path / "wide.yml"
    config.write_text(yaml.safe_dump({
        "models": [{"model": str(models["pivot"])}, {"model": str(models["targets"][0])}, {"model": str(wide)}],
        "merge_method": "fusechat_sce", "base_model": str(models["pivot"]),
        "parameters": {"select_topk": 0.1}, "dtype": "float32"}))
    out = tmp_path / "out"
    code, err = run_cli(capsys, config, out)
    assert code == 0, err
    merged = load_file(out / "model.safetensors")
    pivot = load_file(models["pivot"] / "model.safetensors")
    t0, tw = load_file(models["targets"][0] / "model.safetensors"), load_file(wide / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        want = sce_oracle(as64(pivot[name]), [as64(t0[name]), as64(tw[name])[: pivot[name].shape[0]]], 0.1)
        assert merged[name].shape == pivot[name].shape
        assert_within_ulp(merged[name], want, torch.float32)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 32002


# ---------------------------------------------------------------- bad input: an error before anything is written

def sce_config(tmp_path, models, extra_models=(), **overrides):
    config = {"models": [{"model": str(models["pivot"])}, *[{"model": str(m)} for m in models["targets"][:2]],
                         *[{"model": str(m)} for m in extra_models]],
              "merge_method": "fusechat_sce", "base_model": str(models["pivot"]),
              "parameters": {"select_topk": 0.1}, "dtype": "bfloat16"}
    config.update(overrides)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    return path


@pytest.fixture
def existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    return out


def assert_untouched(out: Path):
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".out")] == []


def test_missing_model_folder(models, tmp_path, capsys, existing_output):
    code, err = run_cli(capsys, sce_config(tmp_path, models, [tmp_path / "no-such-model"]), existing_output)
    assert code == 2 and "model folder not found" in err and "no-such-model" in err
    assert_untouched(existing_output)


def test_missing_config_file(tmp_path, capsys):
    code, err = run_cli(capsys, tmp_path / "nope.yml", tmp_path / "out")
    assert code == 2 and "merge config not found" in err
    assert not (tmp_path / "out").exists()


def test_other_architecture(models, diff_vocab_source_path, tmp_path, capsys, existing_output):
    code, err = run_cli(capsys, sce_config(tmp_path, models, [diff_vocab_source_path]), existing_output)
    assert code == 2 and "architecture" in err and "Qwen2ForCausalLM" in err
    assert_untouched(existing_output)


def test_other_hidden_size(models, same_vocab_source_path, tmp_path, capsys, existing_output):
    code, err = run_cli(capsys, sce_config(tmp_path, models, [same_vocab_source_path]), existing_output)
    assert code == 2 and "hidden size 96" in err
    assert_untouched(existing_output)


@pytest.mark.parametrize("method", ["fusechat_sce", "fusechat_varm", "ties"])
def test_no_base_model_for_a_method_that_needs_one(models, tmp_path, capsys, existing_output, method):
    config = sce_config(tmp_path, models, base_model=None, merge_method=method, parameters=None)
    code, err = run_cli(capsys, config, existing_output)
    assert code == 2 and f"merge_method {method} needs a base_model" in err
    assert_untouched(existing_output)


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_select_topk_outside_unit_interval(models, tmp_path, capsys, existing_output, value):
    code, err = run_cli(capsys, sce_config(tmp_path, models, parameters={"select_topk": value}), existing_output)
    assert code == 2 and f"select_topk={value}" in err
    assert_untouched(existing_output)


def test_smaller_vocabulary_target(models, tmp_path, capsys, existing_output):
    def narrow(state, g):
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            state[name] = state[name][:32000]

    small = perturbed_copy(models["pivot"], tmp_path / "small", 6, 0.01, narrow)
    cfg = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps(dict(cfg, vocab_size=32000)))
    code, err = run_cli(capsys, sce_config(tmp_path, models, [small]), existing_output)
    assert code == 2 and "32000 vocabulary rows, fewer than the pivot's 32002" in err
    assert_untouched(existing_output)


def test_failure_during_the_merge_leaves_no_half_written_folder(models, tmp_path, existing_output):
    def odd_mlp(state, g):
        state["model.layers.1.mlp.up_proj.weight"] = torch.randn(130, 64, generator=g)

    odd = perturbed_copy(models["pivot"], tmp_path / "odd", 7, 0.01, odd_mlp)
    mark_output(existing_output)  # an earlier merge of ours: only a finished merge replaces it
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
        cli.main([str(sce_config(tmp_path, models, [odd])), str(existing_output)])
    assert sorted(p.name for p in existing_output.iterdir()) == [OUTPUT_MARKER, "keep.txt"]
    assert [p.name for p in existing_output.parent.iterdir() if p.name.startswith(".out")] == []


# ---------------------------------------------------------------- VaRM statistics

def test_varm_analysis_writes_reference_statistics(models, tmp_path):
    pivot = load_file(models["pivot"] / "model.safetensors")
    targets = models["targets"][1:]
    varm_analysis.main(["--base_model", str(models["pivot"]), "--target_models", ",".join(map(str, targets)),
                        "--save_dir", str(tmp_path / "stats")])
    for target in targets:
        stats = json.loads((tmp_path / "stats" / f"{target.name}.json").read_text())
        weights = load_file(target / "model.safetensors")
        per_tensor = {n: ((as64(weights[n]) - as64(p)) ** 2).mean() for n, p in pivot.items()}
        assert stats["key_to_params"] == pytest.approx(per_tensor, rel=1e-12)
        total = sum(p.numel() for p in pivot.values())
        changed = sum(int((weights[n] != p).sum()) for n, p in pivot.items())
        squared = sum(((as64(weights[n]) - as64(p)) ** 2).sum() for n, p in pivot.items())
        assert stats["total_param_num"] == total and stats["total_diff_num"] == changed
        assert stats["diff_rate"] == pytest.approx(100 * changed / total)
        assert stats["aveage_var_degree"] == pytest.approx(squared / total, rel=1e-12)
        layer0 = sum(v for n, v in per_tensor.items() if n.startswith("model.layers.0."))
        assert stats["layer_to_params"]["0"] == pytest.approx(layer0, rel=1e-12)
        attn1 = sum(v for n, v in per_tensor.items() if n.startswith("model.layers.1.self_attn."))
        assert stats["module_to_params"]["model.layers.1.self_attn"] == pytest.approx(attn1, rel=1e-12)
        assert stats["module_to_params"]["lm_head.weight"] == pytest.approx(per_tensor["lm_head.weight"], rel=1e-12)
    third = json.loads((tmp_path / "stats" / "t2.json").read_text())
    assert third["key_to_params"][UNCHANGED_IN_THIRD] == 0.0


def test_varm_analysis_save_path_needs_one_target(models, tmp_path, capsys):
    status = varm_analysis.cli(["--base_model", str(models["pivot"]), "--target_models",
                                ",".join(map(str, models["targets"])), "--save_path", str(tmp_path / "s.json")])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "fusechat-varm-analysis: error: --save_path names one file")
    assert not (tmp_path / "s.json").exists()
