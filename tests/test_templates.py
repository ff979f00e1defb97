"""Conversation rendering and label masking (docs/design.md 3), with the real tokenizers."""

import pytest
from fastchat.conversation import get_conv_template

from fusechat.errors import InputError
from fusechat.templates import (
    TEMPLATES, encode_conversation, generation_prompt_ids, get_template, render_conversation,
)

FAMILIES = sorted({t.name for t in TEMPLATES.values()})

CONVERSATION = [
    ("user", "Hello, who are you?"),
    ("assistant", "I am a helpful assistant. 我会说中文!"),
    ("user", "Write `print(1+1)` in Python.\n\n  Thanks"),
    ("assistant", "```python\nprint(1 + 1)\n```\n  Done 🙂"),
]


def labelled_runs(labels):
    runs, current = [], []
    for label in labels:
        if label == -100:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


def test_nine_families_registered():
    assert FAMILIES == sorted(["openchat_3.5", "mistral", "llama-3", "gemma", "phi-3", "qwen", "internlm2", "yi",
                               "chatml"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tok_name", ["openchat", "qwen"])
def test_labels_decode_to_replies_plus_separator(family, tok_name, tokenizers):
    tok = tokenizers[tok_name]
    template = get_template(family)
    enc = encode_conversation(tok, template, CONVERSATION, max_length=4096)
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(enc["attention_mask"])
    runs = labelled_runs(enc["labels"])
    replies = [text for role, text in CONVERSATION if role == "assistant"]
    assert len(runs) == len(replies)
    close = template.close_token(tok.eos_token)
    close_is_one_token = len(tok(close, add_special_tokens=False)["input_ids"]) == 1
    for run, reply in zip(runs, replies):
        decoded = tok.decode(run)
        # The space after a role marker may merge into the reply's first token.
        decoded = decoded[1:] if decoded.startswith(" ") and not reply.startswith(" ") else decoded
        if close_is_one_token:
            assert decoded == reply + close
        else:
            # A separator this tokenizer does not know is plain text: its last piece may merge with
            # the text after it (e.g. ">" + "<"), which then rides along, and nothing more.
            assert decoded.startswith(reply + close) and len(decoded) - len(reply + close) <= 2, decoded
    if tok.bos_token_id is not None and enc["input_ids"][0] == tok.bos_token_id:
        assert enc["labels"][0] == -100


def test_openchat_hello_prompt_ids(openchat_tokenizer):
    ids = generation_prompt_ids(openchat_tokenizer, get_template("openchat_3.5"), [("user", "Hello")])
    # BOS, the SentencePiece pieces of the text, <|end_of_turn|> as the single added token 32000.
    assert ids == [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000,
                   420, 6316, 28781, 3198, 3123, 21631, 28747]
    assert openchat_tokenizer.convert_ids_to_tokens(ids[1:9]) == ["▁G", "PT", "4", "▁Cor", "rect", "▁User", ":", "▁Hello"]


def test_openchat_assistant_marker_masked(openchat_tokenizer):
    enc = encode_conversation(openchat_tokenizer, get_template("openchat_3.5"),
                              [("user", "Hello"), ("assistant", "Hi")], max_length=64)
    prompt = generation_prompt_ids(openchat_tokenizer, get_template("openchat_3.5"), [("user", "Hello")])
    assert enc["input_ids"][: len(prompt)] == prompt
    assert enc["labels"][: len(prompt)] == [-100] * len(prompt)
    assert enc["labels"][len(prompt):] == enc["input_ids"][len(prompt):]
    assert openchat_tokenizer.decode(enc["input_ids"][len(prompt):]) == "Hi<|end_of_turn|>"


def test_truncation(openchat_tokenizer):
    enc = encode_conversation(openchat_tokenizer, get_template("openchat_3.5"), CONVERSATION, max_length=20)
    full = encode_conversation(openchat_tokenizer, get_template("openchat_3.5"), CONVERSATION, max_length=4096)
    assert enc["input_ids"] == full["input_ids"][:20]
    assert enc["labels"] == full["labels"][:20]


def test_without_mask_instruction_every_token_is_a_label(qwen_tokenizer):
    enc = encode_conversation(qwen_tokenizer, get_template("openchat_3.5"), CONVERSATION, 4096,
                              mask_instruction=False)
    assert enc["labels"] == enc["input_ids"]


def test_non_alternating_rejected():
    with pytest.raises(InputError, match="alternate"):
        render_conversation(get_template("qwen"), [("user", "a"), ("user", "b")], "<|im_end|>")


def test_unknown_template():
    with pytest.raises(InputError, match="unknown conversation template 'vicuna_v9'"):
        get_template("vicuna_v9")


@pytest.mark.parametrize("family", [name for name in FAMILIES if get_template(name).fastchat_name])
def test_generation_prompt_matches_fastchat(family):
    template = get_template(family)
    eos = "</s>"
    conv = get_conv_template(template.fastchat_name)
    if template.name == "openchat_3.5":
        conv.sep = eos
    for role, text in CONVERSATION[:3]:
        conv.append_message(conv.roles[0 if role == "user" else 1], text)
    conv.append_message(conv.roles[1], None)
    ours = render_conversation(template, CONVERSATION[:3], eos, add_generation_prompt=True).text
    assert ours == conv.get_prompt()


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_equals_hand_built_prompt(family, openchat_tokenizer):
    from fusechat.templates import chat_template_jinja, tokenizer_adds_bos

    template = get_template(family)
    jinja = chat_template_jinja(template, openchat_tokenizer.eos_token, tokenizer_adds_bos(openchat_tokenizer))
    messages = [{"role": r, "content": t} for r, t in CONVERSATION[:3]]
    via_jinja = openchat_tokenizer.apply_chat_template(messages, chat_template=jinja, add_generation_prompt=True)
    if not isinstance(via_jinja, list):
        via_jinja = via_jinja["input_ids"]
    assert via_jinja == generation_prompt_ids(openchat_tokenizer, template, CONVERSATION[:3])
