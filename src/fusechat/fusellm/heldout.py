"""Held-out perplexity of a FuseLLM student: a true perplexity on documents training never saw.

Each document is encoded as FuseLLM trains on it (text + the EOS string, no special tokens added so
no BOS, truncated to ``max_length``, docs/design.md 12.2); the model predicts every token after the first.
perplexity = exp(sum of next-token NLL / number of predicted tokens), pooled over the documents. This
is not the ``perplexity`` of train.py's metrics.json, which is exp of the combined (LM + distill)
eval loss (12.8 #29).
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..representation import length_sorted_batches, padded_tensor
from .common import encode_documents


@torch.no_grad()
def document_nll(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 4) -> tuple[float, int]:
    """(sum of next-token NLL in nats, number of predicted tokens) over ``texts``."""
    rows = encode_documents(tokenizer, texts, max_length)
    total, count = 0.0, 0
    for batch in length_sorted_batches([len(r) for r in rows], batch_size):
        ids = padded_tensor([rows[i] for i in batch], tokenizer.pad_token_id)
        mask = padded_tensor([[1] * len(rows[i]) for i in batch], 0)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        predicted = mask[:, 1:].bool()
        total += float(nll[predicted].double().sum())
        count += int(predicted.sum())
    return total, count


def heldout_perplexity(model_path: str, texts: list[str], max_length: int, batch_size: int = 4) -> dict:
    """{"perplexity", "nll" (mean nats per token), "tokens"} of the model folder ``model_path`` on ``texts``."""
    from ..modeling import load_causal_lm
    from .common import load_stage_tokenizer

    if not texts:
        raise InputError("held-out perplexity: no documents")
    tokenizer = load_stage_tokenizer(model_path, max_length)
    model = load_causal_lm(model_path).eval()
    total, count = document_nll(model, tokenizer, texts, max_length, batch_size)
    if count == 0:
        raise InputError("held-out perplexity: every document is a single token")
    return {"perplexity": math.exp(total / count), "nll": total / count, "tokens": count}
