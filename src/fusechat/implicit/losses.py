"""The preference losses of FuseChat-3.0 and WRPO (docs/design.md 13.3, 13.4, 13.8), as pure functions.

Every argument is a summed log-probability of a response under the policy (``policy_*``) or the
frozen reference (``ref_*``), one value per row; each function returns the per-row loss, which the
trainers average over the batch. They take and return torch tensors and hold no state, so that a
kernel layer can replace them one for one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """-log sigma(beta * (u(chosen) - u(rejected))), u(y) = log pi(y|x) - log pi_ref(y|x)."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def ln_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, len_chosen, len_rejected,
                beta: float):
    """DPO with each log-ratio divided by its response length in tokens (FuseChat-3.0's Llama runs)."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) / len_chosen
                                 - (policy_rejected - ref_rejected) / len_rejected))


def wrpo_alpha(step: int, total_steps: int, alpha_end: float, dynamic: bool = True) -> float:
    """alpha at optimizer step ``step``: a linear ramp from 0 to ``alpha_end`` over ``total_steps``,
    then ``alpha_end``; constant ``alpha_end`` when not ``dynamic`` (the released LinearDecayScheduler)."""
    if not dynamic or total_steps <= 0 or step > total_steps:
        return float(alpha_end)
    return alpha_end * step / total_steps


def wrpo_loss(policy_ws, policy_wt, policy_l, ref_ws, ref_wt, ref_l, beta: float, alpha: float):
    """-log sigma(beta * (alpha u(y_ws) + (1 - alpha) u(y_wt) - u(y_l))): the best source response
    y_ws and the target's own best sample y_wt, weighted by alpha, against its worst sample y_l."""
    chosen = alpha * (policy_ws - ref_ws) + (1.0 - alpha) * (policy_wt - ref_wt)
    return -F.logsigmoid(beta * (chosen - (policy_l - ref_l)))


def multi_positive_dpo_loss(policy_ws, policy_wt, policy_l, ref_ws, ref_wt, ref_l, beta: float):
    """The released ``loss_type: sigmoid`` baseline: the mean of DPO(y_ws > y_l) and DPO(y_wt > y_l)."""
    return 0.5 * (dpo_loss(policy_ws, policy_l, ref_ws, ref_l, beta)
                  + dpo_loss(policy_wt, policy_l, ref_wt, ref_l, beta))


def rewards(policy, ref, beta: float):
    """The implicit reward beta * u(y) that the trainers log."""
    return beta * (policy - ref)
