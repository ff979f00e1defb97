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
from numba import njit

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


def round_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32 (a new array)."""
    out = np.array(values, dtype=np.float32)
    _round_bf16_in_place(out.reshape(-1).view(np.uint32))
    return out


@njit(cache=True, nogil=True, inline="always")
def _bf16_bits(bits):
    """float32 bits rounded to the nearest bfloat16 (ties to even), as float32 bits."""
    return (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


@njit(cache=True, nogil=True)
def _round_bf16_in_place(bits):
    for i in range(bits.shape[0]):
        bits[i] = _bf16_bits(bits[i])


def teacher_probabilities(logits: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """bf16(softmax(bf16(bf16(logits) / T))) over each list's valid entries (float32, bf16 values; 0 elsewhere).

    The softmax runs in float32, as torch's bf16 softmax does internally: subtract the list's
    maximum, exp, divide by the sum taken in list order. The exp is numpy's vectorised one; the
    passes along each list are compiled loops (numpy reductions over lists of 10 cost 10x more).
    Float32 values are handled as their bits where they are rounded to bf16 (``bits`` views).
    exp implementations differ in the last float32 bit (numpy's, glibc's, torch's CPU and CUDA
    kernels), which moves the bf16 rounding of about 1 entry in 200,000 by one bf16 step.
    """
    x = np.array(logits, dtype=np.float32).reshape(-1, logits.shape[-1])
    _bf16_minus_list_max(x, x.view(np.uint32), mask.reshape(x.shape), np.float32(temperature))
    np.exp(x, out=x)
    _divide_by_list_sum_bf16(x, x.view(np.uint32))
    return x.reshape(logits.shape)


@njit(cache=True, nogil=True)
def _bf16_minus_list_max(x, bits, mask, temperature):
    """Per row: y = bf16(bf16(x) / T) where ``mask`` is set, then y - max(y); -inf (exp: 0) elsewhere."""
    for p in range(x.shape[0]):
        top = np.float32(-np.inf)
        for j in range(x.shape[1]):
            if mask[p, j]:
                bits[p, j] = _bf16_bits(bits[p, j])
                if temperature != 1:  # bf16(y / 1) is y
                    x[p, j] = x[p, j] / temperature
                    bits[p, j] = _bf16_bits(bits[p, j])
                if x[p, j] > top:
                    top = x[p, j]
        for j in range(x.shape[1]):
            x[p, j] = x[p, j] - top if mask[p, j] else np.float32(-np.inf)


@njit(cache=True, nogil=True)
def _divide_by_list_sum_bf16(e, bits):
    """Per row: bf16(e / (sum of e in order)); rows without a valid entry (sum 0) stay 0."""
    for p in range(e.shape[0]):
        total = np.float32(0.0)
        for j in range(e.shape[1]):
            total += e[p, j]
        for j in range(e.shape[1]):
            if total > 0:
                e[p, j] = e[p, j] / total
            bits[p, j] = _bf16_bits(bits[p, j])


def select_rows(choice: np.ndarray, teachers: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Per row b, the (ids, probs, mask) of teacher ``choice[b]``; lists padded to a common width."""
    width = max(ids.shape[-1] for ids, _, _ in teachers)
    rows = np.arange(len(choice))
    out = []
    for part in range(3):
        stacked = np.stack([np.pad(t[part], ((0, 0), (0, 0), (0, width - t[part].shape[-1]))) for t in teachers])
        out.append(stacked[choice, rows])  # [C, B, T, K] -> [B, T, K]
    return tuple(out)


def weighted_union(weights: torch.Tensor, teachers: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Sparse form of sum_X w_X * dist_X (bf16, left to right in candidate order).

    weights: [B, C] bf16; teachers: C x (ids, probs, mask) of [B, T, K_X] with distinct ids per list.
    Returns (ids, probs, mask) [B, T, sum K_X]: every id of a position once, in order of first
    appearance; its value is bf16(...bf16(bf16(w_0 p_0) + bf16(w_1 p_1)) + ...), with p_X = 0 for a
    teacher that lacks the id (adding 0 changes nothing, so this is the dense sum at that id).
    """
    width = sum(ids.shape[-1] for ids, _, _ in teachers)
    b, t = teachers[0][0].shape[:2]
    ids = np.zeros((b, t, width), np.int64)
    valid = np.zeros((b, t, width), bool)
    at_union = np.zeros((len(teachers), b, t, width), np.float32)  # each teacher's probability at each slot
    for c, (teacher_ids, probs, mask) in enumerate(teachers):
        _merge_lists(teacher_ids.astype(np.int64, copy=False), probs, mask, ids, valid, at_union[c])
    w = weights.float().numpy()
    total = np.zeros((b, t, width), np.float32)
    for c in range(len(teachers)):
        total = round_bf16(total + round_bf16(w[:, c, None, None] * at_union[c]))
    return ids, np.where(valid, total, np.float32(0.0)), valid


@njit(cache=True, nogil=True)
def _merge_lists(teacher_ids, probs, mask, ids, valid, out):
    """Add one teacher's lists to the per-position union (ids, valid); its probabilities go to ``out``."""
    for b in range(teacher_ids.shape[0]):
        for t in range(teacher_ids.shape[1]):
            for k in range(teacher_ids.shape[2]):
                if not mask[b, t, k]:
                    continue
                slot = 0
                while slot < ids.shape[2] and valid[b, t, slot] and ids[b, t, slot] != teacher_ids[b, t, k]:
                    slot += 1
                if not valid[b, t, slot]:
                    ids[b, t, slot] = teacher_ids[b, t, k]
                    valid[b, t, slot] = True
                out[b, t, slot] = probs[b, t, k]


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
