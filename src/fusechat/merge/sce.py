"""FuseChat's SCE merge: select, calculate, erase (DESIGN.md 9).

Per tensor, with base = pivot and targets = the pairwise-fused models:

1. deltas ``d_i = W_i - W_base`` (shape rules of ``shapes.aligned_tensors``);
2. select: only if ``select_topk < 1``, a mask of the ``int(select_topk * count_nonzero(v))``
   elements of largest population variance ``v`` of the deltas across models (ties at the
   threshold go to the earlier elements in row-major order);
3. calculate: ``w_i = sum((d_i * mask)^2) / numel``, normalised to sum 1 (uniform if the sum is 0);
4. erase: keep ``d_i`` only where its sign equals the majority sign (+1 where ``sum_i d_i >= 0``);
5. ``W_base + sum_i w_i keep_i d_i / sum_i w_i keep_i`` (a zero divisor counts as 1).

The mask shapes the weights only: the full deltas are merged. mergekit's built-in ``sce`` also
zeroes the unselected delta elements before electing signs and merging; mergekit/README.md works
through an example where the two differ.

Arithmetic runs in float64 and the result is rounded once to the base's dtype. The deltas are
recomputed from the inputs one model at a time, so memory holds a handful of float64 tensors of
one parameter's size however many targets there are.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

from ..errors import InputError
from .shapes import aligned_tensors

EXACT = torch.float64


def selection_count(select_topk: float, nonzero: int) -> int:
    """k of step 2, in double precision as the reference's Python arithmetic computes it."""
    return int(select_topk * nonzero)


class _Deltas:
    """``d_i = W_i - W_base`` in float64, made on demand (flattened)."""

    def __init__(self, base: torch.Tensor, targets: Sequence[torch.Tensor]):
        self.base = base.reshape(-1)
        self.targets = [target.to(base.dtype).reshape(-1) for target in targets]  # W_i in the base dtype
        self.base64 = self.base.to(EXACT)

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self):
        for target in self.targets:
            yield target.to(EXACT).sub_(self.base64)

    def at(self, index: int, positions: torch.Tensor) -> torch.Tensor:
        return self.targets[index][positions].to(EXACT) - self.base64[positions]


def population_variance(deltas: _Deltas) -> torch.Tensor:
    n = len(deltas)
    mean = sum_of(deltas) / n
    variance = torch.zeros_like(mean)
    for delta in deltas:
        variance.add_(delta.sub_(mean).square_())
    return variance.div_(n)


def sum_of(deltas: _Deltas) -> torch.Tensor:
    total = torch.zeros_like(deltas.base64)
    for delta in deltas:
        total.add_(delta)
    return total


def top_positions(values: torch.Tensor, k: int) -> torch.Tensor:
    """Flat positions of the ``k`` largest ``values``; among equal values the earlier position wins,
    so the selection does not depend on how ``torch.topk`` orders ties."""
    threshold = torch.topk(values, k, largest=True, sorted=False).values.min()
    above = torch.nonzero(values > threshold).squeeze(1)
    ties = torch.nonzero(values == threshold).squeeze(1)[: k - above.numel()]
    return torch.cat([above, ties])


def sce_weights(deltas: _Deltas, select_topk: float = 1.0) -> torch.Tensor:
    """Steps 2 and 3: one float64 weight per target, summing to 1."""
    n, numel = len(deltas), deltas.base.numel()
    if select_topk < 1:
        variance = population_variance(deltas)
        k = selection_count(select_topk, int(torch.count_nonzero(variance)))
        if k == 0:
            weights = torch.zeros(n, dtype=EXACT)
        else:
            # Sum over the selected positions only instead of multiplying by a full-size mask.
            positions = top_positions(variance, k)
            del variance
            weights = torch.stack([deltas.at(i, positions).square().sum() for i in range(n)]) / numel
    else:
        weights = torch.stack([delta.square_().sum() for delta in deltas]) / numel
    total = weights.sum()
    if total == 0:
        return torch.full((n,), 1.0 / n, dtype=EXACT)
    return weights / total


def erase_and_merge(deltas: _Deltas, weights: torch.Tensor) -> torch.Tensor:
    """Steps 4 and 5: the weighted mean of the deltas that agree with the majority sign."""
    majority = torch.where(sum_of(deltas) >= 0, 1.0, -1.0).to(EXACT)
    numerator = torch.zeros_like(majority)
    divisor = torch.zeros_like(majority)
    for delta, weight in zip(deltas, weights.tolist()):
        # sign(0) = 0 never equals +-1, so zero deltas are never kept.
        kept = torch.sign(delta).eq_(majority).to(EXACT).mul_(weight)
        numerator.addcmul_(kept, delta)
        divisor.add_(kept)
    divisor[divisor == 0] = 1
    return numerator.div_(divisor)


def fusechat_sce(base: torch.Tensor, targets: Sequence[torch.Tensor], select_topk: float = 1.0,
                 name: str | None = None, labels: Sequence[Hashable] | None = None) -> torch.Tensor:
    """SCE-merge ``targets`` onto ``base``; the result has the base's shape and dtype."""
    if not 0.0 <= select_topk <= 1.0:
        raise InputError(f"select_topk must lie in [0, 1], got {select_topk}")
    kept = aligned_tensors(base, targets, name, labels)
    if not kept or base.numel() == 0:
        return base.clone()
    deltas = _Deltas(base, [tensor for _, tensor in kept])
    weights = sce_weights(deltas, select_topk)
    merged = erase_and_merge(deltas, weights).add_(deltas.base64)
    return merged.reshape(base.shape).to(base.dtype)
