"""The published FuseChat-7B-v2.0 recipe through scripts/pipeline.sh, at tiny size on a CPU.

Pivot OpenChat-3.5; sources Starling, Nous-Hermes-2-SOLAR, Mixtral-Instruct, internlm2-chat-20b and
Qwen1.5-Chat, one template (openchat_3.5) for all, as their tiny stand-ins under the published
folder names (the defaults of scripts/common.sh). Every pair runs to a target model, both routes
included, and the five targets are merged with FuseChat's SCE.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from datasets import load_from_disk

from fusechat import fixtures

REPO = Path(__file__).resolve().parents[1]
PIVOT = "openchat_3.5"
SAME = ["Starling-LM-7B-alpha", "Nous-Hermes-2-SOLAR-10.7B", "Mixtral-8x7B-Instruct-v0.1"]
DIFFERENT = ["internlm2-chat-20b", "Qwen1.5-72B-Chat"]
TINY = dict(GPUS="", SPLIT_NUM="1", MODEL_MAX_LENGTH="128", NUM_WORKERS="1", REP_BATCH_SIZE="8", MAX_STEPS="2",
            TRAIN_BATCH_SIZE="2", GRAD_ACCUM="1", LEARNING_RATE="1e-3", WARMUP_RATIO="0", SAVE_STRATEGY="no",
            HF_HUB_OFFLINE="1")


def rows(path):
    return load_from_disk(str(path))["train"]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe")
    (work / "models").mkdir()
    for folder, name in fixtures.RECIPE_MODELS.items():
        (work / "models" / folder).symlink_to(fixtures.build_tiny_model(name), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCES", "OVERWRITE", "MODELS", "RECIPE")}
    env.update(TINY, WORK_DIR=str(work), PIVOT=PIVOT, DATA_PATH=str(REPO / "data" / "fusechat_sample.json"))
    result = subprocess.run([str(REPO / "scripts" / "pipeline.sh")], env=env, capture_output=True, text=True,
                            timeout=2400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work, result.stdout


@pytest.mark.slow
def test_every_pair_of_the_recipe_runs_to_a_merged_model(recipe_run):
    work, stdout = recipe_run
    for source in SAME:
        assert f"source {source}: same vocabulary" in stdout
    for source in DIFFERENT:
        assert f"source {source}: different vocabulary" in stdout
    for source in SAME + DIFFERENT:
        assert len(rows(work / "aligned_representations" / f"{PIVOT}_{source}_representation_split0_fnan")) > 0
        assert (work / "checkpoints" / f"{PIVOT}_{source}_pairwise_fusion_ckpt" / "config.json").is_file()
    merged = work / "checkpoints" / f"{PIVOT}_fusechat-sce"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    recipe = (work / "checkpoints" / f"{PIVOT}_fusechat-sce.yml").read_text()
    assert all(f"{PIVOT}_{source}_pairwise_fusion_ckpt" in recipe for source in SAME + DIFFERENT)


@pytest.mark.slow
def test_separators_and_same_vocabulary_checks(recipe_run):
    work, _ = recipe_run
    reps = work / "representations"
    pivot = rows(reps / f"{PIVOT}_representation_split0")
    separators = sum(ids.count(32000) for ids in pivot["input_ids"])
    logs = work / "logs" / "align_same_vocab"
    # Mixtral closes turns with </s> (2): exactly the pivot's <|end_of_turn|> positions differ.
    mixtral = rows(reps / "Mixtral-8x7B-Instruct-v0.1_representation_split0")
    assert [[(a, b) for a, b in zip(p, m) if a != b] for p, m in zip(pivot["input_ids"], mixtral["input_ids"])] == \
        [[(32000, 2)] * p.count(32000) for p in pivot["input_ids"]]
    log = (logs / "Mixtral-8x7B-Instruct-v0.1_split0.log").read_text()
    assert re.search(rf"\b{separators} token positions in \d+ rows differ", log)
    # SOLAR's <|im_end|> is id 32000 too, Starling is the pivot's tokenizer: nothing differs.
    for source in ("Nous-Hermes-2-SOLAR-10.7B", "Starling-LM-7B-alpha"):
        assert "0 positions differ" in (logs / f"{source}_split0.log").read_text()
    # internlm2 closes turns with <|im_end|>, never with its eos </s>.
    internlm2 = rows(reps / "internlm2-chat-20b_representation_split0")
    im_end = fixtures.load_tokenizer("internlm2").convert_tokens_to_ids("<|im_end|>")
    assert sum(ids.count(im_end) for ids in internlm2["input_ids"]) > 0
    assert all(2 not in ids for ids in internlm2["input_ids"])
