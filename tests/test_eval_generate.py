"""MT-Bench answer generation and AlpacaEval 2.0 outputs (docs/design.md 10) with the tiny random pivot."""

import json
import shutil

import pytest
import torch

from fusechat.errors import InputError
from fusechat.eval.alpaca_eval import partial_path
from fusechat.eval.cli import gen_alpaca_eval, gen_model_answer
from fusechat.eval.generate import (
    load_generator, resolve_prompt_format, split_for_workers, truncate_at_stop, truncate_at_strings,
)
from fusechat.eval.jsonl import read_jsonl
from fusechat.eval.questions import category_temperature, load_questions
from fusechat.storage import mark_file

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

MAX_NEW = 5
QUESTIONS = [
    {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And 3+3?"]},
    {"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now one about snow."]},
]


@pytest.fixture(scope="module")
def generator(pivot_path):
    return load_generator(str(pivot_path), "openchat_3.5", batch_size=2)


@pytest.fixture(scope="module")
def pivot_model(generator):
    return generator.model


def greedy_oracle(model, tokenizer, messages, max_new_tokens=MAX_NEW):
    """Greedy decoding by hand from docs/design.md's OpenChat prompt: BOS, the text, <|end_of_turn|> = 32000."""
    text = ""
    for role, content in messages:
        text += f"GPT4 Correct {'User' if role == 'user' else 'Assistant'}: {content}<|end_of_turn|>"
    text += "GPT4 Correct Assistant:"
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if next_id == 32000:
                break
            new.append(next_id)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_category_temperatures():
    expected = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "something-else": 0.7}
    assert {c: category_temperature(c) for c in expected} == expected


def test_stop_truncation():
    assert truncate_at_stop([5, 6, 32000, 7, 32000], {32000}) == [5, 6]
    assert truncate_at_stop([5, 6], {32000}) == [5, 6]
    assert truncate_at_stop([2, 5], {2, 32000}) == []
    assert truncate_at_strings("abc<|eot|>def<|eot|>", ("<|eot|>",)) == "abc"
    assert truncate_at_strings("abc", ("<|eot|>",)) == "abc"


def test_split_for_workers():
    questions = list(range(7))
    assert split_for_workers(questions, 1, 1) == [questions]
    assert split_for_workers(questions, 1, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert split_for_workers(questions, 2, 4) == [[0, 2, 4, 6], [1, 3, 5]]
    assert split_for_workers([0], 1, 4) == [[0]]
    for per_model, total in [(2, 3), (0, 1), (2, 1)]:
        with pytest.raises(InputError, match="--num-gpus-total"):
            split_for_workers(questions, per_model, total)


def test_prompt_formats(openchat_tokenizer, qwen_tokenizer):
    conversation = [("user", "Hello")]
    by_template = resolve_prompt_format(openchat_tokenizer, "openchat_3.5")
    by_chat_template = resolve_prompt_format(openchat_tokenizer, None)
    expected = openchat_tokenizer("GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:")["input_ids"]
    assert expected[0] == 1 and expected.count(32000) == 1
    assert by_template.prompt_ids(conversation) == expected
    assert by_chat_template.prompt_ids(conversation) == expected
    assert 32000 in by_template.stop_token_ids and 32000 in by_chat_template.stop_token_ids
    qwen = resolve_prompt_format(qwen_tokenizer, "qwen")
    assert 151645 in qwen.stop_token_ids  # <|im_end|>
    assert qwen_tokenizer.decode(qwen.prompt_ids(conversation)) == (  # no system prompt (docs/design.md 3)
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(InputError, match="unknown conversation template 'nope'"):
        resolve_prompt_format(openchat_tokenizer, "nope")


def test_batched_greedy_matches_oracle(generator, pivot_model, openchat_tokenizer):
    conversations = [[("user", "Hi")], [("user", "Tell me a long story about a dragon and a knight.")],
                     [("user", "Hi"), ("assistant", "Hello there."), ("user", "How are you?")]]
    replies = generator.generate(conversations, temperature=0.0, max_new_tokens=MAX_NEW)
    assert replies == [greedy_oracle(pivot_model, openchat_tokenizer, c) for c in conversations]
    assert all(replies)


def test_mt_bench_answers_format_greedy_and_resume(tmp_path, pivot_path, pivot_model, openchat_tokenizer):
    question_file = tmp_path / "question.jsonl"
    write_jsonl(question_file, QUESTIONS)
    args = ["--model-path", str(pivot_path), "--model-id", "tiny", "--data-dir", str(tmp_path / "data"),
            "--question-file", str(question_file), "--max-new-token", str(MAX_NEW), "--conv-temp", "openchat_3.5"]
    assert gen_model_answer(args) == 0
    answer_file = tmp_path / "data" / "mt_bench" / "model_answer" / "tiny.jsonl"
    answers = read_jsonl(answer_file)
    assert [a["question_id"] for a in answers] == [81, 111]  # sorted by question id
    for a in answers:
        assert set(a) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert a["model_id"] == "tiny" and isinstance(a["answer_id"], str) and isinstance(a["tstamp"], float)
        assert len(a["choices"]) == 1 and a["choices"][0]["index"] == 0
        assert len(a["choices"][0]["turns"]) == 2 and all(isinstance(t, str) for t in a["choices"][0]["turns"])
    # math is answered greedily, turn 2 sees the model's own turn-1 reply
    math = answers[1]["choices"][0]["turns"]
    first = greedy_oracle(pivot_model, openchat_tokenizer, [("user", QUESTIONS[0]["turns"][0])])
    second = greedy_oracle(pivot_model, openchat_tokenizer,
                           [("user", QUESTIONS[0]["turns"][0]), ("assistant", first),
                            ("user", QUESTIONS[0]["turns"][1])])
    assert math == [first, second]

    # resume: a new question and a last line cut short by a crash; finished answers are kept as they are
    write_jsonl(question_file, QUESTIONS + [{"question_id": 90, "category": "stem", "turns": ["Why is the sky blue?"]}])
    kept = answer_file.read_text().splitlines(keepends=True)
    answer_file.write_text(kept[0] + kept[1][:30])
    assert gen_model_answer(args) == 0
    resumed = read_jsonl(answer_file)
    assert [a["question_id"] for a in resumed] == [81, 90, 111]
    assert resumed[0] == answers[0]
    assert resumed[2]["choices"][0]["turns"] == math and resumed[2]["answer_id"] != answers[1]["answer_id"]
    assert len(resumed[1]["choices"][0]["turns"]) == 1
    before = answer_file.read_text()
    assert gen_model_answer(args) == 0
    assert answer_file.read_text() == before  # nothing left to do


def test_bad_question_file(tmp_path, pivot_path, capsys):
    question_file = tmp_path / "question.jsonl"
    write_jsonl(question_file, [QUESTIONS[0], {"question_id": 82, "category": "writing"}])
    args = ["--model-path", str(pivot_path), "--model-id", "tiny", "--question-file", str(question_file),
            "--answer-file", str(tmp_path / "a.jsonl")]
    assert gen_model_answer(args) == 2
    err = capsys.readouterr().err
    assert str(question_file) in err and "question 82" in err and "'turns'" in err
    write_jsonl(question_file, [QUESTIONS[0], QUESTIONS[0]])
    with pytest.raises(InputError, match="question_id 111 appears more than once"):
        load_questions(question_file)
    question_file.write_text(json.dumps(QUESTIONS[0]) + "\n{broken\n" + json.dumps(QUESTIONS[1]) + "\n")
    with pytest.raises(InputError, match="malformed JSON on line 2"):
        load_questions(question_file)


def test_model_without_any_template(tmp_path, pivot_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(pivot_path, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    question_file = tmp_path / "question.jsonl"
    write_jsonl(question_file, QUESTIONS)
    args = ["--model-path", str(bare), "--model-id", "bare", "--question-file", str(question_file),
            "--answer-file", str(tmp_path / "a.jsonl"), "--max-new-token", "2"]
    assert gen_model_answer(args) == 2
    err = capsys.readouterr().err
    assert "no chat template" in err and "--conv-temp" in err and str(bare) in err
    assert gen_model_answer(args + ["--conv-temp", "openchat_3.5"]) == 0


def test_alpaca_eval_outputs_and_resume(tmp_path, pivot_path, pivot_model, openchat_tokenizer):
    instructions = [{"instruction": "Name a color.", "output": "x", "generator": "gpt4", "dataset": "helpful_base"},
                    {"instruction": "Say hi.", "dataset": "oasst"},
                    {"instruction": "Count to three.", "dataset": "vicuna"}]
    instruction_file = tmp_path / "alpaca_eval.json"
    instruction_file.write_text(json.dumps(instructions))
    output_file = tmp_path / "out" / "tiny.json"
    # an earlier run finished the second instruction before it was interrupted
    output_file.parent.mkdir()
    partial_path(output_file).write_text(json.dumps({"index": 1, "instruction": "Say hi.", "output": "DONE"}) + "\n")
    args = ["--model-path", str(pivot_path), "--model-id", "tiny-gen", "--instruction-file", str(instruction_file),
            "--output-file", str(output_file), "--max-new-token", str(MAX_NEW), "--conv-temp", "openchat_3.5"]
    assert gen_alpaca_eval(args) == 0
    outputs = json.loads(output_file.read_text())
    expected = [greedy_oracle(pivot_model, openchat_tokenizer, [("user", r["instruction"])]) for r in instructions]
    assert outputs == [
        {"instruction": "Name a color.", "output": expected[0], "generator": "tiny-gen", "dataset": "helpful_base"},
        {"instruction": "Say hi.", "output": "DONE", "generator": "tiny-gen", "dataset": "oasst"},
        {"instruction": "Count to three.", "output": expected[2], "generator": "tiny-gen", "dataset": "vicuna"},
    ]
    assert not partial_path(output_file).exists()
    # a finished run is not redone, not even with a model folder that would fail to load
    assert gen_alpaca_eval([a if a != str(pivot_path) else str(tmp_path / "gone") for a in args]) == 0
    assert json.loads(output_file.read_text()) == outputs


def test_alpaca_eval_bad_inputs(tmp_path, pivot_path, capsys):
    instruction_file = tmp_path / "alpaca_eval.json"
    instruction_file.write_text(json.dumps([{"instruction": "ok"}, {"prompt": "no instruction"}]))
    args = ["--model-path", str(pivot_path), "--model-id", "tiny", "--instruction-file", str(instruction_file),
            "--output-file", str(tmp_path / "o.json"), "--conv-temp", "openchat_3.5"]
    assert gen_alpaca_eval(args) == 2
    assert "record 1 has no string field 'instruction'" in capsys.readouterr().err
    instruction_file.write_text(json.dumps([{"instruction": "ok"}]))
    partial_path(tmp_path / "o.json").write_text(json.dumps({"index": 0, "instruction": "other", "output": "x"}) + "\n")
    assert gen_alpaca_eval(args) == 2
    assert "does not belong to this instruction file" in capsys.readouterr().err
    partial_path(tmp_path / "o.json").unlink()
    (tmp_path / "o.json").write_text(json.dumps([{"instruction": "different", "output": "x", "generator": "g"}]))
    mark_file(tmp_path / "o.json")  # as an earlier run leaves it
    assert gen_alpaca_eval(args) == 2
    assert "holds outputs for other instructions" in capsys.readouterr().err
