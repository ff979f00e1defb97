"""MT-Bench result tables (docs/design.md 10): hand-computed means, FastChat's show_result, the PNG."""

import argparse
import json
import re

import pytest
from PIL import Image

from fusechat.errors import InputError
from fusechat.eval.cli import show_result
from fusechat.eval.results import PALETTE, load_judgments, score_tables

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["w1", "w2"]},
    {"question_id": 111, "category": "math", "turns": ["m1", "m2"]},
    {"question_id": 121, "category": "coding", "turns": ["c1", "c2"]},
]
# (model, question, turn, score); -1 is a verdict without a rating
SCORES = [
    ("alpha", 81, 1, 8), ("alpha", 111, 1, 6), ("alpha", 121, 1, -1),
    ("alpha", 81, 2, 7), ("alpha", 111, 2, 4), ("alpha", 121, 2, 9),
    ("beta", 81, 1, 10), ("beta", 111, 1, 2.5), ("beta", 121, 1, 3),
    ("beta", 81, 2, -1), ("beta", 111, 2, 5), ("beta", 121, 2, 1),
]
# By hand: alpha turn 1 (8+6)/2, turn 2 (7+4+9)/3, all (8+6+7+4+9)/5; writing (8+7)/2, math (6+4)/2, coding 9/1.
#          beta turn 1 (10+2.5+3)/3, turn 2 (5+1)/2, all (10+2.5+3+5+1)/5; writing 10, math 3.75, coding 2.
EXPECTED = {
    "first_turn": {"alpha": 7.0, "beta": 15.5 / 3},
    "second_turn": {"alpha": 20 / 3, "beta": 3.0},
    "average": {"alpha": 6.8, "beta": 4.3},
    "by_category": {"alpha": {"writing": 7.5, "math": 5.0, "coding": 9.0},
                    "beta": {"writing": 10.0, "math": 3.75, "coding": 2.0}},
    "left_out": {"alpha": 1, "beta": 1},
}


@pytest.fixture
def judgment_file(tmp_path):
    path = tmp_path / "data" / "mt_bench" / "model_judgment" / "judge-x_single.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"question_id": q, "model": m, "judge": ["judge-x", "single-v1"],
                                        "user_prompt": "p", "judgment": "j", "score": s, "turn": t,
                                        "tstamp": 1.0}) + "\n" for m, q, t, s in SCORES))
    (tmp_path / "data" / "mt_bench" / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def test_tables_equal_hand_computed_means(judgment_file):
    categories = {q["question_id"]: q["category"] for q in QUESTIONS}
    tables = score_tables(load_judgments(judgment_file), categories)
    got = tables.as_dict()
    for name in ("first_turn", "second_turn", "average"):
        assert got[name] == pytest.approx(EXPECTED[name], abs=1e-12)
        assert list(got[name]) == sorted(EXPECTED[name], key=lambda m: -EXPECTED[name][m])  # best first
    assert got["by_category"] == EXPECTED["by_category"]  # exact binary fractions
    assert got["left_out"] == EXPECTED["left_out"]
    assert tables.categories == ["writing", "math", "coding"]
    only_beta = score_tables(load_judgments(judgment_file), categories, model_list=["beta"])
    assert only_beta.average == pytest.approx({"beta": 4.3})


def parse_fastchat_sections(text):
    """{section title: {model: score}} from show_result's printed pandas frames."""
    sections, title = {}, None
    for line in text.splitlines():
        header = re.match(r"#+ (.+?) #+", line)
        if header:
            title = header.group(1)
            sections[title] = {}
            continue
        row = re.match(r"^(\w+)\s+(?:\d\s+)?(-?\d+\.\d+)$", line.strip())
        if title and row:
            sections[title][row.group(1)] = float(row.group(2))
    return sections


def test_same_numbers_as_fastchat_show_result(judgment_file, capsys):
    pytest.importorskip("pandas")
    from fastchat.llm_judge.show_result import display_result_single

    display_result_single(argparse.Namespace(input_file=str(judgment_file), bench_name="mt_bench",
                                             judge_model="judge-x", model_list=None))
    fastchat = parse_fastchat_sections(capsys.readouterr().out)
    assert show_result(["--input-file", str(judgment_file), "--question-file",
                        str(judgment_file.parents[1] / "question.jsonl")]) == 0
    ours = parse_fastchat_sections(capsys.readouterr().out)
    for title in ("First turn", "Second turn", "Average"):
        assert set(fastchat[title]) == {"alpha", "beta"}
        assert ours[title] == fastchat[title]
        assert list(ours[title]) == list(fastchat[title])
    assert ours["Average"] == {"alpha": 6.8, "beta": 4.3}


def test_show_result_cli_json_and_plot(judgment_file, tmp_path, capsys):
    data = judgment_file.parents[2]
    plot, table = tmp_path / "plot.png", tmp_path / "tables.json"
    assert show_result(["--data-dir", str(data), "--judge-model", "judge-x", "--plot-file", str(plot),
                        "--output-json", str(table)]) == 0
    out = capsys.readouterr().out
    assert "Per category" in out and "writing" in out and "7.5000" in out and "3.7500" in out
    assert "1 judgment(s) of 'alpha' had no rating" in out
    saved = json.loads(table.read_text())
    assert saved["average"] == pytest.approx(EXPECTED["average"])
    assert saved["by_category"] == EXPECTED["by_category"]
    image = Image.open(plot)
    assert image.format == "PNG"
    colors = {color for _, color in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert PALETTE[0] in colors and PALETTE[1] in colors  # one bar colour per model


def test_bad_judgment_files(judgment_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": 81, "model": "a", "turn": 1, "score": "high"}) + "\n")
    with pytest.raises(InputError, match="line 1 has a non-numeric score"):
        load_judgments(bad)
    bad.write_text(json.dumps({"question_id": 81, "model": "a", "score": 3}) + "\n")
    with pytest.raises(InputError, match="lacks 'turn'"):
        load_judgments(bad)
    with pytest.raises(InputError, match="question 121 .* not in the question file"):
        score_tables(load_judgments(judgment_file), {81: "writing", 111: "math"})
    with pytest.raises(InputError, match="judgment file not found"):
        load_judgments(tmp_path / "missing.jsonl")
