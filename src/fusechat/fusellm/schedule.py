"""The optimizer and schedule the released DeepSpeed config really ran (docs/design.md 12.6.5), without DeepSpeed.

``config/zero_stage2_config.json`` names DeepSpeed's AdamW (betas and eps absent, so 0.9/0.999 and
1e-8; weight decay on every parameter) and WarmupDecayLR (log warm-up over W = max(2, warmup
steps), then linear decay to 0 at S). DeepSpeed sets the lr to warmup_min_lr when the scheduler is
built and steps it after every optimizer step, so update u (1-based) runs at

    u = 1:  warmup_min_lr
    u >= 2: lr(s = u - 2),  lr(s) = min + (max - min) * ln(s + 1) / ln(W)   for s < W
                            lr(s) = min + (max - min) * max(0, (S - s) / max(1, S - W))   otherwise

The same schedule as a ``LambdaLR`` lets a torchrun or CPU run train exactly like the DeepSpeed one.
"""

from __future__ import annotations

import math

import torch

DEEPSPEED_BETAS = (0.9, 0.999)
DEEPSPEED_EPS = 1e-8


def released_update_steps(rows: int, world_size: int, per_device_batch: int, accumulation: int,
                          epochs: float) -> int:
    """S, the optimizer steps of the release's Trainer (transformers 4.3x, docs/design.md 12.6.5):
    floor(per-rank batches / accumulation) per epoch, at least 1. The micro-batches left over at
    the end of an epoch never reach an update. (transformers 5 takes ceil and makes a last,
    partial update.)"""
    per_rank_rows = math.ceil(rows / world_size)  # the DistributedSampler pads the ranks to equal length
    batches = math.ceil(per_rank_rows / per_device_batch)
    return math.ceil(epochs * max(batches // accumulation, 1))


def warmup_decay_factor(s: int, warmup_steps: int, total_steps: int) -> float:
    """DeepSpeed WarmupDecayLR's gamma (log warm-up) at scheduler step s >= 0."""
    warmup = max(2, warmup_steps)
    if s < warmup:
        return math.log(s + 1) / math.log(warmup)
    return max(0.0, (total_steps - s) / max(1.0, total_steps - warmup))


def update_lr(update: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """The learning rate of optimizer update ``update`` (0-based) under the released DeepSpeed config."""
    if update == 0:
        return min_lr
    return min_lr + (max_lr - min_lr) * warmup_decay_factor(update - 1, warmup_steps, total_steps)


def deepspeed_adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """torch AdamW as DeepSpeed builds it from the released config: one group, decay on every parameter."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=DEEPSPEED_BETAS, eps=DEEPSPEED_EPS, weight_decay=weight_decay)


def warmup_decay_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """WarmupDecayLR with warmup_min_lr 0 as a LambdaLR (the optimizer's lr is the peak)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: update_lr(update, 1.0, warmup_steps, total_steps))
