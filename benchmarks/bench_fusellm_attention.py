"""FuseLLM capture (docs/design.md 12.2) with SDPA attention, as forward_for_logits.py runs it, against
eager attention, as the release runs it (no flash attention): how far the captured values move,
and the time ratio, same rows, same run.

For each tiny FuseLLM model and dtype: the largest difference of the top-k logits over real
positions, the share of positions whose top-k ids (as a set) and top-1 id agree, and the largest
difference of metric_ce per document.

    python benchmarks/bench_fusellm_attention.py [--rows 16] [--max_length 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from fusechat import fixtures
from fusechat.fusellm.common import encode_documents, load_stage_tokenizer
from fusechat.fusellm.corpus import SAMPLE_DIR
from fusechat.modeling import load_causal_lm

TOP_K = 10


def documents(rows: int) -> list[str]:
    import json

    lines = (SAMPLE_DIR / "train.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines[:rows]]


def capture(model, batch, mask):
    """Top-k logits and ids (float16, as stored) and the per-document mean next-token CE."""
    with torch.no_grad():
        logits = model(input_ids=batch, attention_mask=mask).logits.float()
    values, ids = logits.topk(TOP_K, dim=-1)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
    weights = mask[:, 1:].float()
    return values.half(), ids, (ce * weights).sum(1) / weights.sum(1)


def measure(name: str, dtype: str, rows: int, max_length: int) -> None:
    path = str(fixtures.build_tiny_model(name))
    tokenizer = load_stage_tokenizer(path, max_length)
    encoded = encode_documents(tokenizer, documents(rows), max_length)
    width = max(map(len, encoded))
    batch = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in encoded])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded])
    results, seconds = {}, {}
    for attention in ("eager", "sdpa"):
        model = load_causal_lm(path, None, dtype)
        model.config._attn_implementation = attention  # noqa: SLF001 (transformers' documented switch)
        model.eval()
        start = time.perf_counter()
        results[attention] = capture(model, batch, mask)
        seconds[attention] = time.perf_counter() - start
    (ev, ei, ece), (sv, si, sce) = results["eager"], results["sdpa"]
    real = mask.bool()
    same_set = (ei.sort(-1).values == si.sort(-1).values).all(-1)[real].float().mean().item()
    same_top1 = (ei[..., 0] == si[..., 0])[real].float().mean().item()
    print(f"{name:24s} {dtype:5s} max|dlogit| {(ev.float() - sv.float()).abs()[real].max().item():.3g}  "
          f"top-{TOP_K} sets equal {100 * same_set:.2f}%  top-1 equal {100 * same_top1:.2f}%  "
          f"max|d metric_ce| {(ece - sce).abs().max().item():.3g}  time eager/sdpa {seconds['eager'] / seconds['sdpa']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=256)
    args = parser.parse_args()
    print(f"{args.rows} documents of the sample corpus, up to {args.max_length} tokens, real positions only")
    for name in fixtures.FUSELLM_TINY_MODELS:
        for dtype in ("none", "bf16"):
            measure(name, dtype, args.rows, args.max_length)


if __name__ == "__main__":
    main()
