"""Representation capture (DESIGN.md 4): tokenized sets and per-position top-k distributions.

Tokenization renders every record with one conversation template and labels the assistant
replies (templates.py). Capture runs the model over length-sorted batches padded per batch only,
and keeps, for every real token position t:

* the top-k logits (cast to float16, as the reference does) and their vocabulary ids,
* the next-token cross-entropy CE(logits[t], labels[t+1]) for t < T-1,

plus per row ``metric_ce``, the mean of those CEs over positions whose next label is not -100.
Logits are computed from the decoder's hidden states one chunk of positions at a time, so the
full [batch, length, vocab] tensor is never held at once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import data as corpus
from .errors import InputError
from .modeling import output_vocab_size
from .schema import IGNORE_INDEX, ID, INDICES, LOGITS, METRIC_CE, PER_STEP_METRIC_CE, row_lengths
from .templates import ChatTemplate, encode_rendered, render_conversation

logger = logging.getLogger(__name__)
# Elements of float32 logits materialised at once per chunk (about 1 GiB).
LOGIT_CHUNK_ELEMENTS = 1 << 28


# ----------------------------------------------------------------------------------------------
# Tokenization
# ----------------------------------------------------------------------------------------------

def select_records(records: list, sample_prop: float | None, split_num: int | None,
                   split_index: int | None) -> list:
    """Sample (seed 42, corpus order kept), then take the contiguous split (DESIGN.md 2)."""
    chosen = [records[i] for i in corpus.sample_indices(len(records), sample_prop)]
    if split_num is None and split_index is None:
        return chosen
    if split_num is None or split_index is None:
        raise InputError("--dataset_split_num and --dataset_index go together")
    start, end = corpus.split_bounds(len(chosen), split_num, split_index)
    return chosen[start:end]


def tokenize_records(records: list[dict], tokenizer, template: ChatTemplate, max_length: int,
                     mask_instruction: bool, num_proc: int | None = None):
    """A ``datasets.Dataset`` with id, input_ids, labels, attention_mask, in record order.

    ``records`` are validated ``{"id", "messages"}`` dicts (data.validate_records).
    """
    from datasets import Dataset

    from .schema import tokenized_features


    source = Dataset.from_dict({
        ID: [r["id"] for r in records],
        "roles": [[role for role, _ in r["messages"]] for r in records],
        "texts": [[text for _, text in r["messages"]] for r in records],
    })

    def encode(batch):
        rendered = [render_conversation(template, list(zip(roles, texts)), tokenizer.eos_token)
                    for roles, texts in zip(batch["roles"], batch["texts"])]
        encoded = encode_rendered(tokenizer, rendered, max_length, mask_instruction)
        return {ID: batch[ID], **encoded}

    return source.map(encode, batched=True, batch_size=256, remove_columns=source.column_names,
                      features=tokenized_features(), num_proc=num_proc if num_proc and num_proc > 1 else None,
                      desc="Tokenizing")


# ----------------------------------------------------------------------------------------------
# Capture
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptureOptions:
    top_k: int = 10
    batch_size: int = 8
    per_token_metric: bool = False
    no_assert: bool = False
    # FuseLLM (DESIGN.md 12.2) computes metric_ce in float16 tensor arithmetic; FuseChat's capture
    # takes the float32 mean.
    float16_metric: bool = False


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length, longest first (fails fast on OOM)."""
    if batch_size < 1:
        raise InputError(f"--batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_rows(rows: list[list[int]], value: int):
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def float16_mean(values: np.ndarray) -> float:
    """Mean as torch computes it on float16 CUDA tensors: each value rounded to float16, the sum
    accumulated in float32 and rounded to float16, the quotient rounded to float16; NaN if empty."""
    if values.size == 0:
        return math.nan
    total = np.float16(values.astype(np.float16).astype(np.float32).sum(dtype=np.float32))
    return float(np.float16(np.float32(total) / np.float32(values.size)))


def next_token_stats(logits, next_labels, top_k: int):
    """For logits [N, V] already rounded to float16 (held as float32) and next labels [N] (-100 =
    none): CE [N] (float32, NaN where no label), top-k values [N, k] and ids [N, k].

    The float16 rounding is the reference's; the arithmetic runs on float32 copies because CPUs have
    no fast float16 kernels (top-k picks the same entries either way). A NaN anywhere in a row
    makes its log-normaliser NaN, which is how callers detect NaN logits without another pass.
    """
    import torch

    values, indices = torch.topk(logits, top_k, dim=-1)
    log_z = torch.logsumexp(logits, dim=-1)
    safe = next_labels.clamp(min=0)
    picked = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    ce = torch.where(next_labels == IGNORE_INDEX, torch.full_like(log_z, math.nan), log_z - picked)
    return ce, values, indices, torch.isnan(log_z)


class ChunkedLogits:
    """Computes logits from the decoder's hidden states one chunk of positions at a time.

    Used only when it reproduces the model's own forward on a probe (models that rescale or cap
    their logits inside ``forward`` fall back to the plain forward pass).
    """

    def __init__(self, model):
        self.model = model
        self.head = model.get_output_embeddings()
        self.decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        self.enabled = self.head is not None and self.decoder is not None

    def hidden(self, input_ids, attention_mask):
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def probe(self, input_ids, attention_mask) -> None:
        import torch

        if not self.enabled:
            return
        ids, mask = input_ids[:1, :16], attention_mask[:1, :16]
        full = self.model(input_ids=ids, attention_mask=mask).logits.float()
        chunked = self.head(self.hidden(ids, mask)).float()
        self.enabled = full.shape == chunked.shape and torch.allclose(full, chunked, rtol=1e-3, atol=1e-3)
        if not self.enabled:
            logger.info("model rescales its logits in forward(); capturing with the full forward pass")


def capture_batch(model, chunker: ChunkedLogits, rows: list[dict], pad_id: int, options: CaptureOptions,
                  device) -> list[dict]:
    """Forward one batch; return per row its top-k lists, per-step CE and metric_ce (numpy)."""
    import torch

    input_ids = pad_rows([r["input_ids"] for r in rows], pad_id).to(device)
    attention_mask = pad_rows([r["attention_mask"] for r in rows], 0).to(device)
    labels = pad_rows([r["labels"] for r in rows], IGNORE_INDEX).to(device)
    batch, width = input_ids.shape
    next_labels = torch.full_like(labels, IGNORE_INDEX)
    next_labels[:, :-1] = labels[:, 1:]

    with torch.inference_mode():
        if chunker.enabled:
            hidden = chunker.hidden(input_ids, attention_mask)
            project = lambda h: chunker.head(h)  # noqa: E731
        else:
            hidden = model(input_ids=input_ids, attention_mask=attention_mask).logits
            project = lambda h: h  # noqa: E731
        flat_hidden = hidden.reshape(batch * width, -1)
        flat_next = next_labels.reshape(-1)
        step = max(1, LOGIT_CHUNK_ELEMENTS // output_vocab_size(model))
        ces, values, indices, nan_rows = [], [], [], set()
        for start in range(0, flat_hidden.shape[0], step):
            logits = project(flat_hidden[start:start + step]).to(torch.float16).float()
            ce, v, ix, bad = next_token_stats(logits, flat_next[start:start + step], options.top_k)
            if bad.any():  # only real positions count; padding is not content
                flat = (torch.nonzero(bad).squeeze(-1) + start).tolist()
                nan_rows.update(p // width for p in flat if p % width < len(rows[p // width]["input_ids"]))
            ces.append(ce)
            values.append(v)
            indices.append(ix)
    ce = torch.cat(ces).view(batch, width).cpu().numpy()
    values = torch.cat(values).view(batch, width, -1).to(torch.float16).cpu().numpy()
    indices = torch.cat(indices).view(batch, width, -1).to(torch.int32).cpu().numpy()
    if nan_rows and not options.no_assert:
        ids = [rows[i][ID] for i in sorted(nan_rows)]
        raise InputError(f"NaN in the logits of conversation(s) {ids}; pass --no_assert to keep them "
                         "(filter_nan drops them later)")

    out = []
    for i, row in enumerate(rows):
        length = len(row["input_ids"])
        steps = ce[i, : length - 1]
        counted = steps[~np.isnan(steps)]
        if options.float16_metric:
            metric = math.nan if i in nan_rows else float16_mean(counted)
        else:
            metric = float(counted.mean()) if counted.size else math.nan
        if math.isnan(metric) and not options.no_assert:
            raise InputError(
                f"conversation {row[ID]!r}: metric_ce is NaN (no labelled next-token position"
                f"{', or NaN logits' if i in nan_rows else ''}; truncated before any reply?); pass "
                "--no_assert to keep it (filter_nan drops it later)")
        result = {LOGITS: values[i, :length], INDICES: indices[i, :length], METRIC_CE: metric}
        if options.per_token_metric:
            # 0.0 where the next label is -100, as cross_entropy(ignore_index=-100) reports it.
            result[PER_STEP_METRIC_CE] = np.nan_to_num(steps, nan=0.0).astype(np.float32)
        out.append(result)
    return out


def capture_representations(model, tokenized, options: CaptureOptions, pad_id: int, device=None,
                            progress: bool = True) -> Iterator[tuple[int, dict]]:
    """Yield ``(row index, representation columns)`` in length-sorted batch order."""
    from tqdm.auto import tqdm

    lengths = row_lengths(tokenized).tolist()
    batches = length_sorted_batches(lengths, options.batch_size)
    device = device or next(model.parameters()).device
    chunker = ChunkedLogits(model)
    bar = tqdm(total=sum(lengths), unit="tok", desc="Capturing representations", disable=not progress)
    for n, batch in enumerate(batches):
        rows = [tokenized[i] for i in batch]
        if n == 0:
            chunker.probe(pad_rows([rows[0]["input_ids"]], pad_id).to(device),
                          pad_rows([rows[0]["attention_mask"]], 0).to(device))
        for index, result in zip(batch, capture_batch(model, chunker, rows, pad_id, options, device)):
            yield index, result
        bar.update(sum(lengths[i] for i in batch))
    bar.close()


def representation_dataset(tokenized, options: CaptureOptions, model, pad_id: int, scratch_dir,
                           device=None, progress: bool = True):
    """The tokenized set plus the representation columns, rows in their original order.

    Rows are streamed to an Arrow file in ``scratch_dir`` as batches finish (memory stays bounded),
    then put back into input order.
    """
    from pathlib import Path

    from datasets import Dataset, Value
    from datasets.arrow_writer import ArrowWriter

    from .schema import index_dtype_for, representation_features

    features = representation_features(options.top_k, options.per_token_metric,
                                       index_dtype_for(output_vocab_size(model)))
    features["_row"] = Value("int64")
    path = str(Path(scratch_dir) / "captured.arrow")
    with ArrowWriter(features=features, path=path) as writer:
        for index, result in capture_representations(model, tokenized, options, pad_id, device, progress):
            row = tokenized[index]
            writer.write({"_row": index, ID: row[ID], "input_ids": row["input_ids"], "labels": row["labels"],
                          "attention_mask": row["attention_mask"], **result})
        writer.finalize()
    captured = Dataset.from_file(path)
    order = np.argsort(np.asarray(captured.data.column("_row")), kind="stable")
    return captured.select(order).remove_columns("_row")
