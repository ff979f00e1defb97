"""FuseChat's training losses (docs/design.md 8) from the kernels: the fuse target is softmax(logits / T)
over each top-k list, and both losses average over the positions whose next label is kept."""

from __future__ import annotations

import torch

from ..kernels.losses import lm_and_distill_losses, target_probabilities


def lm_and_fuse_losses(log_probs: torch.Tensor, labels: torch.Tensor, target_logits: torch.Tensor,
                       target_ids: torch.Tensor, target_mask: torch.Tensor, temperature: float = 1.0,
                       loss_type: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
    """(LM loss, fuse loss) of a batch from the student's log-softmax [B, T, V] and the collator's
    [B, T, K] targets; loss_type "ce" or "kl"."""
    probs = target_probabilities(target_logits.to(log_probs.dtype), target_mask, temperature)
    return lm_and_distill_losses(log_probs, labels, target_ids, probs, target_mask, loss_type=loss_type)
