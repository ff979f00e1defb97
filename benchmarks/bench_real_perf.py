"""Performance on the real models (SmolLM2-135M-Instruct, gemma-3-270m), every ratio against the
straightforward way measured in the same run.

1. Capture (docs/design.md 4) on the same length-sorted batches of the sample conversations (ChatML):
   capture_batch (logits chunk by chunk from the hidden states, float16 rounding, top-k, per-token CE)
   against a plain ``model(...).logits`` forward plus ``torch.topk``. Tokens/s and peak memory above
   the loaded model (RSS sampled every few milliseconds): with gemma's 262,144-id vocabulary one
   batch's full logits alone are batch x length x 1 MiB.
2. One training step (forward, backward, AdamW) of the pivot on the same batch of a fused set:
   the fused step (top-k fuse targets from the collator, LM + fuse loss, lm_loss_weight 0.9) against
   the SFT step (the model's own LM loss). Median of a few steps.
3. The vocabulary mapping gemma -> SmolLM2 (262,144 x 49,152): MinED (soft) and MS (default, over the
   token alignment count matrix of the fused set's pair), time and peak memory; the straightforward
   MinED (one Python Levenshtein loop over the base vocabulary per token) timed on a sample of
   source tokens and scaled to the whole vocabulary.

    python benchmarks/bench_real_perf.py --work_dir WORK    # WORK: a scripts/demo.sh (DEMO=real) work dir
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from fusechat import fixtures

REPO = Path(__file__).resolve().parents[1]
PIVOT, SOURCE = "smollm2-135m-instruct", "gemma-3-270m"
TOP_K = 10


class PeakRss:
    """Peak resident memory above the level at entry, sampled by a thread."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def sample_rows(tokenizer, model_dir: str, max_length: int, records: int):
    from fusechat.data import validate_records
    from fusechat.modeling import model_turn_separator
    from fusechat.representation import tokenize_records
    from fusechat.templates import get_template

    corpus = json.loads((REPO / "data" / "fusechat_sample.json").read_text(encoding="utf-8"))[:records]
    valid, _ = validate_records(corpus)
    separator = model_turn_separator(model_dir, tokenizer)
    tokenized = tokenize_records(valid, tokenizer, get_template("chatml"), max_length, True, separator=separator)
    return [tokenized[i] for i in range(len(tokenized))]


def capture(name: str, args) -> None:
    from fusechat.modeling import load_causal_lm, load_tokenizer
    from fusechat.representation import (CaptureOptions, ChunkedLogits, capture_batch, length_sorted_batches,
                                         padded_tensor)

    path = str(fixtures.build_tiny_model(name))
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path).eval()
    rows = sample_rows(tokenizer, path, args.max_length, args.records)
    batches = length_sorted_batches([len(r["input_ids"]) for r in rows], args.batch_size)
    tokens = sum(len(r["input_ids"]) for r in rows)
    options = CaptureOptions(top_k=TOP_K, batch_size=args.batch_size, per_token_metric=True, no_assert=True)
    chunker = ChunkedLogits(model)
    first = [rows[i] for i in batches[0]]
    chunker.probe(padded_tensor([first[0]["input_ids"]], tokenizer.pad_token_id),
                  padded_tensor([first[0]["attention_mask"]], 0))

    def ours():
        for batch in batches:
            capture_batch(model, chunker, [rows[i] for i in batch], tokenizer.pad_token_id, options, "cpu")

    def plain():
        with torch.inference_mode():
            for batch in batches:
                chosen = [rows[i] for i in batch]
                ids = padded_tensor([r["input_ids"] for r in chosen], tokenizer.pad_token_id)
                mask = padded_tensor([r["attention_mask"] for r in chosen], 0)
                torch.topk(model(input_ids=ids, attention_mask=mask).logits, TOP_K, dim=-1)

    figures = {}
    for label, fn in (("plain", plain), ("ours", ours), ("plain ", plain), ("ours ", ours)):  # each twice, interleaved
        with PeakRss() as peak:
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
        best = figures.get(label.strip(), (0.0, 0.0))
        figures[label.strip()] = (max(best[0], tokens / seconds), max(best[1], peak.mib))
    (p_rate, p_mem), (o_rate, o_mem) = figures["plain"], figures["ours"]
    print(f"capture {name} (vocab {len(tokenizer):,}, chunked logits {'on' if chunker.enabled else 'OFF'}): "
          f"{len(rows)} rows, {tokens} tokens, batch {args.batch_size}, max length {args.max_length}: "
          f"plain forward+top-k {p_rate:,.0f} tok/s, peak +{p_mem:,.0f} MiB; capture {o_rate:,.0f} tok/s, "
          f"peak +{o_mem:,.0f} MiB; speed ratio {o_rate / p_rate:.2f}x, memory ratio {o_mem / max(p_mem, 1):.2f}x",
          flush=True)


def training_step(args) -> None:
    from datasets import load_from_disk

    from fusechat.modeling import load_causal_lm
    from fusechat.training.collator import TrainCollator
    from fusechat.training.fuse_loss import lm_and_fuse_losses, weighted_loss

    fused_set = Path(args.work_dir) / "aligned_representations" / f"{PIVOT}_{SOURCE}_representation_split0_fnan"
    rows = load_from_disk(str(fused_set))["train"].select(range(args.batch_size))
    path = str(fixtures.build_tiny_model(PIVOT))
    model = load_causal_lm(path).train()
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else model.config.eos_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    features = [rows[i] for i in range(len(rows))]

    def sft_step():
        batch = TrainCollator(pad, args.max_length)(features)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def fused_step():
        batch = TrainCollator(pad, args.max_length, fuse=True)(features)
        labels = batch.pop("labels")
        targets = [batch.pop(k) for k in ("target_logits", "target_ids", "target_mask")]
        batch.pop("source_chosen", None)
        log_probs = torch.log_softmax(model(**batch).logits.float(), dim=-1)
        lm, fuse = lm_and_fuse_losses(log_probs, labels, *targets, 1.0, "ce")
        weighted_loss(lm, fuse, 0.9).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = {"sft": [], "fused": []}
    sft_step(), fused_step()  # warm-up: optimizer state, allocator
    for _ in range(args.steps):
        for label, fn in (("sft", sft_step), ("fused", fused_step)):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    sft, fused = statistics.median(times["sft"]), statistics.median(times["fused"])
    width = max(len(r) for r in rows["input_ids"])
    print(f"training step {PIVOT}, batch {len(rows)} x up to {min(width, args.max_length)} tokens, median of "
          f"{args.steps}: SFT {sft:.2f} s, fused {fused:.2f} s, ratio {fused / sft:.3f}x", flush=True)


def vocabulary_mapping(args) -> None:
    import scipy.sparse
    from rapidfuzz.distance import Levenshtein

    from fusechat.alignment.vocab_mapping import mined_mapping, ms_mapping, vocabulary_of
    from fusechat.modeling import load_tokenizer

    base = vocabulary_of(load_tokenizer(str(fixtures.build_tiny_model(PIVOT))))
    blending = vocabulary_of(load_tokenizer(str(fixtures.build_tiny_model(SOURCE))))
    matrix = Path(args.work_dir) / "aligned_representations" / f"{PIVOT}_{SOURCE}_token_alignment_matrix.npz"
    counts = scipy.sparse.load_npz(matrix)
    with PeakRss() as peak:
        start = time.perf_counter()
        mined_mapping(blending, base, progress=False)
        mined_s = time.perf_counter() - start
    mined_mib = peak.mib
    with PeakRss() as peak:
        start = time.perf_counter()
        ms_mapping(counts, blending, base)
        ms_s = time.perf_counter() - start

    # The straightforward MinED: per source token, the base piece of least edit distance, one by one.
    pieces = [p for p in base.pieces if p is not None]
    sample = [p.replace(blending.marker, base.marker) for p in blending.pieces[1000:1000 + args.naive_sample]]
    start = time.perf_counter()
    for piece in sample:
        min(range(len(pieces)), key=lambda j: Levenshtein.distance(piece, pieces[j]))
    naive_s = (time.perf_counter() - start) / len(sample) * blending.size
    print(f"vocabulary mapping {SOURCE} -> {PIVOT} ({blending.size:,} x {base.size:,}): MinED {mined_s:.1f} s, "
          f"peak +{mined_mib:,.0f} MiB (straightforward loop, scaled from {len(sample)} tokens: {naive_s:,.0f} s, "
          f"ratio {naive_s / mined_s:,.0f}x); MS over {counts.nnz:,} counts {ms_s:.1f} s, peak +{peak.mib:,.0f} MiB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", required=True, help="a scripts/demo.sh (DEMO=real) WORK_DIR (fused set, matrix)")
    parser.add_argument("--records", type=int, default=24)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--naive_sample", type=int, default=20)
    parser.add_argument("--parts", default="capture,train,mapping")
    args = parser.parse_args()
    parts = args.parts.split(",")
    print(f"torch threads {torch.get_num_threads()}, load average {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    if "capture" in parts:
        for name in (SOURCE, PIVOT):
            capture(name, args)
    if "train" in parts:
        training_step(args)
    if "mapping" in parts:
        vocabulary_mapping(args)


if __name__ == "__main__":
    main()
