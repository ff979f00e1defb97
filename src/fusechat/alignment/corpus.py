"""Token and distribution alignment over whole datasets (the batch functions ``datasets.map`` runs).

A *paired* set holds the pivot's (base) columns as they are and the source's (blending) columns
prefixed with ``blending_``, row r of both being the same conversation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..schema import (FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, INDICES, LOGITS,
                      PER_STEP_FUSED_METRIC_CE, check_same_conversations, row_lengths)
from .distribution_alignment import DistributionAligner, dropped_columns, fused_columns, not_aligned
from .token_alignment import align_tokens, decoded_token_strings

BLENDING = "blending_"
ALIGNMENT_COLUMN = "base_to_blending_mapping"
CARRIED = "_source_positions"  # per row: positions that carry the source's distribution


@dataclass(frozen=True)
class TokenizerSpec:
    """How to load a tokenizer; cheap to pickle into ``datasets`` worker processes (a tokenizer object
    with a 152k vocabulary takes seconds to pickle and to hash for the cache fingerprint)."""

    name_or_path: str
    use_fast: bool = True
    trust_remote_code: bool = False
    cache_dir: str | None = None

    def load(self):
        return _load_tokenizer(self)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(spec: TokenizerSpec):
    from ..modeling import load_tokenizer

    return load_tokenizer(spec.name_or_path, None, spec.cache_dir, spec.use_fast, spec.trust_remote_code)


def paired(base, blending, base_name: str, blending_name: str, blending_columns: Sequence[str]):
    """The base set with the blending set's ``blending_columns`` added under the ``blending_`` prefix."""
    from datasets import concatenate_datasets

    check_same_conversations(base, blending, base_name, blending_name)
    renamed = blending.select_columns(list(blending_columns)).rename_columns(
        {c: BLENDING + c for c in blending_columns})
    return concatenate_datasets([base, renamed], axis=1)


def token_alignment_batch(batch, base: TokenizerSpec, blending: TokenizerSpec, base_marker: str,
                          blending_marker: str):
    """DESIGN.md 6.1 for every row: per base position, the blending positions matched to it."""
    base_tokenizer, blending_tokenizer = base.load(), blending.load()
    alignments = []
    for base_ids, blending_ids in zip(batch["input_ids"], batch[BLENDING + "input_ids"]):
        alignments.append(align_tokens(decoded_token_strings(base_tokenizer, base_ids),
                                       decoded_token_strings(blending_tokenizer, blending_ids),
                                       base_marker, blending_marker))
    return {ALIGNMENT_COLUMN: alignments}


def carried_positions(base_ids: Sequence[int], fused_logits, fused_indices, onehot_offset: int = 1) -> int:
    """Positions whose fused entry is the source's distribution, not ONE-HOT (a single logit 1.0 on
    the next base id; ``onehot_offset`` 0: on the current one, FuseLLM's fallback) and not EMPTY:
    the quality figure of an alignment."""
    last = len(base_ids) - 1
    count = 0
    for i, (logits, ids) in enumerate(zip(fused_logits, fused_indices)):
        if not ids:
            continue
        if len(ids) == 1 and logits[0] == 1.0 and ids[0] == base_ids[min(i + onehot_offset, last)]:
            continue
        count += 1
    return count


def distribution_alignment_batch(batch, aligner: DistributionAligner | None, base: TokenizerSpec,
                                 blending: TokenizerSpec, metric_level: str):
    """DESIGN.md 6.3 for every row; ``aligner`` None means ``--not_align`` (lists copied unmapped)."""
    base_tokenizer, blending_tokenizer = base.load(), blending.load()
    out: dict[str, list] = {}
    for r in range(len(batch["input_ids"])):
        base_row = {k: batch[k][r] for k in batch if not k.startswith(BLENDING)}
        blending_row = {k[len(BLENDING):]: batch[k][r] for k in batch if k.startswith(BLENDING)}
        base_ids, blending_ids = base_row["input_ids"], blending_row["input_ids"]
        if aligner is None:
            logits, indices = not_aligned(blending_row[LOGITS], blending_row[INDICES])
        else:
            logits, indices = aligner.align_sample(
                base_ids, decoded_token_strings(base_tokenizer, base_ids), blending_ids,
                decoded_token_strings(blending_tokenizer, blending_ids), blending_row[LOGITS],
                blending_row[INDICES], where=f"conversation {base_row.get(ID, r)!r}")
        columns = fused_columns(base_row, blending_row, logits, indices, metric_level,
                                where=f"conversation {base_row.get(ID, r)!r}")
        columns[CARRIED] = carried_positions(base_ids, logits, indices) if aligner is not None else len(base_ids)
        for key, value in columns.items():
            out.setdefault(key, []).append(value)
    return out


def aligned_features(base_features, metric_level: str, fused_index_dtype: str):
    """The aligned set's features: the pivot's (less the dropped metric) plus the fused columns."""
    from datasets import Features, List, Value

    features = {k: v for k, v in base_features.items()
                if k not in dropped_columns(metric_level) and not k.startswith(BLENDING)}
    features[FUSED_LOGITS] = List(List(Value("float16")))
    features[FUSED_INDICES] = List(List(Value(fused_index_dtype)))
    if metric_level == "sequence":
        features[FUSED_METRIC_CE] = Value("float32")
    else:
        features[PER_STEP_FUSED_METRIC_CE] = List(Value("float32"))
    features[CARRIED] = Value("int64")
    return Features(features)


def share_carried(dataset) -> float:
    total = int(row_lengths(dataset).sum())
    return float(np.sum(dataset[CARRIED])) / total if total else 0.0

