"""WRPO training (docs/design.md 13.4): a ``transformers.Trainer`` around the pure loss of :mod:`.losses`.

Each row holds three responses to one prompt: y_ws (the best source response), y_wt and y_l (the
target-SFT model's best and worst samples). A batch of B rows becomes 3B sequences [ws; wt; l]; one
policy forward and one no-grad reference forward give each response's summed log-probability over
its completion tokens, and the loss mixes u(y_ws) and u(y_wt) with alpha, ramped from 0 to
``alpha`` over the run's optimizer steps (``is_dynamic``).

Rendering (``suffix``, as TRL does): the prompt with the generation prompt, and prompt + response,
are both rendered with the tokenizer's chat template; the response's tokens are what follows the
shared prefix. Truncation: when prompt + the longest response exceed ``max_length``, the prompt keeps
its last ``max_prompt_length`` tokens and each response is cut to what is left (``default``), or, as
the released trainer, every response is cut to ``max_length - max_prompt_length`` (``reference``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from transformers import Trainer

from ..errors import InputError
from . import losses
from .rendering import prompt_and_replies

logger = logging.getLogger(__name__)
RESPONSES = ("chosen_source", "chosen_target", "rejected")  # y_ws, y_wt, y_l, in batch order
LOSS_TYPES = ("wrpo", "sigmoid")
TRUNCATIONS = ("default", "reference")


@dataclass(frozen=True)
class WRPOSettings:
    beta: float = 0.01
    alpha: float = 0.1
    is_dynamic: bool = True
    loss_type: str = "wrpo"
    max_length: int = 2048
    max_prompt_length: int = 1800
    truncation: str = "default"


def tokenize_row(row: dict, tokenizer, settings: WRPOSettings) -> tuple[dict, bool]:
    """``({prompt_ids, ws_ids, wt_ids, l_ids}, truncated)`` with the ``suffix`` rendering."""
    prompt, completions = prompt_and_replies(tokenizer, row["prompt"], [row[key] for key in RESPONSES])
    truncated = len(prompt) + max(len(c) for c in completions) > settings.max_length
    if truncated:
        prompt = prompt[-settings.max_prompt_length:]
        room = (settings.max_length - settings.max_prompt_length if settings.truncation == "reference"
                else settings.max_length - len(prompt))
        completions = [c[:max(room, 0)] for c in completions]
    return {"prompt_ids": prompt, "ws_ids": completions[0], "wt_ids": completions[1],
            "l_ids": completions[2]}, truncated


def tokenize_rows(rows: list[dict], tokenizer, settings: WRPOSettings):
    from datasets import Dataset

    if settings.max_prompt_length >= settings.max_length:
        raise InputError(f"max_prompt_length ({settings.max_prompt_length}) must be below max_length "
                         f"({settings.max_length})")
    tokenized, hit = [], 0
    for row in rows:
        ids, truncated = tokenize_row(row, tokenizer, settings)
        if not all(ids[k] for k in ("ws_ids", "wt_ids", "l_ids")):
            raise InputError(f"WRPO row {row['prompt_id']!r}: a response has no tokens after truncation")
        tokenized.append(ids)
        hit += truncated
    logger.info("WRPO rows: %d, %d truncated (%s rule)", len(rows), hit, settings.truncation)
    return Dataset.from_list(tokenized), hit


class WRPOCollator:
    """Rows -> 3B sequences [ws; wt; l], right-padded, with a mask over each response's tokens."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        sequences, masks = [], []
        for key in ("ws_ids", "wt_ids", "l_ids"):
            for row in rows:
                sequences.append(row["prompt_ids"] + row[key])
                masks.append([0] * len(row["prompt_ids"]) + [1] * len(row[key]))
        width = max(len(s) for s in sequences)
        pad = lambda xs, value: [x + [value] * (width - len(x)) for x in xs]  # noqa: E731
        return {"input_ids": torch.tensor(pad(sequences, self.pad_token_id)),
                "attention_mask": torch.tensor(pad([[1] * len(s) for s in sequences], 0)),
                "completion_mask": torch.tensor(pad(masks, 0))}


def sequence_logps(model, batch: dict) -> torch.Tensor:
    """Summed log-probability of each sequence's completion tokens (float32)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (per_token * batch["completion_mask"][:, 1:]).sum(-1)


def disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def alpha_total_steps(epochs: float, batches_per_epoch: int, grad_accum: int, max_steps: int) -> int:
    """T of the alpha ramp: ceil(epochs * floor(batches / grad_accum)), as the released trainer; a run
    cut short by ``max_steps`` ramps over those steps."""
    if max_steps and max_steps > 0:
        return max_steps
    return math.ceil(epochs * (batches_per_epoch // grad_accum))


class WRPOTrainer(Trainer):
    """The WRPO loss over [ws; wt; l] batches; ``ref_model`` is frozen (a copy of the initial policy)."""

    def __init__(self, *args, ref_model=None, wrpo: WRPOSettings = WRPOSettings(), **kwargs):
        super().__init__(*args, **kwargs)
        if wrpo.loss_type not in LOSS_TYPES:
            raise InputError(f"loss_type must be one of {LOSS_TYPES}, got {wrpo.loss_type!r}")
        self.wrpo = wrpo
        self.model_accepts_loss_kwargs = False  # the loss is a mean per row: accumulation steps average it
        self.ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        disable_dropout(self.model)
        self.total_alpha_steps = alpha_total_steps(self.args.num_train_epochs, len(self.get_train_dataloader()),
                                                   self.args.gradient_accumulation_steps, self.args.max_steps)
        self._step_metrics: dict[str, float] = {}

    def current_alpha(self) -> float:
        return losses.wrpo_alpha(self.state.global_step, self.total_alpha_steps, self.wrpo.alpha,
                                 self.wrpo.is_dynamic)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = sequence_logps(model, inputs)
        with torch.no_grad():
            reference = sequence_logps(self.ref_model, inputs)
        p_ws, p_wt, p_l = policy.chunk(3)
        r_ws, r_wt, r_l = reference.chunk(3)
        alpha = self.current_alpha()
        if self.wrpo.loss_type == "wrpo":
            per_row = losses.wrpo_loss(p_ws, p_wt, p_l, r_ws, r_wt, r_l, self.wrpo.beta, alpha)
        else:
            per_row = losses.multi_positive_dpo_loss(p_ws, p_wt, p_l, r_ws, r_wt, r_l, self.wrpo.beta)
        rewards = [losses.rewards(p, r, self.wrpo.beta).detach() for p, r in ((p_ws, r_ws), (p_wt, r_wt), (p_l, r_l))]
        self._step_metrics = {"alpha": alpha, "rewards/ws": rewards[0].mean().item(),
                              "rewards/wt": rewards[1].mean().item(), "rewards/l": rewards[2].mean().item(),
                              "rewards/margin": (alpha * rewards[0] + (1 - alpha) * rewards[1] - rewards[2]).mean().item(),
                              "logps/ws": p_ws.detach().mean().item(), "logps/wt": p_wt.detach().mean().item(),
                              "logps/l": p_l.detach().mean().item()}
        loss = per_row.mean()
        return (loss, {"logps": policy}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            logs = {**logs, **self._step_metrics}
        super().log(logs, *args, **kwargs)


def wrpo_trainer(model, ref_model, tokenizer, rows: list[dict], wrpo: WRPOSettings, settings, output_dir: str):
    from transformers import TrainingArguments

    dataset, _ = tokenize_rows(rows, tokenizer, wrpo)
    args = TrainingArguments(**settings.trainer_kwargs(output_dir), remove_unused_columns=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return WRPOTrainer(model=model, args=args, train_dataset=dataset, data_collator=WRPOCollator(pad),
                       processing_class=tokenizer, ref_model=ref_model, wrpo=wrpo)
