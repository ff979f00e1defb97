"""Representation sets: stored bytes per real token, and capture throughput.

1. Bytes per real token of our layout (real tokens only, int32 ids, int8 mask, float16 logits)
   against the reference layout (every row padded to model_max_length, int64 ids, values written
   from Python lists, so float64), on synthetic lengths drawn from 50..2048 and on the bundled
   sample data if present. Both sets are really written with ``save_to_disk`` and measured on disk.
2. Capture throughput (real tokens/s) of the tiny pivot with length-sorted batches padded per batch
   against every row padded to model_max_length, same rows, same run.

    python benchmarks/bench_representation.py [--rows 200] [--capture_rows 48] [--max_length 512]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, List, Value

from fusechat import fixtures
from fusechat.modeling import load_causal_lm, load_tokenizer
from fusechat.representation import CaptureOptions, capture_batch, ChunkedLogits, length_sorted_batches
from fusechat.schema import index_dtype_for, representation_features

TOP_K = 10


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ours(lengths, rng, vocab):
    for n, length in enumerate(lengths):
        yield {"id": str(n), "input_ids": rng.integers(0, 32000, length, dtype=np.int32),
               "labels": rng.integers(0, 32000, length, dtype=np.int32), "attention_mask": np.ones(length, np.int8),
               "per_step_logits": rng.standard_normal((length, TOP_K)).astype(np.float16),
               "per_step_indices": rng.integers(0, 32000, (length, TOP_K)).astype(index_dtype_for(vocab)),
               "metric_ce": np.float32(1.0), "per_step_metric_ce": rng.random(length - 1, dtype=np.float32)}


def reference(lengths, rng, max_length):
    for length in lengths:
        yield {"input_ids": rng.integers(0, 32000, max_length).tolist(),
               "labels": rng.integers(0, 32000, max_length).tolist(), "attention_mask": [1] * max_length,
               "per_step_logits": rng.standard_normal((max_length, TOP_K)).tolist(),
               "per_step_indices": rng.integers(0, 32000, (max_length, TOP_K)).tolist(),
               "metric_ce": 1.0, "per_step_metric_ce": rng.random(max_length - 1).tolist()}


REFERENCE_FEATURES = Features({
    "input_ids": List(Value("int64")), "labels": List(Value("int64")), "attention_mask": List(Value("int64")),
    "per_step_logits": List(List(Value("float64"))), "per_step_indices": List(List(Value("int64"))),
    "metric_ce": Value("float64"), "per_step_metric_ce": List(Value("float64")),
})


def storage(lengths, max_length, label, vocab=32002):
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        a = Dataset.from_list(list(ours(lengths, rng, vocab)),
                              features=representation_features(True, index_dtype_for(vocab)))
        a.save_to_disk(f"{tmp}/ours")
        b = Dataset.from_list(list(reference(lengths, rng, max_length)), features=REFERENCE_FEATURES)
        b.save_to_disk(f"{tmp}/ref")
        tokens = int(sum(lengths))
        ours_b, ref_b = folder_bytes(Path(tmp, "ours")) / tokens, folder_bytes(Path(tmp, "ref")) / tokens
    print(f"{label}, vocab {vocab}: {len(lengths)} rows, mean length {np.mean(lengths):.0f}: reference {ref_b:,.0f} B/token, "
          f"ours {ours_b:,.0f} B/token, ratio {ref_b / ours_b:.1f}x")


def throughput(rows, max_length):
    model_path = fixtures.build_tiny_model(fixtures.PIVOT)
    tokenizer = load_tokenizer(str(model_path))
    model = load_causal_lm(str(model_path)).eval()
    options = CaptureOptions(top_k=TOP_K, batch_size=8, per_token_metric=True, no_assert=True)
    chunker = ChunkedLogits(model)
    tokens = sum(len(r["input_ids"]) for r in rows)

    def run(batches, pad_to):
        start = time.perf_counter()
        for batch in batches:
            batch_rows = [rows[i] for i in batch]
            if pad_to:  # the reference: every row padded to model_max_length
                batch_rows = [{**r, "input_ids": r["input_ids"] + [tokenizer.pad_token_id] * (pad_to - len(r["input_ids"])),
                               "attention_mask": r["attention_mask"] + [0] * (pad_to - len(r["input_ids"])),
                               "labels": r["labels"] + [-100] * (pad_to - len(r["input_ids"]))} for r in batch_rows]
            capture_batch(model, chunker, batch_rows, tokenizer.pad_token_id, options, "cpu")
        return tokens / (time.perf_counter() - start)

    in_order = [list(range(i, min(i + 8, len(rows)))) for i in range(0, len(rows), 8)]
    fixed = run(in_order, max_length)
    sorted_ = run(length_sorted_batches([len(r["input_ids"]) for r in rows], 8), None)
    print(f"capture, tiny pivot, {len(rows)} rows, {tokens} real tokens, max length {max_length}: "
          f"padded to max {fixed:,.0f} tok/s, length-sorted {sorted_:,.0f} tok/s, ratio {sorted_ / fixed:.1f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--capture_rows", type=int, default=48)
    parser.add_argument("--max_length", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    lengths = rng.integers(50, 2049, args.rows)
    for vocab in (32002, 151646):
        storage(lengths, 2048, "synthetic lengths 50..2048, model_max_length 2048", vocab)
    sample = Path(__file__).resolve().parents[1] / "data" / "fusechat_sample.json"
    if sample.exists():
        from fusechat.data import validate_records
        from fusechat.representation import tokenize_records
        from fusechat.templates import get_template

        tok = load_tokenizer(str(fixtures.build_tiny_model(fixtures.PIVOT)))
        valid, _ = validate_records(json.loads(sample.read_text()))
        tokenized = tokenize_records(valid, tok, get_template("openchat_3.5"), 2048, True)
        storage(np.array([len(x) for x in tokenized["input_ids"]]), 2048, "bundled sample data, model_max_length 2048")
    lengths = rng.integers(20, args.max_length + 1, args.capture_rows)
    rows = [{"id": str(i), "input_ids": rng.integers(3, 32000, n).tolist(), "attention_mask": [1] * int(n),
             "labels": rng.integers(3, 32000, n).tolist()} for i, n in enumerate(lengths)]
    throughput(rows, args.max_length)


if __name__ == "__main__":
    main()
