"""Teacher rules: per row, the candidates' rewards become weights over the candidates (docs/design.md 12.6.3).

A row (a packed FuseLLM row) has C >= 1 candidate teachers in a fixed candidate order, each with a
reward r = bf16(1 / bf16(exp(bf16(CE)))), so a lower CE is a larger reward. A rule maps the [B, C]
bf16 rewards to [B, C] bf16 weights; the row's distillation target is sum_X w_X * dist_X. Rules:

- ``mince`` (MinCE, FuseLLM's ``--distill_greater_as_gt``): one-hot on the candidate with the largest
  reward. Ties go to the first candidate in order when the pivot is a candidate (pivot, then the
  sources in order). Without the pivot they go to the *last* tied source: the reference compares two
  sources with a strict ``reward_0 > reward_1`` and otherwise takes source 1; the last maximum is
  that rule for any number of sources.
- ``weighted`` (``--distill_weighted_as_gt``): w = bf16(softmax(rewards)) computed in float32, i.e.
  w_X proportional to exp(exp(-CE_X)), as the reference computes its "AvgCE" variant.

Each rule also gives the row reward r of FuseLLM's ``soft`` loss types (loss = (1 - r) LM + r distill):
the largest reward (mince) or the bf16 mean of the rewards (weighted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def ce_rewards(metric_ce) -> torch.Tensor:
    """exp(-ce) as the reference computes it: 1 / exp(ce) in bfloat16 (so near-equal CEs tie)."""
    ce = torch.tensor(np.asarray(metric_ce)).to(torch.bfloat16)
    return torch.reciprocal(torch.exp(ce))


@dataclass(frozen=True)
class TeacherRule:
    name: str
    summary: str
    min_candidates: int
    one_hot: bool  # every row's weights pick exactly one candidate
    weights: Callable[[torch.Tensor, bool], torch.Tensor]  # (rewards [B, C] bf16, pivot_is_candidate) -> [B, C] bf16
    row_reward: Callable[[torch.Tensor], torch.Tensor]  # rewards [B, C] bf16 -> [B] bf16

    def check(self, rewards: torch.Tensor) -> torch.Tensor:
        if rewards.dim() != 2:
            raise ValueError(f"teacher rule {self.name}: rewards must be [rows, candidates], got {tuple(rewards.shape)}")
        if rewards.shape[-1] < self.min_candidates:
            raise ValueError(f"teacher rule {self.name} needs at least {self.min_candidates} candidate(s), "
                             f"got {rewards.shape[-1]}")
        return rewards


def mince_choice(rewards: torch.Tensor, pivot_is_candidate: bool) -> torch.Tensor:
    """[B] index of each row's MinCE teacher: the first maximum with the pivot among the candidates,
    else the last one."""
    if pivot_is_candidate:
        return torch.argmax(rewards, dim=-1)  # the first maximum
    count = rewards.shape[-1]
    return count - 1 - torch.argmax(rewards.flip(-1), dim=-1)  # the last maximum


def _mince_weights(rewards: torch.Tensor, pivot_is_candidate: bool) -> torch.Tensor:
    choice = mince_choice(MINCE.check(rewards), pivot_is_candidate)
    return torch.nn.functional.one_hot(choice, rewards.shape[-1]).to(torch.bfloat16)


def _weighted_weights(rewards: torch.Tensor, pivot_is_candidate: bool) -> torch.Tensor:
    return torch.softmax(WEIGHTED.check(rewards).float(), dim=-1).to(torch.bfloat16)


MINCE = TeacherRule("mince", "one-hot on the largest reward (lowest CE)", 1, True, _mince_weights,
                    lambda rewards: rewards.max(dim=-1).values)
WEIGHTED = TeacherRule("weighted", "bf16 softmax over the rewards", 2, False, _weighted_weights,
                       lambda rewards: rewards.mean(dim=-1))
TEACHER_RULES = {rule.name: rule for rule in (MINCE, WEIGHTED)}


def teacher_rule(name: str) -> TeacherRule:
    try:
        return TEACHER_RULES[name]
    except KeyError:
        raise ValueError(f"unknown teacher rule {name!r}; choose from {', '.join(TEACHER_RULES)}") from None
