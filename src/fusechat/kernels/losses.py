"""The training losses of both wings (docs/design.md 8, 12.6.4), as pure tensor functions.

The reference builds dense [batch, length, vocab] target distributions and takes a full-vocabulary
cross-entropy. A target is non-zero only on its top-k ids, so the same loss is

    CE = -sum_k p_k * log_softmax(student)[id_k]
    KL = sum_k p_k * (log p_k - log_softmax(student)[id_k])

with p = softmax(target logits / temperature) over the list: a gather of k student log-probabilities
per position instead of a [vocab]-wide product. ``log_probs`` (the student's log-softmax) is
computed once by the caller and shared with the LM loss; :func:`lm_and_distill_losses` takes both
losses from one gather, so the backward pass scatters into one [B, T, V] gradient, not two.

The target probabilities come from the caller: FuseChat's ``softmax(logits / T)`` over each list
(:func:`target_probabilities`), FuseLLM's bf16 teacher mixture. Averaging: means over positions,
all rows pooled (a long row weighs more than a short one, as in the reference); the LM loss over
the positions t whose next label ``labels[t + 1]`` is not -100, the distill loss over the same
positions by default (FuseChat) or over a mask the caller gives (FuseLLM: the attention mask). A
batch without such positions gives 0, not NaN. FuseLLM's KL rounds its entropy term to bf16
(``entropy_dtype``).
"""

from __future__ import annotations

import torch

from ..schema import IGNORE_INDEX


def next_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: position t predicts a labelled token (labels[t + 1] != -100); the last never does."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the True positions of ``mask``, pooled over the batch (0 if none)."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1).to(values.dtype)


def next_token_ids(labels: torch.Tensor) -> torch.Tensor:
    """[B, T]: the label each position predicts (labels[t + 1]; -100 and the last position as 0)."""
    next_ids = torch.zeros_like(labels)
    next_ids[:, :-1] = labels[:, 1:].clamp_min(0)
    return next_ids


def lm_loss(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, the mean over labelled next tokens of the batch."""
    # Gathered from the whole [B, T, V] tensor (not a shifted view): its gradient is one buffer.
    nll = -log_probs.gather(-1, next_token_ids(labels).unsqueeze(-1)).squeeze(-1)
    return masked_mean(nll, next_label_mask(labels))


def target_probabilities(target_logits: torch.Tensor, target_mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / temperature) over the valid entries of each [.., K] list; 0 on the others.

    A position with no valid entry (padding) gets all zeros.
    """
    scaled = (target_logits / temperature).masked_fill(~target_mask, float("-inf"))
    return torch.softmax(scaled, dim=-1).masked_fill(~target_mask, 0.0)


def target_entropy_terms(probs: torch.Tensor, entropy_dtype: torch.dtype | None = None) -> torch.Tensor:
    """q * log q per entry (0 where q = 0); with ``entropy_dtype``, log q and the product are each
    rounded to that dtype (FuseLLM's bf16 KL term, docs/design.md 12.6.4)."""
    if entropy_dtype is None:
        return torch.special.xlogy(probs, probs)
    q = probs.to(entropy_dtype)
    return torch.where(q > 0, q * torch.log(q), torch.zeros_like(q)).to(probs.dtype)


def distill_per_position(student: torch.Tensor, probs: torch.Tensor, target_mask: torch.Tensor,
                         loss_type: str = "ce", entropy_dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B, T] CE (or KL) toward sparse targets: ``probs`` [B, T, K] at the ids where ``student`` was gathered."""
    # Padding slots point at id 0; zero them so that a -inf log-prob there cannot make 0 * inf.
    per_position = -(probs * student.masked_fill(~target_mask, 0.0)).sum(-1)
    if loss_type == "kl":
        per_position = per_position + target_entropy_terms(probs, entropy_dtype).sum(-1)
    elif loss_type != "ce":
        raise ValueError(f"unknown fuse loss type {loss_type!r}")
    return per_position


def distill_loss(log_probs: torch.Tensor, target_ids: torch.Tensor, target_probs: torch.Tensor,
                 target_mask: torch.Tensor, position_mask: torch.Tensor, loss_type: str = "ce",
                 entropy_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean over ``position_mask`` [B, T] of the CE (or KL) toward sparse targets.

    log_probs: [B, T, V] student log-softmax. target_ids, target_probs, target_mask: [B, T, K] (ids
    within a list distinct, probabilities 0 where the mask is off). loss_type: "ce" or "kl".
    """
    return _distill_from_gathered(log_probs.gather(-1, target_ids), target_probs, target_mask, position_mask,
                                  loss_type, entropy_dtype)


def _distill_from_gathered(student, target_probs, target_mask, position_mask, loss_type, entropy_dtype):
    per_position = distill_per_position(student, target_probs.to(student.dtype), target_mask, loss_type,
                                        entropy_dtype)
    return masked_mean(per_position, position_mask)


def lm_and_distill_losses(log_probs: torch.Tensor, labels: torch.Tensor, target_ids: torch.Tensor,
                          target_probs: torch.Tensor, target_mask: torch.Tensor,
                          distill_mask: torch.Tensor | None = None, loss_type: str = "ce",
                          entropy_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`lm_loss`, :func:`distill_loss`) from a single gather of ``log_probs``.

    The distill loss averages over ``distill_mask`` [B, T], by default the LM loss's positions.
    """
    gathered = log_probs.gather(-1, torch.cat([target_ids, next_token_ids(labels).unsqueeze(-1)], dim=-1))
    lm = masked_mean(-gathered[..., -1], next_label_mask(labels))
    distill = _distill_from_gathered(gathered[..., :-1], target_probs, target_mask,
                                     next_label_mask(labels) if distill_mask is None else distill_mask,
                                     loss_type, entropy_dtype)
    return lm, distill


def weighted_loss(lm: torch.Tensor, distill: torch.Tensor, lm_loss_weight: float) -> torch.Tensor:
    """lambda * LM + (1 - lambda) * distill."""
    return lm_loss_weight * lm + (1.0 - lm_loss_weight) * distill
