"""FuseLLM's teacher choice, targets and loss weighting (DESIGN.md 12.6.3, 12.6.4), as pure tensor functions.

A packed row has up to three teachers, in this fixed candidate order: the pivot (its own top-k),
source 0 and source 1 (their aligned top-k). Each teacher's distribution at a position is
``bf16(softmax(bf16(bf16(logits) / T)))`` over its list, zero elsewhere; the reference writes it
into a dense [B, 2048, V] bf16 tensor, we keep the list ([B, T, K] ids and probabilities), which
gives the same loss.

Rewards per row: ``bf16(1 / bf16(exp(bf16(metric_ce))))``. The row's target is

- ``greater`` (MinCE, ``--distill_greater_as_gt``): the candidate with the largest reward, the
  first in candidate order on ties; without the pivot, source 0 only if its reward is strictly
  larger (ties go to source 1);
- ``weighted`` (``--distill_weighted_as_gt``): sum_X w_X * dist_X with w = bf16(softmax(rewards)),
  summed left to right in candidate order, every product and partial sum rounded to bf16.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..training.fuse_loss import rewards

PIVOT = "pivot"
FUSION_MODES = ("greater", "weighted")
FUSION_TYPES = ("hard", "hard_and_decay", "soft")


def teacher_columns(teacher: str) -> tuple[str, str, str]:
    """(logits, ids, metric) column names of ``pivot`` or source ``"0"`` / ``"1"``."""
    if teacher == PIVOT:
        return "per_step_logits", "per_step_indices", "metric_ce"
    return f"per_step_aligned_logits_{teacher}", f"per_step_aligned_indices_{teacher}", f"metric_ce_aligned_{teacher}"


def teacher_name(teacher: str) -> str:
    return "pivot" if teacher == PIVOT else f"source {teacher}"


def teacher_rewards(metrics) -> torch.Tensor:
    """[B, C] bf16 rewards from [B, C] metric CEs (float64 metrics pass through float32 first)."""
    return rewards(np.asarray(metrics, dtype=np.float64).astype(np.float32))


def greater_choice(row_rewards: torch.Tensor, pivot_is_candidate: bool) -> torch.Tensor:
    """[B] index (into the candidates) of each row's MinCE teacher."""
    count = row_rewards.shape[-1]
    if count == 0:
        raise InputError("--distill_greater_as_gt needs at least one teacher")
    if pivot_is_candidate or count == 1:
        return torch.argmax(row_rewards, dim=-1)  # the first maximum: pivot, then source 0, then source 1
    return torch.where(row_rewards[:, 0] > row_rewards[:, 1], 0, 1)  # sources only: ties go to source 1


def weighted_weights(row_rewards: torch.Tensor) -> torch.Tensor:
    """[B, C] bf16 weights: softmax over the candidates' bf16 rewards, computed in float32."""
    return torch.softmax(row_rewards.float(), dim=-1).to(torch.bfloat16)


def soft_reward(row_rewards: torch.Tensor, mode: str) -> torch.Tensor:
    """[B] bf16 r of the ``soft`` types: the largest reward (greater) or the bf16 mean (weighted)."""
    if mode == "greater":
        return row_rewards.max(dim=-1).values
    return row_rewards.mean(dim=-1)


def teacher_probabilities(logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """bf16(softmax(bf16(bf16(logits) / T))) over each list's valid entries; float32 holding bf16 values."""
    scaled = logits.to(torch.bfloat16) / temperature  # bf16 result, as the reference divides a bf16 tensor
    scaled = scaled.float().masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scaled, dim=-1).masked_fill(~mask, 0.0)
    return probs.to(torch.bfloat16).float()


def select_rows(choice: torch.Tensor, teachers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Per row b, the (ids, probs, mask) of teacher ``choice[b]``; lists padded to a common width."""
    width = max(ids.shape[-1] for ids, _, _ in teachers)
    padded = [tuple(_pad_last(t, width) for t in teacher) for teacher in teachers]
    out = []
    for part in range(3):
        stacked = torch.stack([teacher[part] for teacher in padded])  # [C, B, T, K]
        out.append(stacked[choice, torch.arange(len(choice))])
    return tuple(out)


def _pad_last(tensor: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[-1]))


def weighted_union(weights: torch.Tensor, teachers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Sparse form of sum_X w_X * dist_X (bf16, left to right in candidate order).

    weights: [B, C] bf16; teachers: C x (ids, probs, mask) of [B, T, K_X] with distinct ids per list.
    Returns (ids, probs, mask) [B, T, sum K_X]: every id appears once (its first occurrence);
    the value at an id is the bf16 chain over the teachers, with 0 for a teacher that lacks it.
    """
    ids = torch.cat([t[0] for t in teachers], dim=-1)
    valid = torch.cat([t[2] for t in teachers], dim=-1)
    same = (ids.unsqueeze(-1) == ids.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)  # [B, T, U, U]
    earlier = torch.ones(same.shape[-2:], dtype=torch.bool).tril(-1)  # [u, e]: entry e comes before slot u
    first = valid & ~(same & earlier).any(-1)
    total = torch.zeros(ids.shape, dtype=torch.bfloat16)
    for c, (teacher_ids, probs, mask) in enumerate(teachers):
        # The teacher's probability at each union id (0 where it has none; at most one match per list).
        match = (ids.unsqueeze(-1) == teacher_ids.unsqueeze(-2)) & mask.unsqueeze(-2)
        at_union = (match * probs.unsqueeze(-2)).sum(-1).to(torch.bfloat16)
        total = total + weights[:, c, None, None] * at_union  # each product and sum rounded to bf16
    return torch.where(first, ids, 0), total.float().masked_fill(~first, 0.0), first


def distill_weight(fusion_type: str, lm_loss_weight: float, global_step: int = 0, max_steps: int = 1,
                   reward: torch.Tensor | None = None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """(LM weight, distill weight) of the combined loss for one micro-batch.

    hard: (lambda, 1 - lambda); hard_and_decay: lambda' = lambda + (1 - lambda) * step / max_steps;
    soft: (bf16(1 - r), r) with the row's reward r (batch size 1).
    """
    if fusion_type == "hard":
        return lm_loss_weight, 1.0 - lm_loss_weight
    if fusion_type == "hard_and_decay":
        decayed = lm_loss_weight + (1.0 - lm_loss_weight) * global_step / max(max_steps, 1)
        return decayed, 1.0 - decayed
    if fusion_type == "soft":
        r = reward.reshape(())
        return (1 - r).float(), r.float()
    raise InputError(f"unknown fusion type {fusion_type!r}; choose from {', '.join(FUSION_TYPES)}")
