"""Batches for train.py (docs/design.md 8): dynamic padding and the top-k fuse targets.

Each batch is padded to its own longest row (capped at ``max_length``, optionally rounded up to a
multiple of ``pad_to_multiple_of``), never to model_max_length. With ``fuse`` the collator also
builds the target of every position once, as three [B, T, K] tensors (K = the longest list of the
batch): ``target_logits`` (float32), ``target_ids`` (int64) and ``target_mask`` (valid entries).
Per conversation, the target is the source's list when the source won the MinCE choice (always,
with ``fuse_with_ref_model=False``), except where the source's entry is EMPTY: there, and for
conversations the pivot won, it is the pivot's list. ``source_chosen`` [B] records the choice.

Input: a list of row dicts (Python lists, as any map-style dataset gives them) or a pyarrow Table
of the batch's rows (what :class:`fusechat.training.datasets.ArrowRows` gives: no Python objects
per element, the fast path). The targets are copied in one compiled pass over the positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ..arrow import column_array
from ..kernels.teacher_rules import ce_rewards, mince_choice
from ..kernels.topk import TopK, as_table, token_batch, topk_targets
from ..schema import FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, INDICES, LOGITS, METRIC_CE


@dataclass
class TrainCollator:
    """Collate rows of input_ids / labels / attention_mask (+ top-k columns with ``fuse``)."""

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    fuse: bool = False
    fuse_with_ref_model: bool = True
    row_log_path: str | None = None  # debugging: append the ids of every collated row to this file

    def __call__(self, features) -> dict[str, torch.Tensor]:
        table = as_table(features)
        batch, lengths, width, kept = token_batch(table, self.pad_token_id, self.max_length, self.pad_to_multiple_of)
        if self.fuse:
            batch.update(self.fuse_targets(table, lengths, width, kept))
        if self.row_log_path:
            self._log_rows(table)
        return batch

    def fuse_targets(self, table: pa.Table, lengths: np.ndarray, width: int, limit: int) -> dict[str, torch.Tensor]:
        pivot = TopK.of_rows(table, LOGITS, INDICES, lengths)
        source = TopK.of_rows(table, FUSED_LOGITS, FUSED_INDICES, lengths)
        if self.fuse_with_ref_model:
            use_source = source_wins(column_array(table, METRIC_CE).to_numpy(zero_copy_only=False),
                                     column_array(table, FUSED_METRIC_CE).to_numpy(zero_copy_only=False))
        else:
            use_source = np.ones(len(lengths), bool)
        logits, ids, mask = topk_targets(lengths, width, limit, pivot, source, use_source)
        return {"target_logits": torch.from_numpy(logits), "target_ids": torch.from_numpy(ids),
                "target_mask": torch.from_numpy(mask), "source_chosen": torch.from_numpy(use_source)}

    def _log_rows(self, table: pa.Table) -> None:
        ids = table.column(ID).to_pylist() if ID in table.column_names else ["?"] * table.num_rows
        with open(self.row_log_path, "a", encoding="utf-8") as handle:
            handle.write("".join(f"{row_id}\n" for row_id in ids))


def source_wins(pivot_metric_ce, source_metric_ce) -> np.ndarray:
    """[B] bool: MinCE over (pivot, source) picks the source, i.e. its bf16 reward is strictly larger
    (ties go to the first candidate, the pivot)."""
    rewards = ce_rewards(np.stack([pivot_metric_ce, source_metric_ce], axis=-1))
    return (mince_choice(rewards, pivot_is_candidate=True) == 1).numpy()
