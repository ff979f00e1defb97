"""Batches of packed FuseLLM rows with their teacher targets (docs/design.md 12.6.2).

Token columns are padded as FuseChat's collator pads them (:func:`fusechat.kernels.topk.token_batch`:
to the batch's longest row, capped at ``max_length``; padding is masked out of both losses, so
padding every row to 2048 as the reference does changes nothing). Each teacher's lists become
[B, T, K] tensors with the rule of 12.6.2: an EMPTY aligned list takes the pivot's list at that
position. The fusion function of :mod:`fusechat.fusellm.distill` then gives one sparse target per
position:

    target_ids [B, T, U] int64, target_probs [B, T, U] float32 (bf16 values), target_mask [B, T, U]

plus ``teacher_choice`` [B] (the chosen teacher's :func:`~fusechat.fusellm.distill.teacher_index`:
0 for the pivot, k + 1 for source k; -1 for the weighted mode) and ``teacher_reward`` [B] (r of the
``soft`` types). The candidates are the pivot and any number of sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import torch

from ..arrow import column_array, list_lengths
from ..kernels.topk import TopK, as_table, token_batch, topk_targets
from .distill import (PIVOT, fusion_rule, mince_choice, select_rows, teacher_columns, teacher_index, teacher_name,
                      teacher_logits, teacher_probabilities, teacher_rewards, weighted_union)

PUBLISHED_CANDIDATES = (PIVOT, "0", "1")  # the release's three teachers
TARGET_KEYS = ("target_ids", "target_probs", "target_mask", "teacher_choice", "teacher_reward")


@dataclass
class DistillCollator:
    """Collate packed rows; with ``mode`` ("greater" / "weighted") also build the distill target.

    candidates: the teachers in play, in candidate order, e.g. ("pivot", "0", "1") or ("pivot", "0", "1", "2").
    """

    pad_token_id: int
    max_length: int | None = None
    mode: str | None = None
    candidates: tuple[str, ...] = PUBLISHED_CANDIDATES
    temperature: float = 1.0

    def __post_init__(self):
        self._rule = None if self.mode is None else fusion_rule(self.mode)
        self._candidate_teacher = np.array([teacher_index(t) for t in self.candidates])
        self._teacher_logits = partial(teacher_logits, temperature=self.temperature)  # one object: its table is cached

    def __call__(self, features) -> dict[str, torch.Tensor]:
        table = as_table(features)
        batch = token_batch(table, self.pad_token_id, self.max_length)[0]
        if self.mode is not None:
            batch.update(self.targets(table, batch["input_ids"].shape[1]))
        return batch

    def teacher_lists(self, table: pa.Table, width: int, teachers=None, rows=None) -> dict[str, tuple]:
        """(ids, probs, mask) [B, width, K] of each of ``teachers`` (default: the candidates).

        Empty aligned lists take the pivot's; with ``rows`` ([B] bool per teacher), rows outside
        it get the pivot's lists (so that one array can hold each row's chosen teacher).
        """
        lengths = list_lengths(column_array(table, "input_ids"))
        pivot = self._topk(table, PIVOT, lengths)
        out = {}
        for teacher in teachers or self.candidates:
            own = pivot if teacher == PIVOT else self._topk(table, teacher, lengths)
            use_own = np.full(len(lengths), teacher != PIVOT) if rows is None else rows[teacher]
            logits, ids, mask = topk_targets(lengths, width, width, pivot, own, use_own, self._teacher_logits)
            out[teacher] = (ids, teacher_probabilities(logits, mask), mask)
        return out

    def targets(self, table: pa.Table, width: int) -> dict[str, torch.Tensor]:
        metrics = np.stack([column_array(table, teacher_columns(t)[2]).to_numpy(zero_copy_only=False)
                            for t in self.candidates], axis=-1)
        row_rewards = teacher_rewards(metrics)
        if self._rule.one_hot:
            choice = mince_choice(row_rewards, PIVOT in self.candidates).numpy()  # index into candidates
            # Only the chosen teachers' lists are built: one array per teacher that some row chose.
            chosen = list(dict.fromkeys(choice.tolist()))
            names = [self.candidates[c] for c in chosen]
            lists = self.teacher_lists(table, width, names, {name: choice == c for name, c in zip(names, chosen)})
            if len(chosen) == 1:
                ids, probs, mask = lists[names[0]]
            else:
                which = np.array([chosen.index(c) for c in choice.tolist()])
                ids, probs, mask = select_rows(which, [lists[name] for name in names])
            choice_index = torch.from_numpy(self._candidate_teacher[choice])
        else:
            lists = self.teacher_lists(table, width)
            weights = self._rule.weights(row_rewards, PIVOT in self.candidates)
            ids, probs, mask = weighted_union(weights, [lists[t] for t in self.candidates])
            choice_index = torch.full((table.num_rows,), -1)
        return {"target_ids": torch.from_numpy(ids), "target_probs": torch.from_numpy(probs),
                "target_mask": torch.from_numpy(mask),
                "teacher_choice": choice_index, "teacher_reward": self._rule.row_reward(row_rewards)}

    def _topk(self, table: pa.Table, teacher: str, lengths: np.ndarray) -> TopK:
        logits_column, ids_column, _ = teacher_columns(teacher)
        return TopK.of_rows(table, logits_column, ids_column, lengths, f"{logits_column} ({teacher_name(teacher)})")
