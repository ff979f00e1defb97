"""scripts/implicit_pipeline.sh on tiny offline models: both modes, every stage as its own process."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from fusechat.fixtures import PIVOT, SAME_VOCAB_SOURCE, build_tiny_model
from implicit_fixtures import prompt, write_jsonl
from test_implicit_stages import tiny_reward_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "implicit_pipeline.sh"


def run_pipeline(env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], env={**os.environ, **{k: str(v) for k, v in env.items()}},
                          cwd=cwd, capture_output=True, text=True, timeout=1500)


def test_pipeline_refuses_missing_settings(tmp_path):
    done = run_pipeline({"TARGET": tmp_path / "none", "SOURCES": "x", "PROMPTS": "p"}, tmp_path)
    assert done.returncode == 1 and "error: TARGET must be a model folder" in done.stderr


@pytest.mark.slow
def test_pipeline_both_modes(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [prompt(f"p{i}", text=f"Tell me about {i}.") for i in range(6)])
    env = {"TARGET": build_tiny_model(PIVOT), "SOURCES": f"{build_tiny_model(PIVOT)} {build_tiny_model(SAME_VOCAB_SOURCE)}",
           "PROMPTS": prompts, "WORK": tmp_path / "work", "REWARD_MODEL": tiny_reward_model(tmp_path / "rm"),
           "SEEDS": "1,2,3", "MAX_TOKENS": 6, "MARGIN": "-100,100", "MAX_STEPS": 1, "MAX_LENGTH": 64,
           "MAX_PROMPT_LENGTH": 48}
    done = run_pipeline({**env, "MODE": "fusechat3"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "work"
    target = Path(env["TARGET"]).name
    report = json.loads((work / "build/report.json").read_text())
    assert report["counts"]["sft_rows.if"] + report["counts"]["dpo_rows.if"] == 6  # every prompt has a pair
    assert (work / f"fusechat3/{target}-SFT-DPO/model.safetensors").is_file()
    done = run_pipeline({**env, "MODE": "wrpo"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skip" in done.stdout  # the sources' samples and scores are reused
    metrics = json.loads((work / f"wrpo/{target}-SFT-WRPO/metrics.json").read_text())
    assert metrics["stage"] == "wrpo" and metrics["log_history"][0]["loss"] == pytest.approx(0.6931471806, abs=1e-6)
