"""Held-out measures of a target model on verifiable prompts: accuracy of its greedy answers (the math
and code verifiers) and its reply CE on the gold replies (nats per reply token)."""

from __future__ import annotations

import math

import torch

from . import verify
from .rendering import prompt_and_replies


def reply_ce(model, tokenizer, prompts: list[dict], gold: dict[str, str]) -> float:
    """Mean negative log-likelihood per token of the gold replies (the template's end-of-turn included)."""
    total, count = 0.0, 0
    for prompt in prompts:
        prompt_ids, (reply_ids,) = prompt_and_replies(tokenizer, prompt["messages"],
                                                      [[{"role": "assistant", "content": gold[prompt["prompt_id"]]}]])
        ids = torch.tensor([prompt_ids + reply_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        total += torch.nn.functional.cross_entropy(logits, ids[0, len(prompt_ids):], reduction="sum").item()
        count += len(reply_ids)
    return total / max(count, 1)


def is_correct(prompt: dict, answer: str, answer_rule: str, timeout: float) -> bool:
    reference = prompt["reference"]
    if prompt["domain"] == "math":
        return verify.check_math(answer, reference["answer"], answer_rule)
    return verify.check_code(answer, reference["tests"], timeout) == "pass"


def evaluate_model(model_dir: str, prompts: list[dict], gold: dict[str, str], max_new_tokens: int = 128,
                   answer_rule: str = "boxed-or-last-number", timeout: float = 10.0, batch_size: int = 8) -> dict:
    """``{"accuracy", "math_accuracy", "code_accuracy", "reply_ce", "prompts"}`` on ``prompts``."""
    from ..eval.generate import load_generator

    generator = load_generator(model_dir, batch_size=batch_size)
    answers = generator.generate([[(m["role"], m["content"]) for m in p["messages"]] for p in prompts],
                                 temperature=0.0, max_new_tokens=max_new_tokens)
    correct = [is_correct(p, a, answer_rule, timeout) for p, a in zip(prompts, answers)]
    by_domain = {d: [c for p, c in zip(prompts, correct) if p["domain"] == d] for d in ("math", "code")}
    share = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return {"accuracy": share(correct), "math_accuracy": share(by_domain["math"]),
            "code_accuracy": share(by_domain["code"]),
            "reply_ce": reply_ce(generator.model, generator.tokenizer, prompts, gold), "prompts": len(prompts)}
