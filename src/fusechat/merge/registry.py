"""FuseChat's merge methods as mergekit methods, registered by name through mergekit's public API.

``fusechat_sce``   FuseChat's SCE (``select_topk`` in [0, 1], default 1.0); mergekit's own ``sce``
                   stays available under its name.
``fusechat_varm``  VaRM (``granularity`` tensor|module|layer|model, ``softmax``, ``temperature``).
                   At a granularity other than ``tensor`` each target needs its group's variation
                   as the per-model parameter ``variation``; ``fusechat-merge`` computes and
                   supplies it (``fusechat.merge.pipeline``).

Both need a base model (the pivot); mergekit streams one tensor at a time through them.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from mergekit import merge_methods
from mergekit.merge_methods import BasePolicy, InputContract, PerNonBase, TensorGroup, merge_method
from pydantic import Field
from typing_extensions import Annotated

from ..errors import InputError
from .sce import fusechat_sce
from .varm import fusechat_varm

SCE_NAME, VARM_NAME = "fusechat_sce", "fusechat_varm"
PAPER = "https://arxiv.org/abs/2408.07990"


@merge_method(name=SCE_NAME, pretty_name="FuseChat SCE", reference_url=PAPER,
              contract=InputContract(base=BasePolicy.REQUIRED))
def fusechat_sce_method(
    group: TensorGroup,
    select_topk: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0,
) -> torch.Tensor:
    targets = group.non_base
    return fusechat_sce(group.base.tensor, [entry.tensor for entry in targets], select_topk,
                        name=group.metadata.name, labels=[str(entry.id) for entry in targets])


@merge_method(name=VARM_NAME, pretty_name="FuseChat VaRM", reference_url="https://arxiv.org/abs/2402.16107",
              contract=InputContract(base=BasePolicy.REQUIRED))
def fusechat_varm_method(
    group: TensorGroup,
    granularity: Literal["tensor", "module", "layer", "model"] = "tensor",
    softmax: bool = False,
    temperature: Annotated[float, Field(gt=0.0)] = 1.0,
    variation: PerNonBase[Optional[Annotated[float, Field(ge=0.0)]]] = None,
) -> torch.Tensor:
    targets = group.non_base
    given = variation.values_for(targets) if variation is not None else []
    if granularity == "tensor" and all(value is None for value in given):
        variations = None
    elif given and all(value is not None for value in given):
        variations = given
    else:
        raise InputError(
            f"{VARM_NAME}: granularity {granularity!r} needs every target's 'variation' for "
            f"{group.metadata.name}; run the merge through fusechat-merge, which computes them")
    return fusechat_varm(group.base.tensor, [entry.tensor for entry in targets], variations, softmax,
                         temperature, name=group.metadata.name, labels=[str(entry.id) for entry in targets])


FUSECHAT_METHODS = (fusechat_sce_method, fusechat_varm_method)


def register_methods() -> None:
    """Make the FuseChat methods available to mergekit by name (idempotent)."""
    known = {method.spec.name for method in merge_methods.registered_methods()}
    for method in FUSECHAT_METHODS:
        if method.spec.name not in known:
            merge_methods.register(method)
