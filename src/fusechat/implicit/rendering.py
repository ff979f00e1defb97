"""Token ids of a prompt and its replies, rendered with the tokenizer's chat template (the ``suffix``
rendering of docs/design.md 13.6.1 #2, as TRL renders): the prompt with the generation prompt, and the
prompt followed by each reply; a reply's tokens are what follows the prefix all renderings share."""

from __future__ import annotations


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def chat_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def prompt_and_replies(tokenizer, prompt: list[dict], replies: list[list[dict]]) -> tuple[list[int], list[list[int]]]:
    """``(prompt_ids, [reply_ids, ...])``; each reply is a list of assistant messages."""
    prompt_ids = chat_ids(tokenizer, prompt, True)
    full = [chat_ids(tokenizer, prompt + reply, False) for reply in replies]
    cut = min(common_prefix_length(prompt_ids, f) for f in full)
    return prompt_ids[:cut], [f[cut:] for f in full]
