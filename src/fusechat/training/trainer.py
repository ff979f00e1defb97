"""The Trainer of --do_fuse: the standard ``transformers.Trainer`` plus the fuse loss (docs/design.md 8).

Only the loss changes: the student's log-softmax is computed once and serves both the LM loss and
the sparse fuse loss; loss = lm_loss_weight * LM + (1 - lm_loss_weight) * fuse. Both are means
over one micro-batch, as in the reference, so the Trainer divides them by the gradient
accumulation steps. Everything else (FSDP, bf16, gradient checkpointing, checkpoints) is the
Trainer's own code path.

Logged next to ``loss`` at every logging step: ``lm_loss`` and ``fuse_loss`` (means over the
micro-batches since the last log, averaged over processes) and ``source_share`` (the share of
conversations whose target was the source's distribution).
"""

from __future__ import annotations

import torch
from transformers import Trainer

from ..kernels.losses import weighted_loss
from .fuse_loss import lm_and_fuse_losses

TARGET_KEYS = ("target_logits", "target_ids", "target_mask", "source_chosen")


class MicroBatchMeanTrainer(Trainer):
    """The Trainer with the released loss scaling (transformers 4.39): the loss is the mean over the
    labelled tokens of one micro-batch, divided by the gradient-accumulation steps, so every
    micro-batch weighs the same. transformers 5 instead divides the token sum of the whole
    accumulation window by its token count (long micro-batches weigh more). Used for plain SFT and
    --train_baseline; FuseTrainer builds on it."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The model then averages its LM loss over the micro-batch (no num_items_in_batch passed in).
        self.model_accepts_loss_kwargs = False


class FuseTrainer(MicroBatchMeanTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # lm sum, fuse sum, micro-batches, conversations that took the source, conversations
        self._fuse_stats: torch.Tensor | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        target_logits, target_ids, target_mask, source_chosen = (inputs.pop(k) for k in TARGET_KEYS)
        outputs = model(**inputs)
        log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)
        lm, fuse = lm_and_fuse_losses(log_probs, labels, target_logits, target_ids, target_mask,
                                      self.args.fuse_temperature, self.args.fuse_loss_type)
        loss = weighted_loss(lm, fuse, self.args.lm_loss_weight)
        if model.training:
            self._record(lm, fuse, source_chosen)
        return (loss, outputs) if return_outputs else loss

    def _record(self, lm: torch.Tensor, fuse: torch.Tensor, source_chosen: torch.Tensor) -> None:
        # Kept on the loss's device: no synchronisation until the next log.
        if self._fuse_stats is None:
            self._fuse_stats = torch.zeros(5, dtype=torch.float64, device=lm.device)
        ones = torch.ones((), dtype=torch.float64, device=lm.device)
        self._fuse_stats += torch.stack([lm.detach().double(), fuse.detach().double(), ones,
                                         source_chosen.sum().double(), ones * source_chosen.numel()])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._fuse_stats is not None:  # a training-step log: every process is here
            stats = self.accelerator.reduce(self._fuse_stats, reduction="sum")
            lm_sum, fuse_sum, batches, from_source, conversations = stats.tolist()
            logs.update(lm_loss=lm_sum / batches, fuse_loss=fuse_sum / batches,
                        source_share=from_source / max(conversations, 1.0))
            self._fuse_stats = None
        super().log(logs, start_time)
