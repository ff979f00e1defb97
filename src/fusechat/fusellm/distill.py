"""FuseLLM's teacher choice, targets and loss weighting (docs/design.md 12.6.3, 12.6.4), as pure tensor functions.

A packed row has the pivot (its own top-k) and any number of sources 0, 1, 2, ... (their aligned
top-k, columns ``*_<k>``) as teachers, in this fixed candidate order (the release: pivot, source 0,
source 1). Each teacher's distribution at a position is
``bf16(softmax(bf16(bf16(logits) / T)))`` over its list, zero elsewhere; the reference writes it
into a dense [B, 2048, V] bf16 tensor, we keep the list ([B, T, K] ids and probabilities), which
gives the same loss.

Rewards per row: ``bf16(1 / bf16(exp(bf16(metric_ce))))``. The row's target follows a teacher rule
of :mod:`fusechat.kernels.teacher_rules` (its weights over the candidates):

- ``greater`` (MinCE, ``--distill_greater_as_gt``): the candidate with the largest reward, the
  first in candidate order on ties; without the pivot the last tied source (the release: source 0
  only if its reward is strictly larger);
- ``weighted`` (``--distill_weighted_as_gt``): sum_X w_X * dist_X with w = bf16(softmax(rewards)),
  summed left to right in candidate order, every product and partial sum rounded to bf16.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from numba import njit

from ..errors import InputError
from ..kernels.teacher_rules import MINCE, TEACHER_RULES, WEIGHTED, TeacherRule, ce_rewards

PIVOT = "pivot"
FUSION_MODES = ("greater", "weighted")
FUSION_TYPES = ("hard", "hard_and_decay", "soft")
RULE_OF_MODE: dict[str, TeacherRule] = {"greater": MINCE, "weighted": WEIGHTED}
SOURCE_METRIC = re.compile(r"metric_ce_aligned_(\d+)")


def teacher_columns(teacher: str) -> tuple[str, str, str]:
    """(logits, ids, metric) column names of ``pivot`` or source ``"0"``, ``"1"``, ``"2"``, ..."""
    if teacher == PIVOT:
        return "per_step_logits", "per_step_indices", "metric_ce"
    return f"per_step_aligned_logits_{teacher}", f"per_step_aligned_indices_{teacher}", f"metric_ce_aligned_{teacher}"


def teacher_name(teacher: str) -> str:
    """For messages: ``pivot``, ``source 0``, ..."""
    return "pivot" if teacher == PIVOT else f"source {teacher}"


def teacher_key(teacher: str) -> str:
    """For logs and metrics: ``pivot``, ``source_0``, ... (the release's ``share_source_0`` keys)."""
    return "pivot" if teacher == PIVOT else f"source_{teacher}"


def teacher_index(teacher: str) -> int:
    """The number ``teacher_choice`` reports: 0 for the pivot, k + 1 for source k."""
    return 0 if teacher == PIVOT else int(teacher) + 1


def source_teachers(column_names) -> tuple[str, ...]:
    """The sources a set holds (a ``metric_ce_aligned_<k>`` column each), in index order."""
    found = (SOURCE_METRIC.fullmatch(name) for name in column_names)
    return tuple(str(k) for k in sorted(int(m.group(1)) for m in found if m))


def teacher_rewards(metrics) -> torch.Tensor:
    """[B, C] bf16 rewards from [B, C] metric CEs (float64 metrics pass through float32 first)."""
    return ce_rewards(np.asarray(metrics, dtype=np.float64).astype(np.float32))


def fusion_rule(mode: str) -> TeacherRule:
    """The teacher rule of a fusion mode: the release's ``greater`` / ``weighted``, or any registered
    rule by its name (:data:`fusechat.kernels.teacher_rules.TEACHER_RULES`)."""
    rule = RULE_OF_MODE.get(mode) or TEACHER_RULES.get(mode)
    if rule is None:
        known = dict.fromkeys([*FUSION_MODES, *TEACHER_RULES])
        raise InputError(f"unknown fusion mode {mode!r}; choose from {', '.join(known)}")
    return rule


def mince_choice(row_rewards: torch.Tensor, pivot_is_candidate: bool) -> torch.Tensor:
    """[B] index (into the candidates) of each row's MinCE teacher: where its one-hot weight is."""
    if row_rewards.shape[-1] == 0:
        raise InputError("--distill_greater_as_gt needs at least one teacher")
    return torch.argmax(MINCE.weights(row_rewards, pivot_is_candidate), dim=-1)


def round_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32 (a new array)."""
    out = np.array(values, dtype=np.float32)
    _round_bf16_in_place(out.reshape(-1))
    return out


@njit(cache=True, nogil=True, inline="always")
def _bf16(x):
    """A float32 rounded to the nearest bfloat16 (ties to even), as float32: on its bits."""
    bits = np.float32(x).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return np.uint32(rounded).view(np.float32)


@njit(cache=True, nogil=True)
def _round_bf16_in_place(x):
    for i in range(x.shape[0]):
        x[i] = _bf16(x[i])


def teacher_logits(values: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """bf16(bf16(values) / T) as float32: the logits each teacher's bf16 softmax sees."""
    x = round_bf16(values)
    return x if temperature == 1.0 else round_bf16(x / np.float32(temperature))  # bf16(x / 1) is x


def teacher_probabilities(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """bf16(softmax(x)) over each list's valid entries, in place: [..., K] float32 teacher logits
    (:func:`teacher_logits`) become probabilities (bf16 values; 0 where ``mask`` is off). Returns x.

    The softmax runs in float32, as torch's bf16 softmax does internally: subtract the list's
    maximum, exp, divide by the sum taken in list order. The exp is numpy's vectorised one; the
    passes along each list are compiled loops (numpy reductions over lists of 10 cost 10x more).
    exp implementations differ in the last float32 bit (numpy's, glibc's, torch's CPU and CUDA
    kernels), which moves the bf16 rounding of about 1 entry in 200,000 by one bf16 step.
    """
    flat = x.reshape(-1, x.shape[-1])
    _subtract_list_max(flat, mask.reshape(flat.shape))
    np.exp(flat, out=flat)
    _divide_by_list_sum_bf16(flat)
    return x


@njit(cache=True, nogil=True)
def _subtract_list_max(x, mask):
    """Per row: x - max over the valid entries; -inf (exp: 0) where ``mask`` is off.

    The mask goes first in one flat pass, so that the loops along each list are plain max and
    subtract loops, which compile to vector code."""
    flat_x, flat_mask = x.reshape(-1), mask.reshape(-1)
    for i in range(flat_x.shape[0]):
        if not flat_mask[i]:
            flat_x[i] = -np.inf
    for p in range(x.shape[0]):
        top = np.float32(-np.inf)
        for j in range(x.shape[1]):
            top = max(top, x[p, j])
        if top > -np.inf:  # a row without a valid entry stays -inf
            for j in range(x.shape[1]):
                x[p, j] -= top


@njit(cache=True, nogil=True)
def _divide_by_list_sum_bf16(e):
    """Per row: bf16(e / (sum of e in order)); rows without a valid entry (sum 0) stay 0."""
    for p in range(e.shape[0]):
        total = np.float32(0.0)
        for j in range(e.shape[1]):
            total += e[p, j]
        if total > 0:
            for j in range(e.shape[1]):
                e[p, j] /= total
    _round_bf16_in_place(e.reshape(-1))


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
    Returns (ids, probs, mask) [B, T, U], U the largest union of the batch: every id of a position
    once, in order of first appearance; its value is bf16(...bf16(bf16(w_0 p_0) + bf16(w_1 p_1)) + ...),
    with p_X = 0 for a teacher that lacks the id (adding 0 changes nothing, so this is the dense sum
    at that id, and a teacher adds only its own ids).
    """
    width = sum(ids.shape[-1] for ids, _, _ in teachers)
    b, t = teachers[0][0].shape[:2]
    ids, total = np.zeros((b, t, width), np.int64), np.zeros((b, t, width), np.float32)
    used = np.zeros((b, t), np.int64)
    w = weights.float().numpy()
    for c, (teacher_ids, probs, mask) in enumerate(teachers):
        _add_weighted_teacher(np.ascontiguousarray(w[:, c]), teacher_ids, probs, mask, ids, total, used)
    width = max(1, int(used.max(initial=0)))
    valid = np.arange(width) < used[..., None]
    return np.ascontiguousarray(ids[..., :width]), np.ascontiguousarray(total[..., :width]), valid


@njit(cache=True, nogil=True)
def _add_weighted_teacher(w, teacher_ids, probs, mask, ids, total, used):
    """Add w[b] * (one teacher's lists) to each position's union of ``used`` slots:
    total = bf16(total + bf16(w p)) at the id's slot, a new slot for an id not seen before."""
    for b in range(teacher_ids.shape[0]):
        for t in range(teacher_ids.shape[1]):
            row_ids, row_total = ids[b, t], total[b, t]
            earlier = n = used[b, t]  # a teacher's own ids are distinct: only earlier teachers' slots can match
            for k in range(teacher_ids.shape[2]):
                if not mask[b, t, k]:
                    continue
                token = teacher_ids[b, t, k]
                slot = 0  # 1 + the matching slot; a sum without branches (at most one slot matches): vector code
                for s in range(earlier):
                    slot += (row_ids[s] == token) * (s + 1)
                if slot == 0:
                    row_ids[n] = token
                    n += 1
                    slot = n
                row_total[slot - 1] = _bf16(row_total[slot - 1] + _bf16(w[b] * probs[b, t, k]))
            used[b, t] = n


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
