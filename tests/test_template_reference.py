"""Prompt building as the released code does it (docs/design.md 3): the turn separator per model family,
the standalone space after "GPT4 Correct Assistant:", and the templates other than openchat_3.5.

Expected ids come from SentencePiece itself on the Mistral model file (BOS, each stretch between
added tokens encoded on its own, the legacy behaviour), expected labels from the released rule:
-100 up to and including the assistant marker's colon, every token after it up to and including the
separator is a label.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from fusechat import fixtures
from fusechat.data import validate_records
from fusechat.errors import InputError
from fusechat.modeling import model_turn_separator
from fusechat.templates import (chat_template_jinja, encode_conversation, get_template, render_conversation,
                                turn_separator)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "fusechat_sample.json"


@pytest.fixture(scope="module")
def sp():
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(fixtures.sentencepiece_model_file(fixtures.MISTRAL_V1)))


def fake_tokenizer(vocab, eos="</s>"):
    return SimpleNamespace(get_vocab=lambda: dict.fromkeys(vocab, 0), eos_token=eos)


# ---- item 2: the separator rule ------------------------------------------------------------------

@pytest.mark.parametrize("config,vocab,expected", [
    ({"model_type": "internlm2", "architectures": ["InternLM2ForCausalLM"]}, ["<|im_end|>"], "<|im_end|>"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, ["<|eot_id|>"], "<|eot_id|>"),
    ({"model_type": "gemma2"}, ["<end_of_turn>"], "<end_of_turn>"),
    ({"model_type": "yuan", "architectures": ["YuanForCausalLM"]}, ["<sep>"], "<sep>"),
    ({"model_type": "llama"}, ["<|im_end|>"], "</s>"),  # Llama-2 / SOLAR-like: the eos
    ({"model_type": "mistral"}, [], "</s>"),
])
def test_separator_by_family(config, vocab, expected):
    assert turn_separator(fake_tokenizer(vocab), config) == expected


def test_separator_override_and_missing_token():
    assert turn_separator(fake_tokenizer([]), {"model_type": "internlm2"}, override="<x>") == "<x>"
    with pytest.raises(InputError, match="<\\|im_end\\|>.*--separator"):
        turn_separator(fake_tokenizer([]), {"model_type": "internlm2"})


def test_internlm2_stand_in_closes_turns_with_im_end(tmp_path, sp):
    model = fixtures.build_tiny_model("internlm2-chat-tiny")
    tok = fixtures.load_tokenizer("internlm2")
    assert model_turn_separator(str(model), tok) == "<|im_end|>"
    assert model_turn_separator(str(model), tok, override="</s>") == "</s>"
    # Decided by the config, not by the path: the pivot under a folder named like InternLM2 keeps its eos.
    disguised = tmp_path / "internlm2-chat-20b"
    disguised.symlink_to(fixtures.build_tiny_model(fixtures.PIVOT))
    openchat = fixtures.load_tokenizer("openchat")
    assert model_turn_separator(str(disguised), openchat) == "<|end_of_turn|>"

    enc = encode_conversation(tok, get_template("openchat_3.5"), [("user", "Hi"), ("assistant", "Hello")], 64,
                              separator="<|im_end|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert enc["input_ids"].count(im_end) == 2 and tok.eos_token_id not in enc["input_ids"]
    assert enc["labels"][-1] == im_end


# ---- item 3: the standalone space after the assistant marker -------------------------------------

def released_openchat(sp, user: str, reply: str, sep_id: int = 32000):
    """ids and labels of one exchange as the released code builds them (legacy SentencePiece)."""
    user_ids = sp.encode(f"GPT4 Correct User: {user}")
    marker_ids = sp.encode("GPT4 Correct Assistant:")
    reply_ids = sp.encode(f"GPT4 Correct Assistant: {reply}")
    assert reply_ids[:len(marker_ids)] == marker_ids
    ids = [1] + user_ids + [sep_id] + reply_ids + [sep_id]
    masked = 1 + len(user_ids) + 1 + len(marker_ids)
    return ids, [-100] * masked + ids[masked:]


@pytest.mark.parametrize("reply", ["42 is the answer.", "你好!", "\nA list:", "  two spaces", "Hello there"])
def test_space_after_assistant_colon_is_labelled(reply, sp):
    tok = fixtures.load_tokenizer("openchat")
    ids, labels = released_openchat(sp, "Question?", reply)
    enc = encode_conversation(tok, get_template("openchat_3.5"), [("user", "Question?"), ("assistant", reply)], 256)
    assert enc["input_ids"] == ids
    assert enc["labels"] == labels


def test_standalone_space_labelled_with_qwen():
    tok = fixtures.load_tokenizer("qwen")
    space = fixtures.qwen_ranks()[b" "]
    enc = encode_conversation(tok, get_template("openchat_3.5"), [("user", "Q"), ("assistant", "42")], 64)
    marker = tok("GPT4 Correct Assistant:", add_special_tokens=False)["input_ids"]
    start = len(enc["input_ids"]) - 2 - 1 - 1  # space, "4", "2", separator
    assert enc["input_ids"][start - len(marker):start] == marker
    assert enc["input_ids"][start] == space
    assert enc["labels"][:start] == [-100] * start
    assert enc["labels"][start:] == enc["input_ids"][start:]


@pytest.mark.parametrize("kind,expected", [("openchat", 7), ("qwen", 5)])
def test_sample_conversations_with_a_standalone_space_reply_start(kind, expected):
    """The issue's count: replies whose first token is a lone space, all labelled now."""
    tok = fixtures.load_tokenizer(kind)
    records, _ = validate_records(json.loads(SAMPLE.read_text(encoding="utf-8")))
    marker = tok("GPT4 Correct Assistant:", add_special_tokens=False)["input_ids"]
    space = tok.convert_tokens_to_ids("▁" if kind == "openchat" else "Ġ")
    found = 0
    for record in records:
        enc = encode_conversation(tok, get_template("openchat_3.5"), record["messages"], 4096)
        ids, n = enc["input_ids"], len(marker)
        starts = [i + n for i in range(len(ids) - n) if ids[i:i + n] == marker and ids[i + n] == space]
        assert all(enc["labels"][i] == space for i in starts)
        found += bool(starts)
    assert found == expected


# ---- item 6: the other templates -----------------------------------------------------------------

def test_qwen_has_no_default_system_prompt():
    text = render_conversation(get_template("qwen"), [("user", "Hi"), ("assistant", "Yo")], "<|im_end|>").text
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"


def test_llama3_strips_messages_and_keeps_one_bos():
    template = get_template("llama-3")
    messages = [("user", "  Hi there \n"), ("assistant", "\n Hello! ")]
    text = render_conversation(template, messages, "<|eot_id|>").text
    assert text == ("<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")
    tok = fixtures.load_tokenizer("openchat")  # adds one BOS, as Llama-3's tokenizer does
    jinja = chat_template_jinja(template, "<|eot_id|>", add_bos=True)
    chat = [{"role": r, "content": t} for r, t in messages]
    assert tok.apply_chat_template(chat, chat_template=jinja, tokenize=False) == "<s>" + text


def test_mistral_multi_turn_labels_replies_only(sp):
    tok = fixtures.load_tokenizer("mistral")
    messages = [("user", "Hi"), ("assistant", "Hello"), ("user", "2+2?"), ("assistant", "4")]
    enc = encode_conversation(tok, get_template("mistral"), messages, 128)
    # "[INST] Hi [/INST] Hello</s>[INST] 2+2? [/INST] 4</s>", each stretch between </s> encoded alone.
    first, second = sp.encode("[INST] Hi [/INST] Hello"), sp.encode("[INST] 2+2? [/INST] 4")
    assert enc["input_ids"] == [1] + first + [2] + second + [2]
    labelled = [(i, t) for i, t in enumerate(enc["labels"]) if t != -100]
    hello = len(sp.encode("[INST] Hi [/INST]"))
    four = len(sp.encode("[INST] 2+2? [/INST]"))
    expected_positions = list(range(1 + hello, 1 + len(first) + 1)) + \
        list(range(2 + len(first) + four, len(enc["input_ids"])))
    assert [i for i, _ in labelled] == expected_positions
    assert tok.convert_ids_to_tokens([t for _, t in labelled]) == ["▁Hello", "</s>", "▁", "4", "</s>"]


def test_empty_assistant_reply_labels_only_its_separator(sp):
    tok = fixtures.load_tokenizer("openchat")
    messages = [("user", "Hi"), ("assistant", ""), ("user", "Again"), ("assistant", "Yes")]
    enc = encode_conversation(tok, get_template("openchat_3.5"), messages, 128)
    rendered = render_conversation(get_template("openchat_3.5"), messages, "<|end_of_turn|>").text
    assert rendered == ("GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant: <|end_of_turn|>"
                        "GPT4 Correct User: Again<|end_of_turn|>GPT4 Correct Assistant: Yes<|end_of_turn|>")
    ids = enc["input_ids"]
    empty_end = ids.index(32000, ids.index(32000) + 1)
    # The empty reply: its separator (and the lone space before it) are labels; the next user turn is not.
    assert ids[empty_end - 1] == sp.piece_to_id("▁") and enc["labels"][empty_end - 1:empty_end + 1] == [
        sp.piece_to_id("▁"), 32000]
    next_user_end = ids.index(32000, empty_end + 1)
    assert enc["labels"][empty_end + 1:next_user_end + 1] == [-100] * (next_user_end - empty_end)
