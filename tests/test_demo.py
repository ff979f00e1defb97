"""The one-command demo (scripts/demo.sh) end to end on the tiny fixture models, and its summary
(python -m fusechat.demo summary) against figures computed here from docs/design.md's definitions."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "fusechat_sample.json"
PIVOT, SAME, OTHER = "openchat_3.5-tiny", "starling-tiny", "smollm2-135m-instruct"
DEMO_STEPS = 4  # the demo's own default trains longer; the figures checked here do not need it


# ---------------------------------------------------------------------------------------------
# Oracles (docs/design.md 6.3 and 8)
# ---------------------------------------------------------------------------------------------

def carried_and_total(rows) -> tuple[int, int]:
    """Positions whose fused list is neither EMPTY nor ONE-HOT (a single candidate, logit 1.0,
    on the next base token; at the last position the last token again)."""
    carried = total = 0
    for row in rows:
        ids = row["input_ids"]
        for t, (logits, indices) in enumerate(zip(row["fused_per_step_logits"], row["fused_per_step_indices"])):
            total += 1
            next_token = ids[t + 1] if t + 1 < len(ids) else ids[-1]
            empty = len(indices) == 0
            one_hot = len(indices) == 1 and logits[0] == 1.0 and indices[0] == next_token
            carried += not (empty or one_hot)
    return carried, total


def source_won(rows) -> int:
    """Rows where exp(-fused_metric_ce) > exp(-metric_ce), both in bfloat16 (a tie keeps the pivot)."""
    wins = 0
    for row in rows:
        pivot = torch.exp(-torch.tensor(row["metric_ce"], dtype=torch.bfloat16))
        source = torch.exp(-torch.tensor(row["fused_metric_ce"], dtype=torch.bfloat16))
        wins += bool(source > pivot)
    return wins


def load_rows(path: Path) -> list[dict]:
    from datasets import load_from_disk

    return list(load_from_disk(str(path))["train"])


def save_rows(path: Path, rows: list[dict]) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))


# ---------------------------------------------------------------------------------------------
# The summary on a hand-made run
# ---------------------------------------------------------------------------------------------

def row(rid, ids, entries, metric_ce, fused_metric_ce):
    return {"id": rid, "input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids),
            "per_step_logits": [[0.0]] * len(ids), "per_step_indices": [[0]] * len(ids),
            "fused_per_step_logits": [e[0] for e in entries], "fused_per_step_indices": [e[1] for e in entries],
            "metric_ce": metric_ce, "fused_metric_ce": fused_metric_ce}


@pytest.mark.slow
def test_summary_figures_on_a_hand_made_run(tmp_path):
    aligned_rows = [
        # carried, ONE-HOT, EMPTY, ONE-HOT at the last position (the last token again): 1 of 4
        row("a", [1, 5, 6, 7], [([2.0, 1.0], [5, 9]), ([1.0], [6]), ([], []), ([1.0], [7])], 2.0, 1.0),
        # one candidate but logit 0.5; logit 1.0 on another token than the next: both carried
        row("b", [1, 8], [([0.5], [8]), ([1.0], [3])], 1.0, 1.0),
        row("c", [1, 4], [([1.0], [4]), ([1.5, 0.5], [2, 3])], 3.0, 3.0001),  # ONE-HOT, carried; CEs tie in bf16
        row("d", [1, 2, 3], [([1.0], [2]), ([1.0], [3]), ([0.1, 0.2], [3, 4])], math.nan, 1.0),  # 1 of 3
    ]
    kept_rows = aligned_rows[:3]  # filter_nan drops the NaN row
    aligned, kept = tmp_path / "aligned_split0", tmp_path / "aligned_split0_fnan"
    save_rows(aligned, aligned_rows)
    save_rows(kept, kept_rows)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": [
        {"loss": 3.0, "lm_loss": 3.2, "fuse_loss": 1.4, "step": 1}, {"eval_loss": 9.0, "step": 1},
        {"loss": 2.0, "lm_loss": 2.1, "fuse_loss": 1.0, "step": 2}, {"train_runtime": 1.0, "step": 2}]}))
    steps = tmp_path / "steps.tsv"
    steps.write_text("\n".join("\t".join(map(str, line)) for line in [
        ("align_diff_vocab", "src_token_alignment", "ran", 3, tmp_path / "mapping.json"),
        ("align_diff_vocab", "src_split0", "ran", 7, aligned),
        ("filter_nan", "src_split0", "skipped", 0, kept),
        ("pairwise_fusion", "src", "ran", 11, ckpt / "config.json"),
        ("generate", "merged", "ran", 2, ""),
    ]) + "\n")

    out = tmp_path / "summary.json"
    result = subprocess.run(["python", "-m", "fusechat.demo", "summary", "--steps", str(steps), "--json", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert summary["stages"] == {
        "align_diff_vocab": {"ran": 2, "skipped": 0, "seconds": 10.0, "outputs": 2, "rows": 4},
        "filter_nan": {"ran": 0, "skipped": 1, "seconds": 0.0, "outputs": 1, "rows": 3},
        "pairwise_fusion": {"ran": 1, "skipped": 0, "seconds": 11.0, "outputs": 1, "rows": None},
        "generate": {"ran": 1, "skipped": 0, "seconds": 2.0, "outputs": 1, "rows": None},
    }
    pair = summary["pairs"]["src"]
    assert (pair["carried"], pair["positions"]) == carried_and_total(aligned_rows) == (5, 11)
    assert pair["alignment_quality"] == pytest.approx(5 / 11)
    assert (pair["source_won"], pair["mince_rows"]) == (source_won(kept_rows), 3) == (1, 3)
    assert (pair["vocabulary"], pair["aligned_rows"], pair["kept_rows"]) == ("different", 4, 3)
    assert pair["training"] == {"steps": 2, "loss": [3.0, 2.0], "lm_loss": [3.2, 2.1], "fuse_loss": [1.4, 1.0]}
    assert "45.5%" in result.stdout and "1/3 (33%)" in result.stdout and "3.200 -> 2.100" in result.stdout


@pytest.mark.slow
def test_summary_refuses_a_malformed_steps_file(tmp_path):
    steps = tmp_path / "steps.tsv"
    steps.write_text("filter_nan\tsrc_split0\tran\n")
    result = subprocess.run(["python", "-m", "fusechat.demo", "summary", "--steps", str(steps)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "line 1" in result.stderr and str(steps) in result.stderr


# ---------------------------------------------------------------------------------------------
# The demo itself
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory, pivot_path, same_vocab_source_path, smollm2_path):
    """One run of scripts/demo.sh in a scratch WORK_DIR. The fixture models come from the shared
    fixture cache (the demo builds them itself when they are missing)."""
    work = tmp_path_factory.mktemp("demo")
    (work / "models").mkdir()
    for name, path in ((PIVOT, pivot_path), (SAME, same_vocab_source_path), (OTHER, smollm2_path)):
        (work / "models" / name).symlink_to(path, target_is_directory=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIVOT", "SOURCES", "TEACHER", "DATA_PATH", "OVERWRITE", "MODELS", "MERGE", "SFT_CKPT_DIR",
                        "CONV_TEMP", "LEARNING_RATE")}
    env.update(DEMO="tiny", WORK_DIR=str(work), HF_HUB_OFFLINE="1", MAX_STEPS=str(DEMO_STEPS))
    result = subprocess.run([str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "env": env, "stdout": result.stdout,
            "summary": json.loads((work / "logs" / "demo_summary.json").read_text())}


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_the_summary(demo):
    stages = demo["summary"]["stages"]
    assert list(stages) == ["fixtures", "heldout_split", "get_representation", "align_same_vocab", "align_diff_vocab",
                            "filter_nan", "pairwise_fusion", "merge", "sft_baseline", "generate",
                            "heldout_representation", "heldout_alignment", "heldout_measures"]
    records = len(json.loads(CORPUS.read_text(encoding="utf-8")))
    heldout = records // 5  # every 5th conversation
    assert stages["get_representation"]["rows"] == 3 * (records - heldout)  # pivot and both sources, one split
    assert stages["align_same_vocab"]["rows"] == stages["align_diff_vocab"]["rows"] == records - heldout
    assert stages["heldout_representation"]["rows"] == 2 * heldout  # pivot and teacher
    assert stages["heldout_alignment"]["rows"] == heldout
    assert all(s["skipped"] == 0 for name, s in stages.items() if name != "fixtures")
    for heading in ("Stages", "Pairs (pivot + source)", "Merged model", "MinCE: source won", "source distribution at",
                    "Held-out conversations (10, never trained on)", "pivot after SFT", "pivot after fusion"):
        assert heading in demo["stdout"]

    merged = demo["work"] / "checkpoints" / f"{PIVOT}_fusechat-sce"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    recipe = (demo["work"] / "checkpoints" / f"{PIVOT}_fusechat-sce.yml").read_text()
    assert "fusechat_sce" in recipe and "OpenChat-3.5-7B" not in recipe  # hub names replaced by folders
    answer = demo["summary"]["answer"]
    assert answer["model"] == str(merged) and isinstance(answer["answer"], str)
    assert f"A: {answer['answer']}" in demo["stdout"]


@pytest.mark.slow
def test_demo_pairs_match_figures_computed_from_the_outputs(demo):
    aligned = demo["work"] / "aligned_representations"
    checkpoints = demo["work"] / "checkpoints"
    pairs = demo["summary"]["pairs"]
    assert {name: p["vocabulary"] for name, p in pairs.items()} == {SAME: "same", OTHER: "different"}
    for source, pair in pairs.items():
        aligned_rows = load_rows(aligned / f"{PIVOT}_{source}_representation_split0")
        kept_rows = load_rows(aligned / f"{PIVOT}_{source}_representation_split0_fnan")
        assert (pair["aligned_rows"], pair["kept_rows"]) == (len(aligned_rows), len(kept_rows))
        carried, total = carried_and_total(aligned_rows)
        assert (pair["carried"], pair["positions"]) == (carried, total)
        assert (pair["source_won"], pair["mince_rows"]) == (source_won(kept_rows), len(kept_rows))

        state = json.loads((checkpoints / f"{PIVOT}_{source}_pairwise_fusion_ckpt" / "trainer_state.json").read_text())
        logged = [entry for entry in state["log_history"] if "loss" in entry]
        assert pair["training"]["steps"] == state["global_step"] == DEMO_STEPS
        for key in ("lm_loss", "fuse_loss"):
            assert pair["training"][key] == [logged[0][key], logged[-1][key]]
    # The same-vocabulary source's lists are copied as they are: every position carries them.
    assert pairs[SAME]["alignment_quality"] == 1.0
    assert 0.5 < pairs[OTHER]["alignment_quality"] < 1.0


@pytest.mark.slow
def test_demo_heldout_measures_come_from_conversations_training_never_saw(demo):
    work = demo["work"]
    records = json.loads(CORPUS.read_text(encoding="utf-8"))
    heldout_ids = {str(r["id"]) for i, r in enumerate(records) if i % 5 == 4}
    trained = {row["id"] for row in load_rows(work / "aligned_representations"
                                              / f"{PIVOT}_{OTHER}_representation_split0_fnan")}
    aligned = work / "heldout" / "aligned_representations" / f"{PIVOT}_{OTHER}_representation_split0"
    assert {row["id"] for row in load_rows(aligned)} == heldout_ids and not trained & heldout_ids
    assert len(trained) == len(records) - len(heldout_ids)

    measures = demo["summary"]["heldout"]
    assert measures["rows"] == len(heldout_ids) and measures["aligned"] == str(aligned)
    models = measures["models"]
    assert list(models) == ["before", "sft", "fused", "teacher"]
    for label in ("before", "sft", "fused"):
        assert models[label]["reply_tokens"] > 0 and 0 < models[label]["teacher_positions"] <= models[label]["reply_tokens"]
        assert math.isfinite(models[label]["reply_ce"]) and math.isfinite(models[label]["teacher_ce"])
    assert models["teacher"]["teacher_ce"] is None
    # A real chat model on chat replies: far below uniform guessing over its 49,152 ids (10.8 nats).
    assert models["teacher"]["reply_ce"] < 5.0
    for label in ("before", "sft", "fused", "teacher"):
        assert f"{models[label]['reply_ce']:.4f}" in demo["stdout"]

    # The SFT baseline: the same run as the fusion with lm_loss_weight 1.0, so its loss is the LM loss.
    sft = work / "checkpoints" / "sft_baseline" / f"{PIVOT}_{OTHER}_pairwise_fusion_ckpt"
    state = json.loads((sft / "trainer_state.json").read_text())
    assert state["global_step"] == DEMO_STEPS
    for entry in (e for e in state["log_history"] if "loss" in e):
        assert entry["loss"] == pytest.approx(entry["lm_loss"], rel=1e-3)


@pytest.mark.slow
def test_demo_rerun_reuses_every_output(demo):
    merged = demo["work"] / "checkpoints" / f"{PIVOT}_fusechat-sce"
    before = (merged / "config.json").stat().st_mtime_ns
    result = subprocess.run([str(REPO / "scripts" / "demo.sh")], env=demo["env"], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((demo["work"] / "logs" / "demo_summary.json").read_text())
    assert all(s["ran"] == 0 for s in summary["stages"].values())
    assert (merged / "config.json").stat().st_mtime_ns == before
    for source, pair in summary["pairs"].items():
        for key in ("carried", "positions", "source_won", "mince_rows", "training"):
            assert pair[key] == demo["summary"]["pairs"][source][key]
    assert summary["answer"] == demo["summary"]["answer"]
    assert summary["heldout"] == demo["summary"]["heldout"]
