"""Conversation templates, prompt rendering and label masking (docs/design.md 3).

One mechanism serves every template: a conversation is rendered to text while recording the
character spans of each assistant reply plus its closing separator; the text is tokenized once
with offsets, and a token is a label exactly when its character span overlaps one of those spans.
So the leading BOS and every role marker are masked. The spaces after a role marker (the " " of
"GPT4 Correct Assistant: ") belong to the reply's span, as in the released code, which labels every
token after the colon: merged into the reply's first token or emitted alone (before a digit, a CJK
character, a newline or more spaces), that token is a label.

The turn separator that ``{eos}`` stands for is the tokenizer's eos, except for the model families
where the released train.py overrides it (:func:`turn_separator`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Callable

from .errors import InputError

EOS = "{eos}"  # stands for the tokenizer's own end-of-sequence token
USER, ASSISTANT = "user", "assistant"


@dataclass(frozen=True)
class ChatTemplate:
    """The literal text around each turn. ``{eos}`` is replaced by the tokenizer's eos token."""

    name: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_close: str  # the separator that ends a reply; it is labelled with the reply
    after_assistant: str = ""  # text after the separator, not labelled (e.g. a newline)
    system_template: str | None = None  # contains "{system}"; None: the template has no system slot
    default_system: str = ""
    fastchat_name: str | None = None  # the name of the same template in fschat's registry
    aliases: tuple[str, ...] = field(default_factory=tuple)
    strip_messages: bool = False  # messages are rendered stripped of surrounding whitespace (fschat's LLAMA3)

    def close_token(self, eos_token: str) -> str:
        return self.assistant_close.replace(EOS, eos_token)


_CHATML = dict(
    user_prefix="<|im_start|>user\n",
    user_suffix="<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant_close="<|im_end|>",
    after_assistant="\n",
    system_template="<|im_start|>system\n{system}<|im_end|>\n",
)

TEMPLATES: dict[str, ChatTemplate] = {}


def register_template(template: ChatTemplate) -> ChatTemplate:
    for key in (template.name, *template.aliases):
        TEMPLATES[key] = template
    return template


for _t in [
    ChatTemplate("openchat_3.5", "GPT4 Correct User: ", EOS, "GPT4 Correct Assistant: ", EOS,
                 fastchat_name="openchat_3.5", aliases=("openchat", "starling")),
    # fschat renders "[INST] u [/INST] a</s>"; the space before the reply merges into its first token.
    ChatTemplate("mistral", "[INST] ", "", " [/INST] ", "</s>", fastchat_name="mistral",
                 aliases=("mixtral",)),
    ChatTemplate("llama-3", "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
                 "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>",
                 system_template="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
                 aliases=("llama3",), strip_messages=True),
    ChatTemplate("gemma", "<start_of_turn>user\n", "<end_of_turn>\n", "<start_of_turn>model\n",
                 "<end_of_turn>", after_assistant="\n"),
    ChatTemplate("phi-3", "<|user|>\n", "<|end|>\n", "<|assistant|>\n", "<|end|>",
                 after_assistant="\n", system_template="<|system|>\n{system}<|end|>\n", aliases=("phi3",)),
    # No default system prompt: neither the released template nor docs/design.md 3 has one (fschat's
    # qwen-7b-chat adds "You are a helpful assistant.").
    ChatTemplate("qwen", aliases=("qwen1.5", "qwen2"), **_CHATML),
    ChatTemplate("internlm2", aliases=("internlm2-chat",), **_CHATML),
    ChatTemplate("yi", fastchat_name="Yi-34b-chat", aliases=("yi-chat",), **_CHATML),
    # ChatML as one template for models of any family (SmolLM2 and gemma-3-270m in the real-model demo):
    # the role markers are ChatML's text, and every turn closes with the model's own separator, as
    # openchat_3.5 does. A ChatML model (eos <|im_end|>) renders exactly the ChatML above; Gemma closes
    # with <end_of_turn>, the one token it knows as the end of a turn, so the pivot's <|im_end|> and
    # Gemma's <end_of_turn> stand at the same place, one token each, and align with each other.
    ChatTemplate("chatml", "<|im_start|>user\n", EOS + "\n", "<|im_start|>assistant\n", EOS,
                 after_assistant="\n", system_template="<|im_start|>system\n{system}" + EOS + "\n"),
]:
    register_template(_t)


def get_template(name: str) -> ChatTemplate:
    if name in TEMPLATES:
        return TEMPLATES[name]
    lowered = {k.lower(): v for k, v in TEMPLATES.items()}
    if name.lower() in lowered:
        return lowered[name.lower()]
    families = sorted({t.name for t in TEMPLATES.values()})
    raise InputError(f"unknown conversation template {name!r}; known: {', '.join(families)}")


@dataclass(frozen=True)
class RenderedChat:
    text: str
    target_spans: tuple[tuple[int, int], ...]  # [start, end) character spans that are labels


def render_conversation(template: ChatTemplate, messages: list[tuple[str, str]], eos_token: str,
                        add_generation_prompt: bool = False, system: str | None = None) -> RenderedChat:
    """Render ``(role, text)`` messages (roles ``user``/``assistant``, alternating, user first).

    ``eos_token`` is the turn separator that ``{eos}`` stands for (see :func:`turn_separator`). With
    ``add_generation_prompt`` the text ends right after the assistant role marker (trailing spaces
    dropped, as FastChat does), ready for generation.
    """
    if eos_token is None:
        raise InputError(f"template {template.name!r} needs the tokenizer's eos token, which is not set")
    # The assistant role marker is masked; the spaces after it start the reply's labelled span.
    marker = generation_marker(template, eos_token)
    marker_spaces = template.assistant_prefix.replace(EOS, eos_token)[len(marker):]
    sub = lambda s: s.replace(EOS, eos_token)  # noqa: E731
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0

    def emit(s: str, target: bool = False) -> None:
        nonlocal length
        if target:
            spans.append((length, length + len(s)))
        pieces.append(s)
        length += len(s)

    system = template.default_system if system is None else system
    if system:
        if template.system_template is None:
            raise InputError(f"template {template.name!r} has no system prompt slot")
        emit(sub(template.system_template.replace("{system}", system)))
    for index, (role, content) in enumerate(messages):
        expected = USER if index % 2 == 0 else ASSISTANT
        if role != expected:
            raise InputError(f"message {index} has role {role!r}, expected {expected!r} (roles must alternate)")
        if template.strip_messages:
            content = content.strip()
        if role == USER:
            emit(sub(template.user_prefix) + content + sub(template.user_suffix))
        else:
            emit(marker)
            emit(marker_spaces + content + sub(template.assistant_close), target=True)
            emit(sub(template.after_assistant))
    if add_generation_prompt:
        emit(generation_marker(template, eos_token))
    return RenderedChat("".join(pieces), tuple(spans))


def generation_marker(template: ChatTemplate, eos_token: str) -> str:
    return template.assistant_prefix.replace(EOS, eos_token).rstrip(" ")


def labels_from_offsets(input_ids: list[int], offsets: list[tuple[int, int]],
                        spans: tuple[tuple[int, int], ...]) -> list[int]:
    """-100 everywhere except tokens whose character span overlaps a target span.

    Offsets and spans are both sorted, so one forward sweep suffices. Tokens with an empty span
    (BOS, EOS added by the tokenizer) never overlap.
    """
    labels = [-100] * len(input_ids)
    k = 0
    for i, (start, end) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        if k == len(spans):
            break
        if end > start and start < spans[k][1] and end > spans[k][0]:
            labels[i] = input_ids[i]
    return labels


def encode_rendered(tokenizer, rendered: list[RenderedChat], max_length: int,
                    mask_instruction: bool = True) -> dict[str, list[list[int]]]:
    """Tokenize rendered conversations (one batched call) and build their labels."""
    enc = tokenizer([r.text for r in rendered], return_offsets_mapping=True, truncation=True,
                    max_length=max_length, add_special_tokens=True)
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for r, ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"]):
        labels = labels_from_offsets(ids, offsets, r.target_spans) if mask_instruction else list(ids)
        out["input_ids"].append(list(ids))
        out["labels"].append(labels)
        out["attention_mask"].append([1] * len(ids))
    return out


def encode_conversation(tokenizer, template: ChatTemplate, messages: list[tuple[str, str]],
                        max_length: int, mask_instruction: bool = True,
                        separator: str | None = None) -> dict[str, list[int]]:
    rendered = render_conversation(template, messages, separator or tokenizer.eos_token)
    return {k: v[0] for k, v in encode_rendered(tokenizer, [rendered], max_length, mask_instruction).items()}


def generation_prompt_ids(tokenizer, template: ChatTemplate, messages: list[tuple[str, str]],
                          system: str | None = None, separator: str | None = None) -> list[int]:
    """Token ids of the prompt for the next assistant reply (messages end with a user turn)."""
    text = render_conversation(template, messages, separator or tokenizer.eos_token, add_generation_prompt=True,
                               system=system).text
    return tokenizer(text, add_special_tokens=True)["input_ids"]


@dataclass(frozen=True)
class ModelFamily:
    """A kind of model, recognised from its config and vocabulary (the released code looks for a
    substring of the model's path; a path says nothing reliable, the config does)."""

    name: str
    # (names, vocab) -> bool; names: config.json's model_type and architectures, lowercased.
    matches: Callable[[list[str], Collection[str]], bool]
    separator: str | None = None  # closes turns instead of the tokenizer's eos (the released train.py)
    template: str | None = None  # its conversation template, for a tokenizer without a chat template


FAMILIES: list[ModelFamily] = []  # the first family that matches wins


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family ahead of the built-in ones (so a more specific rule can take over a model)."""
    if family.template is not None:
        get_template(family.template)  # an unknown template fails here, not at first use
    FAMILIES.insert(0, family)
    return family


for _f in reversed([
    ModelFamily("internlm2", lambda names, vocab: any("internlm2" in n for n in names), "<|im_end|>", "internlm2"),
    ModelFamily("gemma", lambda names, vocab: any(n.startswith("gemma") for n in names), "<end_of_turn>", "gemma"),
    ModelFamily("yuan", lambda names, vocab: any(n.startswith("yuan") for n in names), "<sep>"),
    # Llama-3 shares model_type "llama" with Llama-2, so its tokenizer decides.
    ModelFamily("llama-3", lambda names, vocab: "<|eot_id|>" in vocab, "<|eot_id|>", "llama-3"),
]):
    register_family(_f)


def model_family(config: dict, vocab) -> ModelFamily | None:
    """The first family of :data:`FAMILIES` that matches a model's config (``model_type`` and
    ``architectures``, as config.json spells them) and its tokenizer's vocabulary; None for the others."""
    names = [str(config.get("model_type") or "").lower()]
    names += [str(a).lower() for a in config.get("architectures") or []]
    return next((family for family in FAMILIES if family.matches(names, vocab)), None)


def turn_separator(tokenizer, config: dict | None = None, override: str | None = None) -> str:
    """The token that closes a turn in the rendered conversations (``{eos}`` of the templates).

    ``override`` (``--separator``) wins; else the separator of the model's family (:data:`FAMILIES`:
    ``<|im_end|>`` InternLM2, ``<|eot_id|>`` Llama-3, ``<end_of_turn>`` Gemma, ``<sep>`` Yuan, as the
    released train.py); else the tokenizer's eos.
    """
    if override:
        return override
    vocab = tokenizer.get_vocab()
    family = model_family(config or {}, vocab)
    if family is None or family.separator is None:
        if tokenizer.eos_token is None:
            raise InputError("the tokenizer has no eos token to close turns with; pass --separator")
        return tokenizer.eos_token
    if family.separator not in vocab:
        raise InputError(f"a {family.name} model closes turns with {family.separator}, which its tokenizer does "
                         "not have; pass --separator")
    return family.separator


def tokenizer_adds_bos(tokenizer) -> bool:
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def chat_template_jinja(template: ChatTemplate, eos_token: str, add_bos: bool = False) -> str:
    """A Jinja chat template that renders exactly like :func:`render_conversation`.

    ``apply_chat_template`` tokenizes without special tokens, so the template writes the BOS
    itself when the tokenizer would add one.
    """
    lit = lambda s: "{{ " + json.dumps(s.replace(EOS, eos_token), ensure_ascii=False) + " }}"  # noqa: E731
    content = "{{ message['content'] | trim }}" if template.strip_messages else "{{ message['content'] }}"
    parts = ["{{ bos_token }}" if add_bos else ""]
    parts.append(
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set system = " + json.dumps(template.default_system, ensure_ascii=False) + " %}"
        "{% set loop_messages = messages %}{% endif %}"
    )
    if template.system_template is not None:
        before, after = template.system_template.split("{system}")
        parts.append("{% if system %}" + lit(before) + "{{ system }}" + lit(after) + "{% endif %}")
    parts.append(
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}" + lit(template.user_prefix) + content
        + lit(template.user_suffix)
        + "{% elif message['role'] == 'assistant' %}" + lit(template.assistant_prefix)
        + content + lit(template.assistant_close) + lit(template.after_assistant)
        + "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}" + lit(generation_marker(template, eos_token)) + "{% endif %}"
    )
    return "".join(parts)
