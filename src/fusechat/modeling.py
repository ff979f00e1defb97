"""Loading tokenizers and causal LMs the way every stage needs them (docs/design.md 4).

``--load_in_half none|fp16|bf16``, ``--device_map``, ``--flash_attn_transformers`` (falls back to
SDPA with one warning when flash-attn is not installed), linear RoPE scaling when
``model_max_length`` exceeds the model's ``max_position_embeddings``, and the pad-token fallback
(the tokenizer's own, else unk, else eos).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

from .errors import InputError

logger = logging.getLogger(__name__)
HALF_DTYPES = {"none": None, "fp16": "float16", "bf16": "bfloat16"}
_warned_flash = False


def check_model_path(path: str, flag: str = "--model_name_or_path") -> None:
    """A local-looking path must exist; a bare ``org/name`` whose ``org`` is no local folder goes to the hub."""
    p = Path(path).expanduser()
    if p.exists():
        return
    looks_local = p.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1 or ("/" in path and p.parent.is_dir())
    if looks_local:
        raise InputError(f"{flag}: model folder not found: {path}")


def check_weights(folder: str | Path, what: str) -> None:
    """Every safetensors file of a local folder has a readable header and the size it declares
    (a truncated file otherwise fails deep inside a loader)."""
    import json
    import struct

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with open(path, "rb") as handle:
                (header_size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_size))
            ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
            complete = path.stat().st_size >= 8 + header_size + max(ends, default=0)
        except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error, MemoryError):
            complete = False
        if not complete:
            raise InputError(f"{what} {folder}: damaged weights file {path.name} (truncated or not safetensors)")


def is_saved_model(path: str | Path) -> bool:
    """A folder we saved a single-file safetensors model into (config.json and model.safetensors)."""
    return (Path(path) / "config.json").exists() and (Path(path) / "model.safetensors").exists()


def from_pretrained(loader, path: str, what: str, **kwargs):
    """``loader.from_pretrained`` with a missing or damaged file reported as one line naming the folder."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot load the {what} (is it a complete model folder?): {reason}") from exc
    except Exception as exc:  # safetensors' SafetensorError (truncated weights) derives from Exception
        if type(exc).__name__ == "SafetensorError":
            raise InputError(f"{path}: cannot load the {what}: damaged weights file ({exc})") from exc
        if type(exc) is Exception:  # the tokenizers library's errors (a tokenizer.json without its vocabulary)
            raise InputError(f"{path}: cannot load the {what}: damaged tokenizer.json ({exc})") from exc
        raise


def attention_implementation(flash_attn: bool) -> str:
    global _warned_flash
    if not flash_attn:
        return "sdpa"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if not _warned_flash:
        logger.warning("--flash_attn_transformers: flash-attn is not installed; using SDPA attention instead")
        _warned_flash = True
    return "sdpa"


def rope_scaling_factor(max_position_embeddings: int | None, model_max_length: int) -> int | None:
    """ceil(model_max_length / max_position_embeddings) when the context must be stretched."""
    if not max_position_embeddings or model_max_length <= max_position_embeddings:
        return None
    return math.ceil(model_max_length / max_position_embeddings)


def load_config(model_name_or_path: str, model_max_length: int | None = None, cache_dir: str | None = None,
                trust_remote_code: bool = False):
    from transformers import AutoConfig

    check_model_path(model_name_or_path)
    config = from_pretrained(AutoConfig, model_name_or_path, "model config", cache_dir=cache_dir,
                             trust_remote_code=trust_remote_code)
    factor = rope_scaling_factor(getattr(config, "max_position_embeddings", None), model_max_length or 0)
    if factor:
        params = dict(getattr(config, "rope_parameters", None) or {})
        params.update(rope_type="linear", factor=float(factor))
        config.rope_parameters = params
        logger.info("linear RoPE scaling with factor %s for model_max_length %s", factor, model_max_length)
    return config


def load_tokenizer(model_name_or_path: str, model_max_length: int | None = None, cache_dir: str | None = None,
                   use_fast: bool = True, trust_remote_code: bool = False, padding_side: str = "right"):
    from transformers import AutoTokenizer

    check_model_path(model_name_or_path)
    kwargs = dict(cache_dir=cache_dir, use_fast=use_fast, trust_remote_code=trust_remote_code,
                  padding_side=padding_side)
    if model_max_length:
        kwargs["model_max_length"] = model_max_length
    tokenizer = from_pretrained(AutoTokenizer, model_name_or_path, "tokenizer", **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def read_model_config(model_name_or_path: str, cache_dir: str | None = None) -> dict:
    """config.json as a plain dict: no model class is needed, so models that ship their own code
    (internlm2) are read without ``trust_remote_code``."""
    from transformers import PretrainedConfig

    check_model_path(model_name_or_path)
    config, _ = PretrainedConfig.get_config_dict(model_name_or_path, cache_dir=cache_dir)
    return config


def model_turn_separator(model_name_or_path: str, tokenizer, override: str | None = None,
                         cache_dir: str | None = None) -> str:
    """The turn separator of ``templates.turn_separator`` for a model folder (``--separator`` overrides)."""
    from .templates import turn_separator

    try:
        if override:
            separator = turn_separator(tokenizer, override=override)
        else:
            separator = turn_separator(tokenizer, read_model_config(model_name_or_path, cache_dir))
    except InputError as exc:
        raise InputError(f"{model_name_or_path}: {exc}") from None
    # A separator must be one token of the model's vocabulary: it is the label that ends a reply, and the
    # token that turn positions of different models align on.
    if separator not in tokenizer.get_vocab():
        raise InputError(f"{model_name_or_path}: its tokenizer has no token {separator!r} to close turns with; "
                         "pass --separator with one of its tokens")
    if not override and separator != tokenizer.eos_token:
        logger.info("%s closes turns with %s (not its eos %s), as the released code does",
                    model_name_or_path, separator, tokenizer.eos_token)
    return separator


def base_vocabulary(tokenizer) -> dict[str, int]:
    """The tokenizer's own vocabulary, without the tokens added on top of it (specials, chat markers)."""
    added = tokenizer.get_added_vocab()
    return {token: i for token, i in tokenizer.get_vocab().items() if token not in added}


def shares_vocabulary(pivot_tokenizer, source_tokenizer) -> bool:
    """Same vocabulary in the sense of docs/design.md 5 (replace_model applies): the same pieces with the
    same ids, whatever each model added on top (Mixtral's 32000 ids against OpenChat's 32002, SOLAR's
    <|im_end|> where OpenChat has <|end_of_turn|>)."""
    return base_vocabulary(pivot_tokenizer) == base_vocabulary(source_tokenizer)


def keep_legacy_flag(tokenizer, folder) -> None:
    """Write ``legacy: true`` back into a saved tokenizer_config.json (transformers 5 drops it on save).

    Without it a legacy SentencePiece tokenizer (OpenChat, Mixtral, SOLAR) reloads as non-legacy and no
    longer gives a word start after an added token its "▁": "<|end_of_turn|>GPT4" would become 32000,
    "G" instead of 32000, "▁G", unlike the tokenization the released models were trained on.
    """
    import json

    if getattr(tokenizer, "legacy", None) is not True:
        return
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("legacy") is not True:
        config["legacy"] = True
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_tokenizer(tokenizer, folder) -> None:
    tokenizer.save_pretrained(str(folder))
    keep_legacy_flag(tokenizer, folder)


def torch_dtype(load_in_half: str):
    import torch

    if load_in_half not in HALF_DTYPES:
        raise InputError(f"--load_in_half must be one of {sorted(HALF_DTYPES)}, got {load_in_half!r}")
    name = HALF_DTYPES[load_in_half]
    return getattr(torch, name) if name else torch.float32


def load_causal_lm(model_name_or_path: str, model_max_length: int | None = None, load_in_half: str = "none",
                   device_map: str | None = None, flash_attn: bool = False, cache_dir: str | None = None,
                   trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    config = load_config(model_name_or_path, model_max_length, cache_dir, trust_remote_code)
    kwargs = dict(config=config, cache_dir=cache_dir, dtype=torch_dtype(load_in_half),
                  attn_implementation=attention_implementation(flash_attn), trust_remote_code=trust_remote_code)
    if device_map and device_map != "none":
        kwargs["device_map"] = device_map
    return from_pretrained(AutoModelForCausalLM, model_name_or_path, "model weights", **kwargs)


def output_vocab_size(model) -> int:
    """Rows of the output layer: the ids a model can predict (may exceed the tokenizer's length)."""
    head = model.get_output_embeddings()
    return head.weight.shape[0] if head is not None else model.config.get_text_config().vocab_size
