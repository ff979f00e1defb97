"""fusechat-imf-build on hand-made score tables: exact SFT, DPO and WRPO rows (docs/design.md 13.2, 13.6.2)."""

import json

import pytest

from fusechat.errors import run_cli
from fusechat.implicit.cli import build_main
from implicit_fixtures import prompt, read_jsonl, scored_row, write_jsonl


def build(tmp_path, capsys, *flags, out="out"):
    status = run_cli(build_main, ["--out", str(tmp_path / out), *flags], prog="fusechat-imf-build")
    return status, capsys.readouterr().err


def files(tmp_path, prompts, a_rows, b_rows=None):
    flags = ["--prompts", write_jsonl(tmp_path / "prompts.jsonl", prompts)]
    scored = [write_jsonl(tmp_path / "scored/A.jsonl", a_rows)]
    if b_rows:
        scored.append(write_jsonl(tmp_path / "scored/B.jsonl", b_rows))
    return [*flags, "--scored", ",".join(scored)]


IF_PROMPTS = [prompt(p) for p in ("edge_lo", "edge_hi", "below", "above", "tie", "b_wins", "same_chosen",
                                  "same_all", "null", "unsampled")]
IF_A = [scored_row("edge_lo", "A", [0.50, 0.49, 0.495]),
        scored_row("edge_hi", "A", [0.35, 0.25, 0.30]),
        scored_row("below", "A", [0.5099, 0.5, 0.505]),
        scored_row("above", "A", [0.6001, 0.5, 0.55]),
        scored_row("tie", "A", [0.40, 0.35, 0.40]),
        scored_row("b_wins", "A", [0.30, 0.25, 0.28]),
        scored_row("same_chosen", "A", [0.5, 0.45, 0.47]),
        scored_row("same_all", "A", [0.5, 0.45, 0.46]),
        scored_row("null", "A", [0.9, None, 0.2, 0.25], texts=["", "A-null-1", "A-null-2", "A-null-3"])]
IF_B = [scored_row("edge_lo", "B", [0.2, 0.2, 0.2]),
        scored_row("tie", "B", [0.30, 0.35, 0.30]),
        scored_row("b_wins", "B", [0.33, 0.40, 0.33]),
        scored_row("same_chosen", "B", [0.5, 0.42, 0.48]),
        scored_row("same_all", "B", [0.5, 0.45, 0.47])]


def pair(pid, source, chosen, rejected, sc, sr, domain="if"):
    return {"prompt_id": pid, "domain": domain, "prompt": [{"role": "user", "content": f"question {pid}"}],
            "chosen": [{"role": "assistant", "content": f"{source}-{pid}-{chosen}"}],
            "rejected": [{"role": "assistant", "content": f"{source}-{pid}-{rejected}"}],
            "source": source, "score_chosen": sc, "score_rejected": sr}


def sft(pid, source, index, score, domain="if"):
    return {"prompt_id": pid, "domain": domain,
            "messages": [{"role": "user", "content": f"question {pid}"},
                         {"role": "assistant", "content": f"{source}-{pid}-{index}"}],
            "source": source, "rm_score": score}


def test_if_pairs_margin_band_ties_and_source_choice(tmp_path, capsys):
    status, err = build(tmp_path, capsys, *files(tmp_path, IF_PROMPTS, IF_A, IF_B), "--if-sft-share", "0")
    assert status == 0, err
    assert read_jsonl(tmp_path / "out/dpo.jsonl") == [
        pair("edge_lo", "A", 0, 1, 0.50, 0.49),          # margin 0.01: kept (B's margin 0 is not)
        pair("edge_hi", "A", 0, 1, 0.35, 0.25),          # margin 0.1: kept
        pair("tie", "A", 0, 1, 0.40, 0.35),              # first index of the tied best; A's chosen beats B's
        pair("b_wins", "B", 1, 0, 0.40, 0.33),           # B's chosen scores higher; first index of the tied worst
        pair("same_chosen", "B", 0, 1, 0.5, 0.42),       # equal chosen scores: the larger margin
        pair("same_all", "A", 0, 1, 0.5, 0.45),          # equal chosen and margin: source order
        pair("null", "A", 3, 2, 0.25, 0.2),              # the empty response and the null score never chosen
    ]
    assert read_jsonl(tmp_path / "out/sft.jsonl") == []
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["dropped"] == {"no same-source pair in the margin band": ["below", "above"],
                                 "not sampled": ["unsampled"]}
    assert report["counts"]["unselectable_responses"] == 2


def test_if_sft_rows_take_the_best_over_all_sources(tmp_path, capsys):
    status, err = build(tmp_path, capsys, *files(tmp_path, IF_PROMPTS, IF_A, IF_B), "--if-sft-share", "1")
    assert status == 0, err
    assert read_jsonl(tmp_path / "out/sft.jsonl") == [
        sft("edge_lo", "A", 0, 0.50), sft("edge_hi", "A", 0, 0.35), sft("below", "A", 0, 0.5099),
        sft("above", "A", 0, 0.6001), sft("tie", "A", 0, 0.40), sft("b_wins", "B", 1, 0.40),
        sft("same_chosen", "A", 0, 0.5), sft("same_all", "A", 0, 0.5), sft("null", "A", 3, 0.25)]
    assert read_jsonl(tmp_path / "out/dpo.jsonl") == []


MATH_CODE = [prompt("m1", "math", reference={"answer": "4"}), prompt("m2", "math", reference={"answer": "4"}),
             prompt("m3", "math", reference={"answer": "4"}),
             prompt("c1", "code", reference={"tests": "assert f() == 1", "entry_point": "f"}),
             prompt("c2", "code", reference={"tests": "assert f() == 1", "entry_point": "f"}), prompt("z1", "zh")]
T, F = True, False
MC_A = [scored_row("m1", "A", [0.30, 0.28, 0.35], [T, F, T]), scored_row("m2", "A", [0.3, 0.4, 0.5], [F, F, F]),
        scored_row("m3", "A", [0.5, 0.3, 0.2], [T, F, F]), scored_row("c1", "A", [0.1, 0.9, 0.5], [T, F, F]),
        scored_row("c2", "A", [0.9, 0.8, 0.7], [F, F, F]), scored_row("z1", "A", [0.2])]
MC_B = [scored_row("m1", "B", [0.36, 0.1, 0.1], [T, T, T])]


@pytest.mark.parametrize("dpo_share", ["1", "0"])
def test_math_and_code_selection(tmp_path, capsys, dpo_share):
    status, err = build(tmp_path, capsys, *files(tmp_path, MATH_CODE, MC_A, MC_B), "--dpo-share", dpo_share)
    assert status == 0, err
    sft_rows, dpo_rows = read_jsonl(tmp_path / "out/sft.jsonl"), read_jsonl(tmp_path / "out/dpo.jsonl")
    # m3's only pair has margin 0.3, outside the band: SFT either way; code has no band (c1's margin is -0.4).
    always = [sft("m3", "A", 0, 0.5, "math"), sft("z1", "A", 0, 0.2, "zh")]
    if dpo_share == "1":
        assert dpo_rows == [pair("m1", "A", 2, 1, 0.35, 0.28, "math"), pair("c1", "A", 0, 2, 0.1, 0.5, "code")]
        assert sft_rows == always
    else:
        assert dpo_rows == []
        assert sft_rows == [sft("m1", "B", 0, 0.36, "math"), always[0], sft("c1", "A", 0, 0.1, "code"), always[1]]
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["dropped"] == {"all responses fail": ["c2"], "no correct response": ["m2"]}


def test_truncated_responses_counted_and_dropped_on_request(tmp_path, capsys):
    rows = [scored_row("edge_lo", "A", [0.9, 0.49, 0.495], finish=["length", "stop", "stop"])]
    argv = [*files(tmp_path, [prompt("edge_lo")], rows), "--if-sft-share", "1"]
    assert build(tmp_path, capsys, *argv)[0] == 0
    assert read_jsonl(tmp_path / "out/sft.jsonl") == [sft("edge_lo", "A", 0, 0.9)]
    assert build(tmp_path, capsys, *argv, "--drop-truncated", out="out2")[0] == 0
    assert read_jsonl(tmp_path / "out2/sft.jsonl") == [sft("edge_lo", "A", 2, 0.495)]
    report = json.loads((tmp_path / "out2/report.json").read_text())
    assert report["counts"]["truncated_responses"] == 1


def test_if_split_is_reproducible_and_disjoint(tmp_path, capsys):
    prompts = [prompt(f"p{i}") for i in range(25)]
    rows = [scored_row(f"p{i}", "A", [0.5, 0.45, 0.47]) for i in range(25)]

    def split(out, seed):
        assert build(tmp_path, capsys, *files(tmp_path, prompts, rows), "--seed", seed, out=out)[0] == 0
        return ([r["prompt_id"] for r in read_jsonl(tmp_path / out / "sft.jsonl")],
                [r["prompt_id"] for r in read_jsonl(tmp_path / out / "dpo.jsonl")])

    first, again, other = split("a", "42"), split("b", "42"), split("c", "7")
    assert first == again and first != other
    assert len(first[0]) == 10 and len(first[1]) == 15  # 25 x 0.4 to SFT, every DPO prompt has a pair
    assert sorted(first[0] + first[1], key=lambda p: int(p[1:])) == [p["prompt_id"] for p in prompts]


def test_wrpo_split_and_rows(tmp_path, capsys):
    prompts = [prompt(f"w{i}") for i in range(6)]
    source_a = [scored_row(f"w{i}", "A", [0.1 * i, 0.5]) for i in range(6)]
    source_b = [scored_row(f"w{i}", "B", [0.3, 0.55 if i == 2 else 0.2]) for i in range(6)]
    flags = files(tmp_path, prompts, source_a, source_b)
    status, err = build(tmp_path, capsys, "--mode", "wrpo", *flags)
    assert status == 0, err
    sft_ids = [r["prompt_id"] for r in read_jsonl(tmp_path / "out/sft.jsonl")]
    rest = read_jsonl(tmp_path / "out/wrpo_prompts.jsonl")
    assert len(sft_ids) == 2 and len(rest) == 4 and not set(sft_ids) & {p["prompt_id"] for p in rest}
    assert rest == [p for p in prompts if p["prompt_id"] not in sft_ids]
    # The target-SFT model's samples on two thirds: one all identical, one with tied scores.
    target = [scored_row("w2", "target", [0.1, 0.7, 0.3]), scored_row("w4", "target", [0.2, 0.2, 0.2]),
              scored_row("w5", "target", [0.4, 0.1], texts=["same", "same"])]
    status, err = build(tmp_path, capsys, "--mode", "wrpo", *flags, "--target-scored",
                        write_jsonl(tmp_path / "t.jsonl", target), out="rows")
    assert status == 0, err
    assert read_jsonl(tmp_path / "rows/wrpo.jsonl") == [
        {"prompt_id": "w2", "prompt": [{"role": "user", "content": "question w2"}],
         "chosen_source": [{"role": "assistant", "content": "B-w2-1"}],
         "chosen_target": [{"role": "assistant", "content": "target-w2-1"}],
         "rejected": [{"role": "assistant", "content": "target-w2-0"}], "source_of_ws": "B",
         "scores": {"ws": 0.55, "wt": 0.7, "l": 0.1}},
        {"prompt_id": "w4", "prompt": [{"role": "user", "content": "question w4"}],
         "chosen_source": [{"role": "assistant", "content": "A-w4-1"}],
         "chosen_target": [{"role": "assistant", "content": "target-w4-0"}],
         "rejected": [{"role": "assistant", "content": "target-w4-0"}], "source_of_ws": "A",
         "scores": {"ws": 0.5, "wt": 0.2, "l": 0.2}}]
    report = json.loads((tmp_path / "rows/report.json").read_text())
    assert report["dropped"] == {"all target samples identical": ["w5"]}  # prompts not sampled are the SFT part
    assert report["counts"]["tied target scores (y_wt = y_l)"] == 1


@pytest.mark.parametrize("case, message", [
    ("no_id", "record 2: no prompt_id"),
    ("dup_id", "prompt_id 'a' is used twice (records 1 and 2)"),
    ("other_set_id", "record 1 (prompt_id 'zz'): prompt_id not in the prompt file; this file was made from another"),
    ("other_set_text", "does not contain this prompt set's text for that id"),
    ("nan_score", "rm_scores must list one finite number or null"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, message):
    prompts = [prompt("a"), prompt("b")]
    rows = [scored_row("a", "A", [0.5, 0.4])]
    if case == "no_id":
        del prompts[1]["prompt_id"]
    if case == "dup_id":
        prompts[1]["prompt_id"] = "a"
    if case == "other_set_id":
        rows = [scored_row("zz", "A", [0.5, 0.4])]
    if case == "other_set_text":
        rows = [scored_row("a", "A", [0.5, 0.4], text="a different question")]
    if case == "nan_score":
        rows = [scored_row("a", "A", [float("nan"), 0.4])]
    status, err = build(tmp_path, capsys, *files(tmp_path, prompts, rows))
    assert status == 2
    assert err.startswith("fusechat-imf-build: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_wrpo_source_response_of_math_is_the_best_correct_one(tmp_path, capsys):
    prompts = [prompt("m", "math", reference={"answer": "4"}), prompt("n", "math", reference={"answer": "4"})]
    rows = [scored_row("m", "A", [0.9, 0.5, 0.7], [F, T, T]), scored_row("n", "A", [0.9, 0.5], [F, F])]
    flags = files(tmp_path, prompts, rows)
    target = [scored_row("m", "target", [0.1, 0.2], [F, T]), scored_row("n", "target", [0.1, 0.2], [F, T])]
    status, err = build(tmp_path, capsys, "--mode", "wrpo", *flags, "--target-scored",
                        write_jsonl(tmp_path / "t.jsonl", target))
    assert status == 0, err
    (row,) = read_jsonl(tmp_path / "out/wrpo.jsonl")
    assert row["chosen_source"][0]["content"] == "A-m-2" and row["scores"] == {"ws": 0.7, "wt": 0.2, "l": 0.1}
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["dropped"] == {"no scored (for math and code: correct) source response": ["n"]}


def test_convert_released_data_and_sharegpt(tmp_path, capsys):
    from fusechat.implicit.cli import convert_main

    dpo = [{"prompt": "Hi?", "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]}]
    (tmp_path / "dpo.json").write_text(json.dumps(dpo))
    assert run_cli(convert_main, ["--to", "imf", str(tmp_path / "dpo.json"), str(tmp_path / "dpo.jsonl")]) == 0
    assert read_jsonl(tmp_path / "dpo.jsonl") == [
        {"prompt_id": "0", "domain": "if", "prompt": [{"role": "user", "content": "Hi?"}],
         "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "No."}],
         "source": None, "score_chosen": None, "score_rejected": None}]
    sft_rows = [sft("a", "A", 0, 0.5)]
    write_jsonl(tmp_path / "sft.jsonl", sft_rows)
    assert run_cli(convert_main, ["--to", "sharegpt", str(tmp_path / "sft.jsonl"), str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == [
        {"id": "a", "conversations": [{"from": "human", "value": "question a"}, {"from": "gpt", "value": "A-a-0"}]}]
    (tmp_path / "odd.json").write_text(json.dumps([{"instruction": "x", "output": "y"}]))
    status = run_cli(convert_main, ["--to", "imf", str(tmp_path / "odd.json"), str(tmp_path / "o.jsonl")], prog="c")
    err = capsys.readouterr().err
    assert status == 2 and "unknown row shape (fields ['instruction', 'output'])" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_one_source_in_several_score_files(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [prompt("a"), prompt("c", "code", reference={
        "tests": "assert f() == 1", "entry_point": "f"})])
    first = write_jsonl(tmp_path / "if.jsonl", [scored_row("a", "A", [0.5, 0.45])])
    second = write_jsonl(tmp_path / "code.jsonl", [scored_row("c", "A", [0.1, 0.2, 0.3], [T, F, F])])
    status, err = build(tmp_path, capsys, "--prompts", prompts, "--scored", f"{first},{second}", "--if-sft-share", "1")
    assert status == 0, err
    assert [r["prompt_id"] for r in read_jsonl(tmp_path / "out/sft.jsonl")] == ["a"]
    assert [r["prompt_id"] for r in read_jsonl(tmp_path / "out/dpo.jsonl")] == ["c"]  # round(1 x 0.6) = 1
    status, err = build(tmp_path, capsys, "--prompts", prompts, "--scored", f"{first},{first}", out="o2")
    assert status == 2 and "source 'A' already has prompt_id 'a' from another file" in err
