"""fusechat-imf-decode, -post-process and -annotate, and the verifiers (docs/design.md 13.2, 13.7)."""

import json
import time

import pytest

from fusechat.errors import run_cli
from fusechat.fixtures import PIVOT, SAME_VOCAB_SOURCE, build_tiny_model, build_tokenizer
from fusechat.implicit import cli, verify
from implicit_fixtures import prompt, read_jsonl, scored_row, write_jsonl


def run(main, capsys, *argv):
    status = run_cli(main, list(argv), prog="prog")
    return status, capsys.readouterr().err


PROMPTS = [prompt("p0", text="Say hello."), prompt("p1", "math", "What is 2 + 2?", {"answer": "4"}),
           prompt("p2", "code", "Write f() returning 1.", {"tests": "assert f() == 1", "entry_point": "f"})]


def sample_row(pid, texts, source="A"):
    """An unscored samples row for one of PROMPTS."""
    text = next(p for p in PROMPTS if p["prompt_id"] == pid)["messages"][0]["content"]
    row = scored_row(pid, source, [0] * len(texts), texts=texts, text=text)
    return {k: v for k, v in row.items() if k not in ("rm_scores", "verdicts")}


@pytest.mark.slow
def test_decode_rows_seeds_and_finish_reasons(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    for name in (PIVOT, SAME_VOCAB_SOURCE):
        out = tmp_path / f"samples/{name}.jsonl"
        status, err = run(cli.decode_main, capsys, "--model", str(build_tiny_model(name)), "--prompts", prompts,
                          "--out", str(out), "--seeds", "13,21,42", "--max-tokens", "8", "--source", name)
        assert status == 0, err
        rows = read_jsonl(out)
        assert [r["prompt_id"] for r in rows] == ["p0", "p1", "p2"]
        for row, p in zip(rows, PROMPTS):
            assert row["source"] == name and row["seeds"] == [13, 21, 42] and len(row["responses"]) == 3
            assert row["finish_reasons"] == ["length"] * 3  # random weights never close a turn within 8 tokens
            assert row["sampling"] == {"temperature": 0.8, "top_p": 0.95, "top_k": None, "repetition_penalty": None,
                                       "max_tokens": 8, "backend": "hf"}
            assert row["template"].endswith("GPT4 Correct Assistant:") and p["messages"][0]["content"] in row["template"]
            assert len(set(row["responses"])) == 3
    again = tmp_path / "again.jsonl"
    status, _ = run(cli.decode_main, capsys, "--model", str(build_tiny_model(PIVOT)), "--prompts", prompts,
                    "--out", str(again), "--seeds", "42,13", "--max-tokens", "8", "--source", PIVOT)
    first = read_jsonl(tmp_path / f"samples/{PIVOT}.jsonl")
    assert status == 0 and [r["responses"] for r in read_jsonl(again)] == [[r["responses"][2], r["responses"][0]]
                                                                         for r in first]  # same seed, same text


def test_post_process_merges_seed_files_and_drops_identical(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    one = [sample_row(p, [t]) for p, t in (("p0", "x"), ("p1", "same"), ("p2", "y"))]
    two = [dict(r, seeds=[99], responses=[{"p0": "z", "p1": "same", "p2": "w"}[r["prompt_id"]]]) for r in one]
    out = tmp_path / "merged.jsonl"
    status, err = run(cli.post_process_main, capsys, "--prompts", prompts, "--samples",
                      f"{write_jsonl(tmp_path / 's13.jsonl', one)},{write_jsonl(tmp_path / 's99.jsonl', two)}",
                      "--out", str(out))
    assert status == 0, err
    rows = read_jsonl(out)
    assert [(r["prompt_id"], r["responses"], r["seeds"]) for r in rows] == [("p0", ["x", "z"], [13, 99]),
                                                                           ("p2", ["y", "w"], [13, 99])]
    assert json.loads((tmp_path / "merged.jsonl.dropped.json").read_text()) == {"all responses identical": ["p1"]}
    status, err = run(cli.post_process_main, capsys, "--prompts", prompts, "--samples",
                      f"{tmp_path / 's13.jsonl'},{tmp_path / 's13.jsonl'}", "--out", str(tmp_path / "x.jsonl"))
    assert status == 2 and "prompt_id 'p0' has seed 13 twice" in err and not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("found, gold, equal", [
    ("The answer is \\boxed{4}.", "4", True), ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("\\boxed{\\dfrac{3}{4}}", "3/4", True), ("\\boxed{1,000}", "1000", True), ("\\boxed{4.0}", "4", True),
    ("\\boxed{5}", "4", False), ("so 4", "4", False), ("\\boxed{x^{2}}", "x^{2}", True),
    ("\\boxed{3} then \\boxed{4}", "4", True), ("\\boxed{\\text{(B)}}", "(B)", True), ("\\boxed{-2}", "2", False),
])
def test_math_verifier(found, gold, equal):
    assert verify.check_math(found, gold) is equal


def test_math_last_number_rule():
    assert verify.check_math("3 apples and 4 pears make 7.", "7", "boxed-or-last-number")
    assert not verify.check_math("7 or maybe 8", "7", "boxed-or-last-number")


@pytest.mark.parametrize("response, outcome", [
    ("```python\ndef f():\n    return 1\n```", "pass"),
    ("Here:\n```\ndef f():\n    return 2\n```", "tests failed"),
    ("```python\ndef f(:\n```", "syntax error"),
    ("def f():\n    return 1", "no code block"),
    ("```python\nimport socket\ndef f():\n    socket.create_connection(('127.0.0.1', 9))\n    return 1\n```",
     "tests failed"),
])
def test_code_verifier(response, outcome):
    assert verify.check_code(response, "assert f() == 1", timeout=20) == outcome


def test_code_test_that_hangs_is_stopped_at_the_timeout():
    started = time.monotonic()
    assert verify.check_code("```python\ndef f():\n    while True:\n        pass\n```", "f()", timeout=1) == "timeout"
    assert time.monotonic() - started < 10


def test_annotate_with_verdicts_and_a_table(tmp_path, capsys, caplog):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    responses = {"p0": ["hi", "hello"], "p1": ["\\boxed{4}", "\\boxed{5}"],
                 "p2": ["```python\ndef f():\n    return 1\n```", "```python\ndef f():\n    while True: pass\n```"]}
    samples = [sample_row(p, t) for p, t in responses.items()]
    samples_file = write_jsonl(tmp_path / "samples.jsonl", samples)
    status, err = run(cli.annotate_main, capsys, "--prompts", prompts, "--samples", samples_file,
                      "--out", str(tmp_path / "v.jsonl"), "--reward-model", "verdict", "--code-timeout", "2")
    assert status == 0, err
    rows = read_jsonl(tmp_path / "v.jsonl")
    assert [r["verdicts"] for r in rows] == [[None, None], [True, False], [True, False]]
    assert [r["rm_scores"] for r in rows] == [[None, None], [1.0, 0.0], [1.0, 0.0]]
    assert "prompt_id p2, response 1: the tests ran past 2 s" in caplog.text
    report = json.loads((tmp_path / "v.jsonl.report.json").read_text())
    assert report["counts"]["code timeout"] == 1 and report["math_checker"] == verify.MATH_CHECKER
    table = tmp_path / "table.json"
    table.write_text(json.dumps({t: 0.1 * i for i, t in enumerate(sum(responses.values(), []))}))
    status, err = run(cli.annotate_main, capsys, "--prompts", prompts, "--samples", samples_file,
                      "--out", str(tmp_path / "t.jsonl"), "--reward-model", f"table:{table}", "--code-timeout", "2")
    assert status == 0, err
    scores = [s for r in read_jsonl(tmp_path / "t.jsonl") for s in r["rm_scores"]]
    assert scores == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5])


def tiny_reward_model(folder, nan=False):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(build_tokenizer("openchat")))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id or 0)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    if nan:
        with torch.no_grad():
            model.score.weight.fill_(float("nan"))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.slow
def test_annotate_with_a_sequence_classification_reward_model(tmp_path, capsys, caplog):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:1])
    samples = [sample_row("p0", ["hi", "hello there", ""])]
    samples_file = write_jsonl(tmp_path / "samples.jsonl", samples)
    rm = tiny_reward_model(tmp_path / "rm")
    status, err = run(cli.annotate_main, capsys, "--prompts", prompts, "--samples", samples_file,
                      "--out", str(tmp_path / "s.jsonl"), "--reward-model", rm)
    assert status == 0, err
    scores = read_jsonl(tmp_path / "s.jsonl")[0]["rm_scores"]
    assert all(isinstance(s, float) for s in scores[:2]) and scores[0] != scores[1] and scores[2] is None
    # The same (prompt, response) scored alone gives the same number as in the padded batch.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(rm), AutoModelForSequenceClassification.from_pretrained(rm).eval()
    text = tok.apply_chat_template([PROMPTS[0]["messages"][0], {"role": "assistant", "content": "hi"}], tokenize=False)
    with torch.no_grad():
        alone = model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item()
    assert scores[0] == pytest.approx(alone, abs=1e-5)

    status, err = run(cli.annotate_main, capsys, "--prompts", prompts, "--samples", samples_file,
                      "--out", str(tmp_path / "n.jsonl"), "--reward-model", tiny_reward_model(tmp_path / "nan", True))
    assert status == 2 and "gave no usable score for any of the 3 responses" in err
    assert "prompt_id p0, response 0: the reward model returned nan" in caplog.text
    assert not (tmp_path / "n.jsonl").exists() and not (tmp_path / "n.jsonl.report.json").exists()


@pytest.mark.parametrize("case, message", [
    ("no_id", "prompt file"), ("dup", "prompt_id 'p0' is used twice"), ("other_set", "made from another prompt set")])
def test_bad_input_to_decode_and_annotate(tmp_path, capsys, case, message):
    prompts = [dict(p) for p in PROMPTS]
    samples = [sample_row("p0", ["hi"])]
    if case == "no_id":
        del prompts[1]["prompt_id"]
        message = "record 2: no prompt_id"
    if case == "dup":
        prompts[1]["prompt_id"] = "p0"
    if case == "other_set":
        samples[0]["template"] = "<user> Something else. <assistant>"
    prompt_file = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    samples_file = write_jsonl(tmp_path / "samples.jsonl", samples)
    status, err = run(cli.annotate_main, capsys, "--prompts", prompt_file, "--samples", samples_file,
                      "--out", str(tmp_path / "s.jsonl"), "--reward-model", "verdict")
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    if case != "other_set":  # decode reads the prompts before loading any model
        status, err = run(cli.decode_main, capsys, "--model", "no/such/model/folder", "--prompts", prompt_file,
                          "--out", str(tmp_path / "d.jsonl"))
        assert status == 2 and message in err
    assert not list(tmp_path.glob("s.jsonl*")) and not (tmp_path / "d.jsonl").exists()


def test_an_output_naming_an_input_is_refused_and_the_input_kept(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    samples = write_jsonl(tmp_path / "samples.jsonl", [sample_row("p0", ["hi"])])
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    calls = [(cli.decode_main, ["--model", "no/such/model/folder", "--prompts", prompts, "--out", prompts]),
             (cli.post_process_main, ["--prompts", prompts, "--samples", samples, "--out", samples]),
             (cli.annotate_main, ["--prompts", prompts, "--samples", samples, "--out", samples,
                                  "--reward-model", "verdict"]),
             (cli.convert_main, ["--to", "sharegpt", samples, samples])]
    for main, argv in calls:
        status, err = run(main, capsys, *argv)
        first = err.strip().splitlines()[0]
        assert status == 2 and "is also an input" in first, (main.__name__, err)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
