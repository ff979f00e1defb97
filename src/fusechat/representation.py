"""Representation capture (docs/design.md 4): tokenized sets and per-position top-k distributions.

Tokenization renders every record with one conversation template and labels the assistant
replies (templates.py). Capture runs the model over length-sorted batches padded per batch only,
and keeps, for every real token position t:

* the top-k logits (cast to float16, as the reference does) and their vocabulary ids,
* the next-token cross-entropy CE(logits[t], labels[t+1]) for t < T-1,

plus per row ``metric_ce``, the mean of those CEs over positions whose next label is not -100, in
float16 arithmetic as the released code computes it (:func:`float16_mean`).
Logits are computed from the decoder's hidden states one chunk of positions at a time, so the
full [batch, length, vocab] tensor is never held at once.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import data as corpus
from .arrow import arrow_column, row_lengths
from .errors import InputError
from .modeling import output_vocab_size
from .padding import pad_lists
from .schema import IGNORE_INDEX, ID, INDICES, LOGITS, METRIC_CE, PER_STEP_METRIC_CE
from .templates import ChatTemplate, encode_rendered, render_conversation

logger = logging.getLogger(__name__)
# Elements of float32 logits materialised at once per chunk (64 MiB: 64 positions of gemma's 262,144
# ids). The passes over a chunk (rounding, top-k, log-normaliser) then work on a block that stays
# small, and the peak stays far below the plain forward's [batch, length, vocab] logits.
LOGIT_CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------------
# Tokenization
# ----------------------------------------------------------------------------------------------

def select_records(records: list, sample_prop: float | None, split_num: int | None,
                   split_index: int | None) -> list:
    """Sample (seed 42, corpus order kept), then take the contiguous split (docs/design.md 2)."""
    chosen = [records[i] for i in corpus.sample_indices(len(records), sample_prop)]
    if split_num is None and split_index is None:
        return chosen
    if split_num is None or split_index is None:
        raise InputError("--dataset_split_num and --dataset_index go together")
    start, end = corpus.split_bounds(len(chosen), split_num, split_index)
    return chosen[start:end]


def tokenize_records(records: list[dict], tokenizer, template: ChatTemplate, max_length: int,
                     mask_instruction: bool, num_proc: int | None = None, separator: str | None = None):
    """A ``datasets.Dataset`` with id, input_ids, labels, attention_mask, in record order.

    ``records`` are validated ``{"id", "messages"}`` dicts (data.validate_records); turns close with
    ``separator`` (default: the tokenizer's eos).
    """
    separator = separator or tokenizer.eos_token
    from datasets import Dataset

    from .schema import tokenized_features


    source = Dataset.from_dict({
        ID: [r["id"] for r in records],
        "roles": [[role for role, _ in r["messages"]] for r in records],
        "texts": [[text for _, text in r["messages"]] for r in records],
    })

    def encode(batch):
        rendered = [render_conversation(template, list(zip(roles, texts)), separator)
                    for roles, texts in zip(batch["roles"], batch["texts"])]
        encoded = encode_rendered(tokenizer, rendered, max_length, mask_instruction)
        return {ID: batch[ID], **encoded}

    # A fresh fingerprint, as aligned_sets gives its maps: without one datasets hashes ``encode`` by
    # pickling the whole tokenizer (seconds for a 150k-entry vocabulary). The set is in memory: no cache.
    return source.map(encode, batched=True, batch_size=256, remove_columns=source.column_names,
                      features=tokenized_features(), num_proc=num_proc if num_proc and num_proc > 1 else None,
                      desc="Tokenizing", new_fingerprint=uuid.uuid4().hex[:24])


# ----------------------------------------------------------------------------------------------
# Capture
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptureOptions:
    top_k: int = 10
    batch_size: int = 8
    per_token_metric: bool = False
    no_assert: bool = False


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length, longest first (fails fast on OOM)."""
    if batch_size < 1:
        raise InputError(f"--batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def padded_tensor(rows: list[list[int]], value: int):
    """A [len(rows), longest] int64 tensor."""
    import torch

    return torch.from_numpy(pad_lists(rows, value, np.int64))


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


def float16_mean(ce):
    """The released metric_ce of per-token CEs (NaN = no label), stored float16 (docs/design.md 4): each CE
    rounded to float16, their sum rounded to float16 (accumulated in float32, as torch sums float16),
    the quotient by the count rounded to float16. NaN when no position counts."""
    steps = np.asarray(ce, dtype=np.float32)
    counted = steps[~np.isnan(steps)].astype(np.float16)
    if not counted.size:
        return np.float16(math.nan)
    total = np.float16(counted.sum(dtype=np.float32))
    return np.float16(np.float32(total) / np.float32(counted.size))


def capture_batch(model, chunker: ChunkedLogits, rows: list[dict], pad_id: int, options: CaptureOptions,
                  device) -> list[dict]:
    """Forward one batch; return per row its top-k lists, per-step CE and metric_ce (numpy)."""
    import torch

    input_ids = padded_tensor([r["input_ids"] for r in rows], pad_id).to(device)
    attention_mask = padded_tensor([r["attention_mask"] for r in rows], 0).to(device)
    labels = padded_tensor([r["labels"] for r in rows], IGNORE_INDEX).to(device)
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
            logits = project(flat_hidden[start:start + step])
            if logits.dtype == torch.float32:  # rounded to float16 in place: no third copy of the chunk
                logits.copy_(logits.to(torch.float16))
            else:
                logits = logits.to(torch.float16).float()
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
        metric = math.nan if i in nan_rows else float16_mean(steps)
        if np.isnan(metric) and not options.no_assert:
            raise InputError(
                f"conversation {row[ID]!r}: metric_ce is NaN (no labelled next-token position"
                f"{', or NaN logits' if i in nan_rows else ''}; truncated before any reply?); pass "
                "--no_assert to keep it (filter_nan drops it later)")
        result = {LOGITS: values[i, :length], INDICES: indices[i, :length], METRIC_CE: metric}
        if options.per_token_metric:
            # 0.0 where the next label is -100, as cross_entropy(ignore_index=-100) reports it.
            result[PER_STEP_METRIC_CE] = np.nan_to_num(steps, nan=0.0).astype(np.float16)
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
            chunker.probe(padded_tensor([rows[0]["input_ids"]], pad_id).to(device),
                          padded_tensor([rows[0]["attention_mask"]], 0).to(device))
        for index, result in zip(batch, capture_batch(model, chunker, rows, pad_id, options, device)):
            yield index, result
        bar.update(sum(lengths[i] for i in batch))
    bar.close()


def representation_dataset(tokenized, options: CaptureOptions, model, pad_id: int, scratch_dir,
                           device=None, progress: bool = True):
    """The tokenized set plus the representation columns, rows in their original order.

    Rows are streamed to Arrow files in ``scratch_dir`` as batches finish (memory stays bounded),
    then put back into input order.
    """
    from datasets import Dataset, Value
    from datasets.exceptions import DatasetGenerationError

    from .schema import index_dtype_for, representation_features

    features = representation_features(options.per_token_metric, index_dtype_for(output_vocab_size(model)))
    features["_row"] = Value("int64")

    def captured_rows():
        for index, result in capture_representations(model, tokenized, options, pad_id, device, progress):
            row = tokenized[index]
            yield {"_row": index, ID: row[ID], "input_ids": row["input_ids"], "labels": row["labels"],
                   "attention_mask": row["attention_mask"], **result}

    # A fresh fingerprint: never a cached result, and no hashing of the generator (it holds the model).
    try:
        captured = Dataset.from_generator(captured_rows, features=features, cache_dir=str(scratch_dir),
                                          fingerprint=uuid.uuid4().hex)
    except DatasetGenerationError as exc:  # the builder wraps what the capture raised: bad input stays bad input
        if isinstance(exc.__cause__, InputError):
            raise exc.__cause__ from None
        raise
    order = np.argsort(arrow_column(captured, "_row").to_numpy(), kind="stable")
    return captured.select(order).remove_columns("_row")
