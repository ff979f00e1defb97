"""How inputs enter a FuseChat merge: shape rules, arithmetic dtype, chunks.

Shape rules (docs/design.md 9, step 1): a target whose tensor has the base's shape is used as is. For
embedding and lm_head tensors a larger target contributes its leading block of the base's shape
(the extra rows are tokens the pivot does not have). Any other mismatch drops that target for that
tensor only, with a warning.

Arithmetic runs in float64, so rounding the result once to the base's dtype is the only error that
shows, even where the result nearly cancels (float32 arithmetic would miss one bfloat16 ulp there);
element-wise passes go chunk by chunk, of a size whose temporaries stay in cache.
"""

from __future__ import annotations

import logging
from typing import Hashable, Iterator, Sequence

import torch

logger = logging.getLogger(__name__)

VOCABULARY_MARKERS = ("embed_tokens", "lm_head")
CHUNK = 1 << 16  # elements per chunk of the element-wise passes
ARITHMETIC_DTYPE = torch.float64  # merge arithmetic in float64, whatever the weights' dtype


def is_vocabulary_tensor(name: str | None) -> bool:
    return name is not None and any(marker in name for marker in VOCABULARY_MARKERS)


def leading_block(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """The view ``tensor[:shape[0], :shape[1], ...]``, or None when ``tensor`` is smaller somewhere."""
    if tensor.ndim != len(shape) or any(have < want for have, want in zip(tensor.shape, shape)):
        return None
    return tensor[tuple(slice(0, size) for size in shape)]


def aligned_tensors(base: torch.Tensor, tensors: Sequence[torch.Tensor], name: str | None = None,
                    labels: Sequence[Hashable] | None = None) -> list[tuple[int, torch.Tensor]]:
    """``(index, tensor in the base's shape)`` for every input that takes part in the merge of ``name``.

    ``labels`` name the inputs in warnings (model paths); the default is their position.
    """
    kept = []
    for index, tensor in enumerate(tensors):
        label = labels[index] if labels is not None else f"input {index}"
        if tensor.shape == base.shape:
            kept.append((index, tensor))
            continue
        block = leading_block(tensor, base.shape) if is_vocabulary_tensor(name) else None
        if block is not None:
            logger.warning("%s: using the leading %s block of %s's %s", name, tuple(base.shape), label,
                           tuple(tensor.shape))
            kept.append((index, block))
        else:
            logger.warning("%s: skipping %s, whose shape %s differs from the base's %s", name, label,
                           tuple(tensor.shape), tuple(base.shape))
    return kept



def chunks(numel: int, size: int | None = None) -> Iterator[slice]:
    size = size or CHUNK
    for start in range(0, numel, size):
        yield slice(start, min(start + size, numel))
