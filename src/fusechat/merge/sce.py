"""FuseChat's SCE merge: select, calculate, erase (docs/design.md 9).

Per tensor, with base = pivot and targets = the pairwise-fused models:

1. deltas ``d_i = W_i - W_base`` (shape rules of ``inputs.aligned_tensors``);
2. select: only if ``select_topk < 1``, a mask of the ``int(select_topk * count_nonzero(v))``
   elements of largest population variance ``v`` of the deltas across models (ties at the
   threshold go to the earlier elements in row-major order);
3. calculate: ``w_i = sum((d_i * mask)^2) / numel``, normalised to sum 1 (uniform if the sum is 0);
4. erase: keep ``d_i`` only where its sign equals the majority sign (+1 where ``sum_i d_i >= 0``);
5. ``W_base + sum_i w_i keep_i d_i / sum_i w_i keep_i`` (a zero divisor counts as 1).

The mask shapes the weights only: the full deltas are merged. mergekit's built-in ``sce`` also
zeroes the unselected delta elements before electing signs and merging; mergekit/README.md works
through an example where the two differ.

Deltas are made chunk by chunk from the inputs (``inputs.chunks``, in float64), so
besides the inputs and the output the memory holds the variance (one value per element, only when
selecting) and one chunk's deltas.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

from ..errors import InputError
from .inputs import ARITHMETIC_DTYPE, aligned_tensors, chunks


def selection_count(select_topk: float, nonzero: int) -> int:
    """k of step 2, in double precision as the reference's Python arithmetic computes it."""
    return int(select_topk * nonzero)


def chunk_deltas(base: torch.Tensor, targets: Sequence[torch.Tensor], part: slice) -> torch.Tensor:
    """``[n, len(part)]`` float64 deltas of flat inputs over one chunk."""
    base_part = base[part].to(ARITHMETIC_DTYPE)
    return torch.stack([target[part].to(ARITHMETIC_DTYPE).sub_(base_part) for target in targets])


def sum_over_models(deltas: torch.Tensor) -> torch.Tensor:
    """``sum_i d_i``, added model by model in order (so equal inputs give equal sums)."""
    total = deltas[0].clone()
    for delta in deltas[1:]:
        total.add_(delta)
    return total


def population_variance(deltas: torch.Tensor) -> torch.Tensor:
    """Two-pass population variance across models (dimension 0)."""
    mean = sum_over_models(deltas).div_(len(deltas))
    return sum_over_models((deltas - mean).square_()).div_(len(deltas))


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest of non-negative float64 ``values`` (1 <= k <= numel), by radix selection.

    Non-negative doubles order like their bit patterns, so four passes over a 16-bit histogram of
    the candidates pin the threshold down exactly; unlike ``torch.topk`` (two full-size copies),
    the memory is one chunk.
    """
    bits = values.view(torch.int64)
    prefix, remaining = 0, k
    for shift in (48, 32, 16, 0):
        histogram = torch.zeros(1 << 16, dtype=torch.int64, device=values.device)
        for part in chunks(bits.numel(), 1 << 20):
            candidates = bits[part]
            if shift < 48:  # only those that share the bits above, already decided
                candidates = candidates[(candidates >> (shift + 16)) == prefix]
            histogram += torch.bincount((candidates >> shift) & 0xFFFF, minlength=1 << 16)
        from_top = histogram.flip(0).cumsum(0)
        index = int(torch.searchsorted(from_top, remaining))
        if index:
            remaining -= int(from_top[index - 1])
        prefix = (prefix << 16) | (0xFFFF - index)
    return torch.tensor(prefix, dtype=torch.int64).view(torch.float64)


def top_positions(values: torch.Tensor, k: int) -> torch.Tensor:
    """Flat positions of the ``k`` largest non-negative ``values``; among equal values the earlier
    position wins, so the selection is the same however a sort would order ties."""
    threshold = kth_largest(values, k).to(values.device)
    above = torch.nonzero(values > threshold).squeeze(1)
    ties = torch.nonzero(values == threshold).squeeze(1)[: k - above.numel()]
    return torch.cat([above, ties])


def sce_weights(base: torch.Tensor, targets: Sequence[torch.Tensor], select_topk: float = 1.0) -> torch.Tensor:
    """Steps 2 and 3 for flat inputs of equal dtype: one float64 weight per target, summing to 1."""
    n, numel = len(targets), base.numel()
    if select_topk < 1:
        variance = torch.empty(numel, dtype=ARITHMETIC_DTYPE, device=base.device)
        for part in chunks(numel):
            variance[part] = population_variance(chunk_deltas(base, targets, part))
        k = selection_count(select_topk, int(torch.count_nonzero(variance)))
        if k == 0:
            weights = torch.zeros(n, dtype=ARITHMETIC_DTYPE, device=base.device)
        else:
            # Squared deltas at the selected positions only, instead of a full-size mask.
            positions = top_positions(variance, k)
            del variance
            base_selected = base[positions].to(ARITHMETIC_DTYPE)
            weights = torch.stack([target[positions].to(ARITHMETIC_DTYPE).sub_(base_selected).square_().sum()
                                   for target in targets]) / numel
    else:
        weights = torch.zeros(n, dtype=ARITHMETIC_DTYPE, device=base.device)
        for part in chunks(numel):
            weights += chunk_deltas(base, targets, part).square_().sum(dim=1)
        weights /= numel
    weight_sum = weights.sum()
    if weight_sum == 0:
        return torch.full((n,), 1.0 / n, dtype=ARITHMETIC_DTYPE, device=base.device)
    return weights / weight_sum


def erase_and_merge(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Steps 4 and 5 on one chunk: the weighted mean of the deltas that agree with the majority sign."""
    majority = torch.where(sum_over_models(deltas) >= 0, 1.0, -1.0).to(ARITHMETIC_DTYPE)
    # sign(0) = 0 never equals +-1, so zero deltas are never kept.
    kept = (torch.sign(deltas) == majority).to(ARITHMETIC_DTYPE).mul_(weights[:, None])
    divisor = sum_over_models(kept)
    divisor[divisor == 0] = 1
    return sum_over_models(kept.mul_(deltas)).div_(divisor)


def fusechat_sce(base: torch.Tensor, targets: Sequence[torch.Tensor], select_topk: float = 1.0,
                 name: str | None = None, labels: Sequence[Hashable] | None = None) -> torch.Tensor:
    """SCE-merge ``targets`` onto ``base``; the result has the base's shape and dtype."""
    if not 0.0 <= select_topk <= 1.0:
        raise InputError(f"select_topk must lie in [0, 1], got {select_topk}")
    kept = aligned_tensors(base, targets, name, labels)
    if not kept or base.numel() == 0:
        return base.clone()
    flat_base = base.reshape(-1)
    # "W_i cast to the base dtype" first, so mixed-precision inputs round the way the base does.
    flat_targets = [tensor.to(base.dtype).reshape(-1) for _, tensor in kept]
    weights = sce_weights(flat_base, flat_targets, select_topk)
    out = torch.empty_like(flat_base)
    for part in chunks(flat_base.numel()):
        merged = erase_and_merge(chunk_deltas(flat_base, flat_targets, part), weights)
        out[part] = merged.add_(flat_base[part].to(merged.dtype)).to(base.dtype)
    return out.reshape(base.shape)
