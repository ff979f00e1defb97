"""Small aligned and representation sets for the training tests, built from the real OpenChat tokenizer.

Rows are real conversations encoded with ``templates.encode_conversation``; the top-k lists are
seeded random draws: the pivot's list has k distinct ids at every position, the source's list is
a random mix of full lists, shorter lists, EMPTY entries and ONE-HOT entries (the next token,
logit 1.0), as the alignment stage writes them.
"""

from __future__ import annotations

import numpy as np

from fusechat import schema
from fusechat.templates import encode_conversation, get_template

TOPICS = ["the weather", "prime numbers", "a short poem", "Python lists", "the moon", "tea", "a sorting trick",
          "French verbs", "sleep", "the colour blue", "chess openings", "bread"]


def conversations(count: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """``count`` (id, messages) pairs of varied length, one or two exchanges each."""
    out = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        messages = [("user", f"Tell me about {topic}."),
                    ("assistant", f"Here is something about {topic}: " + "it is nice. " * (1 + i % 4))]
        if i % 3 == 0:
            messages += [("user", "And more?"), ("assistant", "Yes, " + "more " * (2 + i % 5))]
        out.append((f"conv-{i}", messages))
    return out


def token_rows(tokenizer, count: int) -> list[dict]:
    template = get_template("openchat_3.5")
    return [{schema.ID: cid, **encode_conversation(tokenizer, template, messages, max_length=512)}
            for cid, messages in conversations(count)]


def random_topk(length: int, vocab: int, k: int, rng) -> tuple[list[list[float]], list[list[int]]]:
    ids = [rng.choice(vocab, size=k, replace=False).tolist() for _ in range(length)]
    logits = rng.normal(0.0, 2.0, size=(length, k)).astype(np.float16).astype(float).tolist()
    return logits, ids


def add_representation(row: dict, vocab: int, k: int, rng) -> dict:
    logits, ids = random_topk(len(row["input_ids"]), vocab, k, rng)
    return {**row, schema.LOGITS: logits, schema.INDICES: ids,
            schema.METRIC_CE: float(np.float32(rng.uniform(0.5, 3.0)))}


def add_fused(row: dict, vocab: int, k: int, rng) -> dict:
    """Source lists: about a quarter EMPTY, a quarter ONE-HOT, the rest 2..k random entries."""
    length = len(row["input_ids"])
    logits, ids = random_topk(length, vocab, k, rng)
    for t in range(length):
        kind = rng.integers(4)
        if kind == 0:
            logits[t], ids[t] = [], []
        elif kind == 1:
            next_id = row["input_ids"][min(t + 1, length - 1)]
            logits[t], ids[t] = [1.0], [next_id]
        else:
            size = int(rng.integers(2, k + 1))
            logits[t], ids[t] = logits[t][:size], ids[t][:size]
    return {**row, schema.FUSED_LOGITS: logits, schema.FUSED_INDICES: ids,
            schema.FUSED_METRIC_CE: float(np.float32(rng.uniform(0.5, 3.0)))}


def aligned_features(index_dtype: str = "uint16"):
    from datasets import List, Value

    features = schema.representation_features(index_dtype=index_dtype)
    features[schema.FUSED_LOGITS] = List(List(Value("float16")))
    features[schema.FUSED_INDICES] = List(List(Value(index_dtype)))
    features[schema.FUSED_METRIC_CE] = Value("float32")
    return features


def aligned_rows(tokenizer, count: int = 12, k: int = 4, seed: int = 0, vocab: int | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    vocab = vocab or len(tokenizer)
    return [add_fused(add_representation(row, vocab, k, rng), vocab, k, rng) for row in token_rows(tokenizer, count)]


def save_set(rows: list[dict], path, index_dtype: str = "uint16", tokenizer=None):
    """Save ``rows`` as a DatasetDict with a train split, with the schema's types of their columns;
    with ``tokenizer``, the provenance record of a set tokenized by it (as the stages write one)."""
    from datasets import Dataset, DatasetDict, Features

    from fusechat import provenance

    every = aligned_features(index_dtype)
    features = Features({name: every[name] for name in rows[0]})
    DatasetDict({"train": Dataset.from_list(rows, features=features)}).save_to_disk(str(path))
    if tokenizer is not None:
        provenance.write_record(path, {"kind": "aligned", "tokenizer": {
            "path": tokenizer.name_or_path, **provenance.tokenizer_fingerprint(tokenizer)}})
    return path
