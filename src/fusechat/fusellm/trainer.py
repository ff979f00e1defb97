"""FuseLLM's Trainer (docs/design.md 12.6.4, 12.6.5): the standard ``transformers.Trainer`` with the distill loss.

Per micro-batch: the student's log-softmax (float32) is computed once; the LM loss is the mean
next-token CE over labelled next tokens, the distill loss the mean CE (or KL) toward the sparse
target over the attention mask (the last real position of each row included), both from one
gather (:func:`fusechat.kernels.losses.lm_and_distill_losses` with FuseLLM's parameters). The
two are weighted by the fusion type (hard, hard_and_decay, soft); each micro-batch loss is a mean,
which the Trainer divides by the accumulation steps, as in the reference.

Optimizer and schedule: unless ``--paper_optimizer``, what the released DeepSpeed config ran
(:mod:`fusechat.fusellm.schedule`); under DeepSpeed the config itself builds them.

Logged next to ``loss``: ``lm_loss``, ``distill_loss`` and, for MinCE, the share of rows whose
target each candidate teacher gave, keyed by teacher (``share_pivot``, ``share_source_0``,
``share_source_1``, ... one per candidate).
"""

from __future__ import annotations

import torch
from transformers import Trainer

from ..kernels.losses import lm_and_distill_losses, lm_loss
from .collator import PUBLISHED_CANDIDATES, TARGET_KEYS
from .distill import distill_weight, teacher_index, teacher_key
from .schedule import deepspeed_adamw, warmup_decay_scheduler


def share_name(teacher: str) -> str:
    return f"share_{teacher_key(teacher)}"


class DistillTrainer(Trainer):
    loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean

    def __init__(self, *args, fusion_mode: str | None = None, fusion_type: str = "hard",
                 released_optimizer: bool = True, candidates: tuple[str, ...] = PUBLISHED_CANDIDATES, **kwargs):
        super().__init__(*args, **kwargs)
        self.fusion_mode = fusion_mode
        self.fusion_type = fusion_type
        self.released_optimizer = released_optimizer
        self.candidates = tuple(candidates)
        # teacher_choice -> position among the candidates (the collator reports teacher_index)
        self._win_slot = torch.full((1 + max(map(teacher_index, self.candidates), default=0),), -1)
        for slot, teacher in enumerate(self.candidates):
            self._win_slot[teacher_index(teacher)] = slot
        # lm sum, distill sum, micro-batches, rows won per candidate
        self._distill_stats: torch.Tensor | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        targets = {key: inputs.pop(key) for key in TARGET_KEYS if key in inputs}
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)
        lambda_ = self.args.lm_loss_weight
        if self.fusion_mode is None:  # CLM; --do_distill without a fusion flag gives lambda * LM, as the reference
            lm = lm_loss(log_probs, labels)
            distill = torch.zeros_like(lm)
            loss = lambda_ * lm if self.args.do_distill else lm
        else:
            lm, distill = lm_and_distill_losses(
                log_probs, labels, targets["target_ids"], targets["target_probs"], targets["target_mask"],
                distill_mask=inputs["attention_mask"].bool(), loss_type=self.args.distill_loss_type,
                entropy_dtype=torch.bfloat16)
            lm_weight, distill_weight_ = distill_weight(self.fusion_type, lambda_, self.state.global_step,
                                                        self.state.max_steps, targets["teacher_reward"])
            loss = lm_weight * lm + distill_weight_ * distill
        if model.training:
            self._record(lm, distill, targets.get("teacher_choice"))
        return (loss, outputs) if return_outputs else loss

    def _record(self, lm: torch.Tensor, distill: torch.Tensor, choice: torch.Tensor | None) -> None:
        count = len(self.candidates)
        if self._distill_stats is None:
            self._distill_stats = torch.zeros(3 + count, dtype=torch.float64, device=lm.device)
        wins = torch.zeros(count, dtype=torch.float64, device=lm.device)
        if choice is not None:
            chosen = self._win_slot[choice[choice >= 0].cpu()].to(lm.device)
            wins += torch.bincount(chosen, minlength=count).double()
        ones = torch.ones(1, dtype=torch.float64, device=lm.device)
        self._distill_stats += torch.cat([lm.detach().double().reshape(1), distill.detach().double().reshape(1),
                                          ones, wins])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._distill_stats is not None:  # a training-step log: every process is here
            stats = self.accelerator.reduce(self._distill_stats, reduction="sum").tolist()
            lm_sum, distill_sum, batches, *wins = stats
            logs.update(lm_loss=lm_sum / batches, distill_loss=distill_sum / batches)
            if sum(wins):
                logs.update({share_name(t): count / sum(wins) for t, count in zip(self.candidates, wins)})
            self._distill_stats = None
        super().log(logs, start_time)

    # ---- the released optimizer and schedule (12.6.5) ----------------------------------------------

    def create_optimizer(self, model=None):
        if not self.released_optimizer or self.optimizer is not None:
            return super().create_optimizer(model)
        self.optimizer = deepspeed_adamw(self.model if model is None else model, self.args.learning_rate,
                                         self.args.weight_decay)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.released_optimizer or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = warmup_decay_scheduler(optimizer or self.optimizer,
                                                   max(1, self.args.get_warmup_steps(num_training_steps)),
                                                   num_training_steps)
        self._created_lr_scheduler = True
        return self.lr_scheduler
