"""The merge methods ``fusechat-merge`` adds to mergekit's: one table, :data:`METHODS`, one entry
(:class:`MergeMethodEntry`) per method, registered by name through mergekit's public API.

``fusechat_sce``   FuseChat's SCE (``select_topk`` in [0, 1], default 1.0); mergekit's own ``sce``
                   stays available under its name.
``fusechat_varm``  VaRM (``granularity`` tensor|module|layer|model, ``softmax``, ``temperature``).
                   At a granularity other than ``tensor`` each target needs its group's variation
                   as the per-model parameter ``variation``: its ``prepare`` hook computes them.

Both need a base model (the pivot); mergekit streams one tensor at a time through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from mergekit import merge_methods
from mergekit.common import ModelReference, dtype_from_name
from mergekit.config import ConditionalParameter, MergeConfiguration
from mergekit.merge_methods import BasePolicy, InputContract, PerNonBase, TensorGroup, merge_method
from mergekit.options import MergeOptions
from pydantic import Field
from typing_extensions import Annotated

from ..errors import InputError
from .sce import fusechat_sce
from .varm import fusechat_varm, group_key
from .varm_analysis import group_sums, variation_statistics

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


def supply_varm_variations(config: MergeConfiguration, config_file: str, options: MergeOptions) -> None:
    """VaRM's prepare hook: give each target its group variations when the granularity is coarser
    than a tensor (a first streaming pass over the models, ``varm_analysis.variation_statistics``)."""
    granularity = (config.parameters or {}).get("granularity", "tensor")
    if granularity == "tensor":
        return
    if not config.models:
        raise InputError(f"{config_file}: {VARM_NAME} with granularity {granularity!r} needs the 'models:' form")
    base = config.base_model
    targets = [entry for entry in config.models if entry.model != base and "variation" not in (entry.parameters or {})]
    if not targets:
        return
    # The variations of the tensors as the merge sees them: cast to the config's dtype.
    stats = variation_statistics(_local_path(base, options), [_local_path(entry.model, options) for entry in targets],
                                 "square", cache_dir=options.transformers_cache, quiet=options.quiet,
                                 dtype=dtype_from_name(config.dtype) if config.dtype else None)
    for entry, stat in zip(targets, stats):
        sums = group_sums(stat["key_to_params"], granularity)
        per_tensor = {name: sums[group_key(name, granularity)] for name in stat["key_to_params"]}
        # mergekit picks the first filter contained in a tensor's name: longest names first, so a
        # name that is part of another never shadows it.
        entry.parameters = dict(entry.parameters or {}, variation=[
            ConditionalParameter(filter=name, value=value)
            for name, value in sorted(per_tensor.items(), key=lambda item: -len(item[0]))])


def _local_path(ref: ModelReference, options: MergeOptions) -> str:
    return ref.merged(cache_dir=options.lora_merge_cache, trust_remote_code=options.trust_remote_code,
                      lora_merge_dtype=options.lora_merge_dtype).local_path(cache_dir=options.transformers_cache)


Prepare = Callable[[MergeConfiguration, str, MergeOptions], None]


@dataclass(frozen=True)
class MergeMethodEntry:
    """One method of ``fusechat-merge``. Like every method here it gets the leading-block rule for
    larger vocabularies (``pipeline.options_for_vocabulary``)."""

    method: merge_methods.MergeMethod  # built with mergekit's ``merge_method`` (the per-tensor kernel)
    # Runs after the config checks, before the merge; may fill in per-model parameters
    # (arguments: the parsed config, its file name for messages, the merge options).
    prepare: Prepare | None = None

    @property
    def name(self) -> str:
        return self.method.spec.name


METHODS: dict[str, MergeMethodEntry] = {}


def register_merge_method(entry: MergeMethodEntry) -> MergeMethodEntry:
    """Add a method to ``fusechat-merge`` (and to mergekit, by name, at the next merge)."""
    METHODS[entry.name] = entry
    return entry


register_merge_method(MergeMethodEntry(fusechat_sce_method))
register_merge_method(MergeMethodEntry(fusechat_varm_method, prepare=supply_varm_variations))


def register_methods() -> None:
    """Make the methods of :data:`METHODS` available to mergekit by name (idempotent)."""
    known = {method.spec.name for method in merge_methods.registered_methods()}
    for entry in METHODS.values():
        if entry.name not in known:
            merge_methods.register(entry.method)
