"""VaRM, FuseChat v1's variation-ratio merge (docs/design.md 9).

With base = pivot, each target's variation for a tensor is ``r_i = mean((W_i - W_base)^2)``; the
merge weights are ``r / sum(r)`` (or ``softmax(r / temperature)``), uniform if any ``r_i`` is 0,
and the output is ``sum_i weight_i * W_i``. At a coarser granularity the ``r_i`` of a tensor is the
sum of the per-tensor values over its group: its module, its layer, or the whole model.
"""

from __future__ import annotations

import re
from typing import Hashable, Sequence

import torch

from ..errors import InputError
from .inputs import ARITHMETIC_DTYPE, aligned_tensors, chunks

GRANULARITIES = ("tensor", "module", "layer", "model")
_LAYER = re.compile(r"^(?P<prefix>.*?\.layers\.(?P<index>\d+))\.(?P<module>[^.]+)")


def group_key(name: str, granularity: str) -> str:
    """The group a tensor's variation is summed over, keyed as the reference's analysis JSON is.

    module: ``model.layers.3.self_attn`` (the component after the layer index); layer: ``3``;
    model: ``*``. Tensors outside the decoder layers (embeddings, final norm, lm_head) are their
    own module and their own layer.
    """
    if granularity == "tensor":
        return name
    if granularity == "model":
        return "*"
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    match = _LAYER.match(name)
    if match is None:
        return name
    if granularity == "layer":
        return match["index"]
    return f"{match['prefix']}.{match['module']}"


def tensor_variation(base: torch.Tensor, target: torch.Tensor) -> float:
    """``mean((target - base)^2)``, summed in double precision chunk by chunk."""
    if base.numel() == 0:
        return 0.0
    flat_base, flat_target = base.reshape(-1), target.to(base.dtype).reshape(-1)
    total = 0.0
    for part in chunks(flat_base.numel()):
        delta = flat_target[part].to(ARITHMETIC_DTYPE).sub_(flat_base[part].to(ARITHMETIC_DTYPE))
        total += float(delta.square_().sum())
    return total / base.numel()


def varm_weights(variations: Sequence[float], softmax: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Merge weights (float64) from the targets' variations."""
    r = torch.tensor([float(v) for v in variations], dtype=torch.float64)
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    if len(r) == 0:
        return r
    if bool((r == 0).any()):
        return torch.full_like(r, 1.0 / len(r))
    if softmax:
        return torch.softmax(r / temperature, dim=0)
    return r / r.sum()


def fusechat_varm(base: torch.Tensor, targets: Sequence[torch.Tensor], variations: Sequence[float] | None = None,
                  softmax: bool = False, temperature: float = 1.0, name: str | None = None,
                  labels: Sequence[Hashable] | None = None) -> torch.Tensor:
    """VaRM-merge ``targets``; ``variations`` (one per target) default to the per-tensor values."""
    if variations is not None and len(variations) != len(targets):
        raise InputError(f"{name}: {len(variations)} variations for {len(targets)} targets")
    kept = aligned_tensors(base, targets, name, labels)
    if not kept:
        return base.clone()
    if variations is None:
        r = [tensor_variation(base, tensor) for _, tensor in kept]
    else:
        r = [variations[index] for index, _ in kept]
    weights = varm_weights(r, softmax, temperature).tolist()
    flat = [tensor.to(base.dtype).reshape(-1) for _, tensor in kept]
    out = torch.empty_like(base).reshape(-1)
    for part in chunks(out.numel()):
        merged = torch.zeros(part.stop - part.start, dtype=ARITHMETIC_DTYPE, device=base.device)
        for weight, tensor in zip(weights, flat):
            merged.add_(tensor[part].to(merged.dtype), alpha=weight)
        out[part] = merged.to(base.dtype)
    return out.reshape(base.shape)
