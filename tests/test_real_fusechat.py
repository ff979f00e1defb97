"""FuseChat on real models through scripts/demo.sh (DEMO=real): pivot SmolLM2-135M-Instruct, source
gemma-3-270m (another vocabulary: 262,144 SentencePiece ids against 49,152 byte-level ones), one ChatML
template, at a small setting (eight conversations, 64 tokens, three steps). Expected values come from
docs/design.md (3: prompts and separators; 6.2: the mapping's fixed points; 6.3: what an aligned position
carries; 9: SCE) and from the chatml template's rule (each model closes turns with its own separator)."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from test_demo import carried_and_total, load_rows

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "fusechat_sample.json"
PIVOT, SOURCE = "smollm2-135m-instruct", "gemma-3-270m"
RECORDS, EVERY, LENGTH, STEPS = 8, 4, 64, 3
# Ids fixed by the two vocabularies.
SMOL_IM_END, SMOL_IM_START = 2, 1  # SmolLM2: eos <|im_end|>, bos <|im_start|>
GEMMA_PAD, GEMMA_EOS, GEMMA_BOS, GEMMA_END_OF_TURN = 0, 1, 2, 106


@pytest.fixture(scope="module")
def real_demo(tmp_path_factory, smollm2_path, gemma_path):
    work = tmp_path_factory.mktemp("real_demo")
    (work / "models").mkdir()
    for name, path in ((PIVOT, smollm2_path), (SOURCE, gemma_path)):
        (work / "models" / name).symlink_to(path, target_is_directory=True)
    corpus = work / "corpus.json"
    corpus.write_text(json.dumps(json.loads(CORPUS.read_text(encoding="utf-8"))[:RECORDS]), encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIVOT", "SOURCES", "TEACHER", "OVERWRITE", "MODELS", "MERGE", "SFT_CKPT_DIR", "CONV_TEMP",
                        "LEARNING_RATE")}
    env.update(DEMO="real", WORK_DIR=str(work), DATA_PATH=str(corpus), HELDOUT_EVERY=str(EVERY),
               MODEL_MAX_LENGTH=str(LENGTH), MAX_STEPS=str(STEPS), TRAIN_BATCH_SIZE="2", HF_HUB_OFFLINE="1")
    result = subprocess.run([str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "stdout": result.stdout, "corpus": json.loads(corpus.read_text()),
            "summary": json.loads((work / "logs" / "demo_summary.json").read_text())}


def chatml(record, separator: str) -> str:
    """docs/design.md 3's ChatML exchange, every turn closed by the model's own separator."""
    role = {"human": "user", "gpt": "assistant"}
    return "".join(f"<|im_start|>{role[turn['from']]}\n{turn['value']}{separator}\n"
                   for turn in record["conversations"])


@pytest.mark.slow
def test_each_model_closes_its_turns_with_its_own_separator(real_demo):
    from transformers import AutoTokenizer

    work = real_demo["work"]
    trained = [r for i, r in enumerate(real_demo["corpus"]) if i % EVERY != EVERY - 1]
    for model, separator, first in ((PIVOT, "<|im_end|>", []), (SOURCE, "<end_of_turn>", [GEMMA_BOS])):
        tok = AutoTokenizer.from_pretrained(str(work / "models" / model))
        rows = load_rows(work / "representations" / f"{model}_tknz_split0")
        assert [row["id"] for row in rows] == [str(r["id"]) for r in trained]
        for row, record in zip(rows, trained):
            expected = first + tok(chatml(record, separator), add_special_tokens=False)["input_ids"]
            assert row["input_ids"] == expected[:LENGTH]
    gemma_rows = load_rows(work / "representations" / f"{SOURCE}_tknz_split0")
    assert all(GEMMA_END_OF_TURN in row["input_ids"] for row in gemma_rows)


@pytest.mark.slow
def test_the_mapping_sends_separators_bos_and_eos_to_the_pivots(real_demo):
    import scipy.sparse

    aligned = real_demo["work"] / "aligned_representations"
    mapping = json.loads((aligned / f"{PIVOT}_{SOURCE}_blending_to_base.json").read_text())
    assert len(mapping) == 262144 and all(0 <= m < 49152 for m in mapping)
    assert mapping[GEMMA_END_OF_TURN] == SMOL_IM_END  # the turn separators
    assert (mapping[GEMMA_BOS], mapping[GEMMA_EOS]) == (SMOL_IM_START, SMOL_IM_END)
    counts = scipy.sparse.load_npz(aligned / f"{PIVOT}_{SOURCE}_token_alignment_matrix.npz")
    assert counts.shape == (49152, 262144) and counts.nnz > 0


@pytest.mark.slow
def test_alignment_share_and_fusion_losses(real_demo):
    work, summary = real_demo["work"], real_demo["summary"]
    pair = summary["pairs"][SOURCE]
    assert pair["vocabulary"] == "different"
    rows = load_rows(work / "aligned_representations" / f"{PIVOT}_{SOURCE}_representation_split0")
    carried, total = carried_and_total(rows)
    assert (pair["carried"], pair["positions"]) == (carried, total)
    assert pair["alignment_quality"] == pytest.approx(carried / total) and 0.5 < carried / total < 1.0

    for ckpt in (work / "checkpoints" / f"{PIVOT}_{SOURCE}_pairwise_fusion_ckpt",
                 work / "checkpoints" / "sft_baseline" / f"{PIVOT}_{SOURCE}_pairwise_fusion_ckpt"):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        logged = [e for e in state["log_history"] if "loss" in e]
        assert state["global_step"] == STEPS and len(logged) == STEPS
        for key in ("loss", "lm_loss", "fuse_loss"):
            values = [e[key] for e in logged]
            assert all(math.isfinite(v) and v > 0 for v in values) and len(set(values)) > 1, (ckpt, key, values)


@pytest.mark.slow
def test_one_target_merge_is_the_fused_pivot_and_it_answers_readably(real_demo):
    import torch
    from safetensors.torch import load_file

    work = real_demo["work"]
    merged = work / "checkpoints" / f"{PIVOT}_fusechat-sce"
    fused = load_file(str(work / "checkpoints" / f"{PIVOT}_{SOURCE}_pairwise_fusion_ckpt" / "model.safetensors"))
    merged_weights = {}
    for part in merged.glob("*.safetensors"):
        merged_weights.update(load_file(str(part)))
    # SCE with one target: weight 1, every nonzero delta agrees with its own sign, so W_base + d = the
    # target, in the recipe's dtype (bfloat16).
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
        assert merged_weights[name].dtype == torch.bfloat16
        assert torch.equal(merged_weights[name], fused[name].to(torch.bfloat16)), name

    answer = real_demo["summary"]["answer"]["answer"]
    words = answer.split()
    assert len(words) >= 8 and "tuple" in answer.lower(), answer
    assert sum(w.strip(".,:;!?()`'\"*").isalpha() for w in words) >= 0.7 * len(words), answer
    assert f"A: {answer}" in real_demo["stdout"]


@pytest.mark.slow
def test_heldout_measures_on_real_models(real_demo):
    measures = real_demo["summary"]["heldout"]
    assert measures["rows"] == RECORDS // EVERY
    models = measures["models"]
    for label in ("before", "sft", "fused"):
        assert math.isfinite(models[label]["reply_ce"]) and math.isfinite(models[label]["teacher_ce"])
        # A real chat model on chat replies: far below uniform guessing over 49,152 ids (10.8 nats).
        assert models[label]["reply_ce"] < 5.0
    assert math.isfinite(models["teacher"]["reply_ce"])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["family rule", "--separator"])
def test_a_tokenizer_without_the_chosen_separator_stops_before_any_work(how, pivot_path, tmp_path, monkeypatch, capsys):
    """A Gemma-family config whose tokenizer (OpenChat's) has no <end_of_turn>; or a separator given by
    flag that the tokenizer lacks: one line naming the model folder and the token, nothing written."""
    import shutil

    from fusechat.cli.get_data_representation import main
    from fusechat.errors import run_cli

    model = tmp_path / "gemma-like"
    shutil.copytree(pivot_path, model)
    config = json.loads((model / "config.json").read_text())
    if how == "family rule":
        config["architectures"] = ["Gemma3ForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(model), "--data_path", str(CORPUS), "--conv_temp", "chatml",
            "--tknz_dataset_path", str(out / "tknz"), "--dataset_save_dir", str(out / "rep"), "--get_representation",
            "--model_max_length", "64"]
    if how == "--separator":
        argv += ["--separator", "<end_of_turn>"]
    status = run_cli(main, argv, prog="get_data_representation.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"get_data_representation.py: error: {model}: ")
    assert "<end_of_turn>" in lines[0]
    assert not out.exists()
