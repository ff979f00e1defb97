"""Checks of a merge config that run before anything is written.

mergekit would find most of these problems too, but later (after downloads, or half-way through
the tensors) and in its own terms; here each one is an ``InputError`` that names the config file,
the entry and the value.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import yaml
from mergekit import merge_methods
from mergekit.common import ModelReference
from mergekit.config import ConditionalParameter, MergeConfiguration
from mergekit.merge_methods import BasePolicy
from mergekit.options import MergeOptions
from pydantic import ValidationError

from ..errors import InputError
from ..modeling import check_model_path, check_weights
from ..storage import check_output_dir

logger = logging.getLogger(__name__)


def load_merge_config(config_file: str) -> tuple[str, MergeConfiguration]:
    """The config's text and its parsed form."""
    path = Path(config_file)
    if not path.is_file():
        raise InputError(f"merge config not found: {config_file}")
    source = path.read_text(encoding="utf-8")
    try:
        config = MergeConfiguration.model_validate(yaml.safe_load(source))
    except (yaml.YAMLError, ValidationError, RuntimeError) as exc:
        raise InputError(f"{config_file}: not a valid mergekit config: {exc}") from exc
    return source, config


def listed_models(config: MergeConfiguration) -> list[ModelReference]:
    """Every model the config names, in the order it names them (mergekit's own list is a set)."""
    refs: list[ModelReference] = []
    if config.base_model:
        refs.append(config.base_model)
    for _, models, slices in _sections(config):
        refs.extend(entry.model for entry in models or [])
        refs.extend(source.model for piece in slices or [] for source in piece.sources)
    return list(dict.fromkeys(refs))


def pivot_model(config: MergeConfiguration) -> ModelReference:
    """The model whose shape, config and tokenizer the merge keeps: the base, else the first listed."""
    return listed_models(config)[0]


def _sections(config: MergeConfiguration):
    yield "", config.models, config.slices
    for module_name, module in (config.modules or {}).items():
        yield f"modules.{module_name}.", module.models, module.slices


def parameter_scopes(config: MergeConfiguration) -> Iterator[tuple[str, dict]]:
    """``(where, parameters)`` for every place a config can set merge parameters."""
    yield "parameters", config.parameters or {}
    for prefix, models, slices in _sections(config):
        for i, entry in enumerate(models or []):
            yield f"{prefix}models[{i}] ({entry.model})", entry.parameters or {}
        for j, piece in enumerate(slices or []):
            yield f"{prefix}slices[{j}]", piece.parameters or {}
            for k, source in enumerate(piece.sources):
                yield f"{prefix}slices[{j}].sources[{k}] ({source.model})", source.parameters or {}
    for module_name, module in (config.modules or {}).items():
        yield f"modules.{module_name}", module.parameters or {}


def _leaf_values(setting: Any) -> Iterator[Any]:
    if isinstance(setting, ConditionalParameter):
        yield from _leaf_values(setting.value)
    elif isinstance(setting, list):
        for item in setting:
            yield from _leaf_values(item)
    else:
        yield setting


def check_parameters(config: MergeConfiguration, config_file: str) -> None:
    method = merge_methods.get(config.merge_method)
    specs = {spec.name: spec for spec in method.spec.parameters}
    for where, parameters in parameter_scopes(config):
        for name, setting in parameters.items():
            if name not in specs:
                logger.warning("%s: %s: %r is not a parameter of %s, which ignores it (it takes %s)",
                               config_file, where, name, config.merge_method, ", ".join(specs) or "none")
                continue
            for value in _leaf_values(setting):
                try:
                    specs[name].validate(value)
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"]
                    raise InputError(f"{config_file}: {where}: {name}={value!r} is invalid for "
                                     f"{config.merge_method}: {reason}") from exc


def local_config(ref: ModelReference) -> dict | None:
    """config.json of a model given as a local folder; None for a hub id."""
    folder = Path(ref.model.path).expanduser()
    if not folder.is_dir():
        return None
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"model folder {folder} has no config.json")
    config = json.loads(path.read_text(encoding="utf-8"))
    if not config.get("architectures"):
        raise InputError(f"{path} names no architectures (mergekit needs e.g. \"architectures\": [\"MistralForCausalLM\"])")
    return config


def check_config(config: MergeConfiguration, config_file: str, options: MergeOptions) -> None:
    """Method known, base present if needed, parameter values valid, model folders present and
    of the pivot's architecture and hidden size."""
    known = sorted(method.spec.name for method in merge_methods.registered_methods())
    if config.merge_method not in known:
        raise InputError(f"{config_file}: unknown merge_method {config.merge_method!r}; known: {', '.join(known)}")
    method = merge_methods.get(config.merge_method)
    has_base = config.base_model is not None or any(
        piece.base_model for _, _, slices in _sections(config) for piece in slices or [])
    if method.spec.contract.base == BasePolicy.REQUIRED and not has_base:
        raise InputError(f"{config_file}: merge_method {config.merge_method} needs a base_model (the pivot)")
    check_parameters(config, config_file)
    for ref in listed_models(config):
        check_model_path(str(ref.model.path), flag=f"{config_file}: model")
        if Path(str(ref.model.path)).expanduser().is_dir():
            check_weights(Path(str(ref.model.path)).expanduser(), f"{config_file}: model")
        if ref.lora is not None:
            check_model_path(str(ref.lora.path), flag=f"{config_file}: LoRA")
    pivot = pivot_model(config)
    pivot_cfg = local_config(pivot)
    if pivot_cfg is None:
        return
    for ref in listed_models(config)[1:]:
        cfg = local_config(ref)
        if cfg is None:
            continue
        if cfg.get("architectures") != pivot_cfg.get("architectures") and not options.allow_crimes:
            raise InputError(f"{config_file}: {ref} has architecture {cfg.get('architectures')}, the pivot "
                             f"{pivot} has {pivot_cfg.get('architectures')} (--allow-crimes mixes them)")
        if cfg.get("hidden_size") != pivot_cfg.get("hidden_size"):
            raise InputError(f"{config_file}: {ref} has hidden size {cfg.get('hidden_size')}, the pivot "
                             f"{pivot} has {pivot_cfg.get('hidden_size')}")


def check_output(config: MergeConfiguration, out_path: str) -> None:
    """OUT_PATH is no model of the recipe (the merge would overwrite its weights) and no folder of the
    user's; checked before any tensor is read."""
    inputs = [str(ref.model.path) for ref in listed_models(config)]
    inputs += [str(ref.lora.path) for ref in listed_models(config) if ref.lora is not None]
    check_output_dir(out_path, "OUT_PATH", [p for p in inputs if Path(p).expanduser().exists()])
