"""MT-Bench judging (docs/design.md 10) against a stub OpenAI-compatible server on 127.0.0.1."""

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fusechat.errors import InputError
from fusechat.eval import judge as judging
from fusechat.eval.cli import gen_judgment
from fusechat.eval.jsonl import read_jsonl
from fusechat.eval.questions import BenchPaths
from judge_stub import (JUDGE, MULTI_MARK, PROMPTS, QUESTIONS, REFERENCES, VERDICTS, StubJudge,  # noqa: F401
                        answer_line, answer_text, bench, judge_args, judgments_of, key_of_prompt, write_jsonl)

SCORES = {("alpha", 81, 1): 8, ("alpha", 81, 2): 7, ("alpha", 111, 1): 3, ("alpha", 111, 2): 6,
          ("beta", 81, 1): 9.5, ("beta", 81, 2): -1, ("beta", 111, 1): 10, ("beta", 111, 2): 4}


def expected_prompt(model, qid, turn):
    q = next(q for q in QUESTIONS if q["question_id"] == qid)
    a = [answer_text(model, qid, t) for t in (1, 2)]
    if qid in REFERENCES:
        r = REFERENCES[qid]
        if turn == 1:
            return f"[Q]{q['turns'][0]}[R]{r[0]}[A]{a[0]}"
        return f"{MULTI_MARK}[R1]{r[0]}[R2]{r[1]}[Q1]{q['turns'][0]}[A1]{a[0]}[Q2]{q['turns'][1]}[A2]{a[1]}"
    if turn == 1:
        return f"[Q]{q['turns'][0]}[A]{a[0]}"
    return f"{MULTI_MARK}[Q1]{q['turns'][0]}[A1]{a[0]}[Q2]{q['turns'][1]}[A2]{a[1]}"


def test_parse_rating():
    assert judging.parse_rating("Rating: [[8]]") == 8
    assert judging.parse_rating("[[7.5]]") == 7.5
    assert judging.parse_rating("score [6] here") == 6
    assert judging.parse_rating("[3] first, but [[9]] is the rating") == 9
    assert judging.parse_rating("[[x]] then [2]") == 2
    assert judging.parse_rating("no rating at all") == -1
    assert judging.parse_rating("Rating: [[five]]") == -1


def test_judging_end_to_end_with_retry_malformed_and_resume(bench, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with StubJudge(transient=1) as stub:
        assert gen_judgment(judge_args(bench, stub.url, "--parallel", "3")) == 0
        first_requests = len(stub.requests)
        # a second run finds every match judged and sends nothing
        assert gen_judgment(judge_args(bench, stub.url, "--parallel", "3")) == 0
        assert len(stub.requests) == first_requests
    assert first_requests == len(SCORES) + 1  # one transient 500, retried
    records = judgments_of(bench)
    assert len(records) == len(SCORES)
    got = {(r["model"], r["question_id"], r["turn"]): r for r in records}
    assert {k: r["score"] for k, r in got.items()} == SCORES
    for (model, qid, turn), r in got.items():
        assert r["user_prompt"] == expected_prompt(model, qid, turn)
        assert r["judgment"] == VERDICTS[(model, qid, turn)]
        prompt = {(111, 1): "single-math-v1", (111, 2): "single-math-v1-multi-turn",
                  (81, 1): "single-v1", (81, 2): "single-v1-multi-turn"}[(qid, turn)]
        assert r["judge"] == [JUDGE, prompt]
        assert set(r) == {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"}
    request = stub.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == JUDGE and body["temperature"] == 0 and body["max_tokens"] == 2048
    system = {p["name"]: p["system_prompt"] for p in PROMPTS}
    model, qid, turn = key_of_prompt(body["messages"][1]["content"])
    name = {(True, 1): "single-math-v1", (True, 2): "single-math-v1-multi-turn", (False, 1): "single-v1",
            (False, 2): "single-v1-multi-turn"}[(qid in REFERENCES, turn)]
    assert body["messages"] == [{"role": "system", "content": system[name]},
                                {"role": "user", "content": expected_prompt(model, qid, turn)}]


@pytest.mark.parametrize("parallel", [1, 3])
def test_interrupted_run_keeps_finished_judgments(bench, parallel, capsys):
    with StubJudge(fail_after=3) as stub:
        assert gen_judgment(judge_args(bench, stub.url, "--parallel", str(parallel))) == 2
        assert "HTTP 400" in capsys.readouterr().err
        finished = stub.successes
    records = judgments_of(bench)
    # every verdict the server delivered is on disk, and nothing else
    assert len(records) == finished == 3
    with StubJudge() as stub:
        assert gen_judgment(judge_args(bench, stub.url, "--parallel", str(parallel))) == 0
        assert len(stub.requests) == len(SCORES) - finished
    keys = [(r["model"], r["question_id"], r["turn"]) for r in judgments_of(bench)]
    assert sorted(keys) == sorted(SCORES)


def test_cut_short_last_line_is_redone(bench):
    with StubJudge() as stub:
        assert gen_judgment(judge_args(bench, stub.url)) == 0
    path = bench / "mt_bench" / "model_judgment" / f"{JUDGE}_single.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:25])  # a write cut short by a crash
    lost = json.loads(lines[-1])
    with StubJudge() as stub:
        assert gen_judgment(judge_args(bench, stub.url)) == 0
        assert len(stub.requests) == 1
        assert key_of_prompt(stub.requests[0]["body"]["messages"][1]["content"]) == (
            lost["model"], lost["question_id"], lost["turn"])
    assert len(judgments_of(bench)) == len(SCORES)


def test_unreachable_endpoint_is_a_clear_error(bench, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert gen_judgment(judge_args(bench, f"http://127.0.0.1:{port}/v1")) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}/v1/chat/completions" in err and "after 4 attempts" in err
    assert not (bench / "mt_bench" / "model_judgment" / f"{JUDGE}_single.jsonl").exists() or not judgments_of(bench)


def test_environment_supplies_base_url(bench, monkeypatch):
    with StubJudge() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        assert gen_judgment(["--data-dir", str(bench), "--judge-model", JUDGE, "--model-list", "beta",
                             "--first-n", "1"]) == 0
        assert stub.requests and all(r["auth"] is None for r in stub.requests)
    assert sorted((r["model"], r["question_id"], r["turn"]) for r in judgments_of(bench)) == [
        ("beta", 81, 1), ("beta", 81, 2)]


def test_unknown_judge_prompt(bench, capsys):
    assert gen_judgment(judge_args(bench, "http://127.0.0.1:9/v1", "--judge-prompt", "single-v9")) == 2
    err = capsys.readouterr().err
    assert "'single-v9'" in err and "single-v1" in err
    prompts = {p["name"]: p for p in PROMPTS}
    with pytest.raises(InputError, match="not a single-answer grading prompt"):
        judging.make_single_judges(JUDGE, prompts | {"pair-v2-multi-turn": prompts["pair-v2"]}, "pair-v2")


def test_missing_inputs_are_named(bench, capsys):
    (bench / "mt_bench" / "reference_answer" / f"{JUDGE}.jsonl").unlink()
    assert gen_judgment(judge_args(bench, "http://127.0.0.1:9/v1")) == 2
    assert f"reference_answer/{JUDGE}.jsonl" in capsys.readouterr().err
    write_jsonl(bench / "mt_bench" / "reference_answer" / f"{JUDGE}.jsonl",
                [answer_line(JUDGE, qid, turns) for qid, turns in REFERENCES.items()])
    write_jsonl(bench / "mt_bench" / "model_answer" / "beta.jsonl", [answer_line("beta", 81, ["a", "b"])])
    assert gen_judgment(judge_args(bench, "http://127.0.0.1:9/v1")) == 2
    assert "model 'beta' has no answer to question 111" in capsys.readouterr().err
    assert gen_judgment(judge_args(bench, "http://127.0.0.1:9/v1", "--model-list", "gamma")) == 2
    assert "model_answer/gamma.jsonl" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_mt_bench_script(bench, pivot_path):
    """scripts/eval_mt_bench.sh MODEL_DIR MODEL_ID: generates; with an endpoint also judges and prints the table."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(DATA_DIR=str(bench), JUDGE_MODEL=JUDGE, MAX_NEW_TOKEN="3", PARALLEL="2")
    command = ["bash", str(root / "scripts" / "eval_mt_bench.sh"), str(pivot_path), "tiny"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "judging skipped" in run.stderr
    paths = BenchPaths(bench, "mt_bench")
    assert sorted(a["question_id"] for a in read_jsonl(paths.answer_file("tiny"))) == [81, 111]
    with StubJudge(verdict=lambda prompt: "Rating: [[6]]") as stub:
        env["OPENAI_BASE_URL"] = stub.url
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert len(stub.requests) == 4  # two questions, two turns, one model
    assert sorted((r["model"], r["question_id"], r["turn"]) for r in read_jsonl(paths.judgment_file(JUDGE))) == [
        ("tiny", 81, 1), ("tiny", 81, 2), ("tiny", 111, 1), ("tiny", 111, 2)]
    assert re.search(r"########## Average ##########\nmodel +score\ntiny +6\.000000", run.stdout), run.stdout
    assert (bench / "mt_bench" / "tiny.png").is_file()
