"""scripts/eval_fusellm.sh through lm_eval's Python API: a local multiple-choice task (custom YAML, local JSONL)
scored against a log-likelihood oracle computed here with transformers; remote tasks fail clearly offline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from fusechat.errors import InputError
from fusechat.fusellm import evaluation

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    {"question": "The sky on a clear day is", "choices": ["blue", "green", "loud"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["three", "four", "seven"], "answer": 1},
    {"question": "Water freezes at zero degrees", "choices": ["Kelvin", "Fahrenheit", "Celsius"], "answer": 2},
    {"question": "The capital of France is", "choices": ["Paris", "Rome"], "answer": 0},
    {"question": "A week has seven", "choices": ["days", "hours", "years"], "answer": 0},
    {"question": "Cats usually say", "choices": ["woof", "meow"], "answer": 1},
]


@pytest.fixture
def local_task(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "local_qa.yaml").write_text(f"""task: fusellm_local_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return tmp_path


def oracle_accuracy(model_dir) -> float:
    """Accuracy of argmax_c log p(" " + choice | question), without BOS, as harness v0.3.0 scores it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    correct = 0
    for doc in DOCS:
        context = tokenizer(doc["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer(doc["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            continuation = whole[len(context):]
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].float()
            log_probs = torch.log_softmax(logits, -1)
            scores.append(sum(float(log_probs[len(context) - 1 + i, tok]) for i, tok in enumerate(continuation)))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    return 100.0 * correct / len(DOCS)


@pytest.mark.slow
def test_local_task_through_the_script_matches_the_oracle(tmp_path, local_task, pivot_path):
    out = tmp_path / "eval"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DEVICE": "cpu", "BATCH_SIZE": "2"}
    run = subprocess.run([str(ROOT / "scripts" / "eval_fusellm.sh"), str(pivot_path), "--output_dir", str(out),
                          "--benchmarks", "ARC-easy", "--include_path", str(local_task),
                          "--extra", "Local QA=fusellm_local_qa:acc,none:0"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["scores"]["Local QA"]["score"] == pytest.approx(oracle_accuracy(pivot_path))
    # ARC-easy needs the Hub: reported, not fatal.
    assert "could not load its data" in results["scores"]["ARC-easy"]["error"]
    table = (out / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| ARC-easy |"))
    assert row.split("|")[5].strip() == "n/a" and "75.04" in row and "74.58" in row  # FuseLLM-7B, Llama-2-7B
    assert "| Local QA | fusellm_local_qa | 0 | acc,none |" in table
    assert "Not run:" in table and "ARC-easy" in table.split("Not run:")[1]


def test_published_figures_and_the_table():
    published = evaluation.load_published()
    assert published["models"]["Llama-2-7B"]["BoolQ"] == 77.71 and published["models"]["FuseLLM-7B"]["BBH"] == 41.75
    benchmarks = evaluation.select_benchmarks("BBH,LAMBADA", [])
    table = evaluation.format_table(benchmarks, {"BBH": {"score": 12.345}, "LAMBADA": {"error": "offline"}},
                                    published, "mine")
    lines = table.splitlines()
    assert lines[0] == "| benchmark | lm_eval task | shots | metric | mine | FuseLLM-7B | Llama-2-7B |"
    assert lines[2] == "| BBH | bbh_cot_fewshot | 3 | exact_match,get-answer | 12.35 | 41.75 | 39.70 |"
    assert lines[3].startswith("| LAMBADA | lambada_openai | 0 | acc,none | n/a | 73.72 | 73.28 |")
    assert "- LAMBADA: offline" in table


def test_group_score_is_the_plain_mean_of_its_tasks():
    results = {"results": {"g": {"em,x": 0.9}, "g_a": {"em,x": 0.5}, "g_b": {"em,x": 1.0}},
               "group_subtasks": {"g": ["g_a", "g_b"]}}
    assert evaluation.score_of(results, evaluation.Benchmark("G", "g", "em,x", 3)) == pytest.approx(75.0)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(InputError, match="unknown"):
        evaluation.select_benchmarks("ARC-easy,MMLU", [])
    with pytest.raises(InputError, match="--extra"):
        evaluation.Benchmark.parse("no-equals-sign")
    with pytest.raises(InputError, match="no config.json"):
        evaluation.main([str(tmp_path)])
