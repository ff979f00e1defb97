"""Bad input to the evaluation scripts: ratings outside MT-Bench's scale, empty or unmatched judgment
files, judge replies without content, and answer generation that cannot start (no empty answer file
may be left behind for gen_judgment to trip over)."""

from __future__ import annotations

import json
import shutil

import pytest

from bad_input_common import assert_one_error, snapshot
from fusechat.eval.cli import gen_judgment, gen_model_answer, show_result
from fusechat.eval.jsonl import read_jsonl
from judge_stub import JUDGE, StubJudge, bench, judge_args, judgments_of, key_of_prompt  # noqa: F401


def call(capsys, entry, argv):
    capsys.readouterr()
    code = entry([str(a) for a in argv])
    return code, capsys.readouterr()


def judgment_file(data):
    return data / "mt_bench" / "model_judgment" / f"{JUDGE}_single.jsonl"


def verdicts(table):
    return lambda prompt: table.get(key_of_prompt(prompt), "Rating: [[5]]")


def test_ratings_outside_one_to_ten_are_missing_scores_counted_and_reported(bench, capsys):
    table = {("alpha", 81, 1): "Rating: [[42]]", ("alpha", 81, 2): "[[0]]", ("beta", 81, 1): "[[10]]"}
    with StubJudge(verdict=verdicts(table)) as stub:
        code, out = call(capsys, gen_judgment, judge_args(bench, stub.url))
    assert code == 0, out.err
    scores = {(r["model"], r["question_id"], r["turn"]): r["score"] for r in judgments_of(bench)}
    assert scores[("alpha", 81, 1)] == -1 and scores[("alpha", 81, 2)] == -1 and scores[("beta", 81, 1)] == 10
    assert "2 verdict(s) without a rating in [1, 10] (score -1)" in out.out
    tables = bench / "tables.json"
    code, out = call(capsys, show_result, ["--data-dir", bench, "--judge-model", JUDGE, "--output-json", tables])
    assert code == 0, out.err
    # alpha: six verdicts of 5 count, the two out of range do not: 5.0, not (42 + 0 + 6 * 5) / 8
    result = json.loads(tables.read_text())
    assert result["average"]["alpha"] == 5.0 and result["left_out"] == {"alpha": 2}
    assert "note: 2 judgment(s) of 'alpha' had no rating in [1, 10]" in out.out


def test_a_score_out_of_range_in_an_existing_file_is_left_out(bench, capsys, tmp_path):
    judged = tmp_path / "j.jsonl"
    judged.write_text("".join(json.dumps({"question_id": q, "model": "m", "score": s, "turn": 1}) + "\n"
                              for q, s in ((81, 4), (111, 6))) + json.dumps({"question_id": 81, "model": "m",
                                                                            "score": 42, "turn": 2}) + "\n")
    code, out = call(capsys, show_result, ["--data-dir", bench, "--input-file", judged, "--output-json",
                                           tmp_path / "t.json"])
    assert code == 0, out.err
    assert json.loads((tmp_path / "t.json").read_text())["first_turn"] == {"m": 5.0}
    assert "1 judgment(s) of 'm' had no rating" in out.out


def test_rejudge_missing_replaces_verdicts_without_a_rating(bench, capsys):
    with StubJudge(verdict=verdicts({("alpha", 81, 1): "I cannot rate this."})) as stub:
        assert call(capsys, gen_judgment, judge_args(bench, stub.url))[0] == 0
    assert sum(r["score"] == -1 for r in judgments_of(bench)) == 1
    with StubJudge(verdict=verdicts({})) as stub:
        code, out = call(capsys, gen_judgment, judge_args(bench, stub.url, "--rejudge-missing"))
        assert code == 0, out.err
        assert len(stub.requests) == 1
    records = judgments_of(bench)
    assert len(records) == 8 and all(r["score"] == 5 for r in records)


def test_a_judge_reply_with_null_content_is_a_verdict_without_a_rating(bench, capsys):
    def null_for_alpha(prompt):
        return None if key_of_prompt(prompt) == ("alpha", 81, 1) else "[[7]]"

    with StubJudge(verdict=null_for_alpha) as stub:
        code, out = call(capsys, gen_judgment, judge_args(bench, stub.url))
    assert code == 0, out.err
    record = next(r for r in judgments_of(bench) if (r["model"], r["question_id"], r["turn"]) == ("alpha", 81, 1))
    assert record["judgment"] == "" and record["score"] == -1
    assert "1 verdict(s) without a rating" in out.out


def test_show_result_on_an_empty_judgment_file_is_an_error(bench, capsys):
    path = judgment_file(bench)
    path.parent.mkdir(parents=True)
    path.write_text("")
    code, out = call(capsys, show_result, ["--data-dir", bench, "--judge-model", JUDGE])
    assert_one_error(code, out.err, f"judgment file {path} holds no judgments")


def test_show_result_with_a_model_list_naming_no_judged_model_is_an_error(bench, capsys):
    with StubJudge(verdict=verdicts({})) as stub:
        assert call(capsys, gen_judgment, judge_args(bench, stub.url))[0] == 0
    before = snapshot(bench)
    code, out = call(capsys, show_result, ["--data-dir", bench, "--judge-model", JUDGE, "--model-list", "gamma",
                                           "--output-json", bench / "tables.json"])
    assert_one_error(code, out.err, "--model-list: no judgments of 'gamma' (judged models: alpha, beta)")
    assert snapshot(bench) == before


# ------------------------------------------------------------------ answer generation that cannot start

@pytest.fixture
def no_template_model(tmp_path, pivot_path):
    folder = shutil.copytree(pivot_path, tmp_path / "no-template")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case, expected", [
    ("missing model", "--model-path: model folder not found: {missing}"),
    ("no chat template", "{no_template}: the tokenizer has no chat template; pass --conv-temp NAME"),
    ("batch size 0", "--batch-size must be at least 1, got 0"),
    ("question range", "--question-begin 3 is after --question-end 1: no question selected"),
])
def test_answer_generation_that_cannot_start_leaves_no_answer_file(bench, capsys, pivot_path, no_template_model,
                                                                   tmp_path, case, expected):
    missing = tmp_path / "no-such-model"
    model = {"missing model": missing, "no chat template": no_template_model}.get(case, pivot_path)
    argv = ["--data-dir", bench, "--model-path", model, "--model-id", "gamma", "--max-new-token", "4"]
    argv += {"batch size 0": ["--batch-size", "0"], "question range": ["--question-begin", "3", "--question-end", "1"]
             }.get(case, [])
    before = snapshot(bench)
    code, out = call(capsys, gen_model_answer, argv)
    assert_one_error(code, out.err, expected.format(missing=missing, no_template=no_template_model))
    assert snapshot(bench) == before
    assert not (bench / "mt_bench" / "model_answer" / "gamma.jsonl").exists()


def test_a_started_answer_file_is_complete_lines_only(bench, capsys, pivot_path):
    code, out = call(capsys, gen_model_answer, ["--data-dir", bench, "--model-path", pivot_path, "--model-id", "tiny",
                                                "--max-new-token", "2", "--conv-temp", "openchat_3.5"])
    assert code == 0, out.err
    answers = read_jsonl(bench / "mt_bench" / "model_answer" / "tiny.jsonl")
    assert [a["question_id"] for a in answers] == [81, 111]
