"""Offline fixtures: real tokenizers rebuilt from pip packages and tiny random-weight models.

Nothing here touches a model hub. The OpenChat-3.5 (Mistral SentencePiece) tokenizer comes from
``mistral-common``'s ``tokenizer.model.v1``; the Qwen1.5 byte-level tokenizer from ``dashscope``'s
``qwen.tiktoken``. The tiny models are seeded, so every build gives the same weights.

    fusechat-fixtures --out models/     # builds all three tiny models into models/
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .storage import atomic_dir

# Qwen's pre-tokenizer split pattern (single digits, unlike cl100k's \p{N}{1,3}).
QWEN_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643..151645
OPENCHAT_SPECIAL_TOKENS = ["<|end_of_turn|>", "<|pad_0|>"]  # ids 32000, 32001


def default_cache_dir() -> Path:
    env = os.environ.get("FUSECHAT_FIXTURE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fusechat" / "fixtures"


def _package_file(package: str, *parts: str) -> Path:
    try:
        module = __import__(package)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            f"the fixture tokenizers need the pip package '{package}' "
            f"(pip install -e '.[fixtures]')"
        ) from exc
    path = Path(module.__file__).parent.joinpath(*parts)
    if not path.exists():
        raise InputError(f"{path} not found: this version of '{package}' does not ship it")
    return path


def _build_openchat_tokenizer(out: Path) -> None:
    from transformers import LlamaTokenizer

    src = _package_file("mistral_common", "data", "tokenizer.model.v1")
    staging = out / "_spm"
    staging.mkdir()
    shutil.copy(src, staging / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(staging), legacy=True, add_bos_token=True, add_eos_token=False)
    shutil.rmtree(staging)
    tok.add_special_tokens({"additional_special_tokens": OPENCHAT_SPECIAL_TOKENS})
    tok.eos_token = "<|end_of_turn|>"
    # Saved so that a reload keeps the legacy SentencePiece behaviour: a word start after an
    # added token gets its "▁" (OpenChat encodes "<|end_of_turn|>GPT4" as 32000, "▁G", ...).
    tok.init_kwargs["legacy"] = True
    assert tok.convert_tokens_to_ids(OPENCHAT_SPECIAL_TOKENS) == [32000, 32001]
    _attach_chat_template(tok, "openchat_3.5")
    tok.save_pretrained(str(out))


def _build_qwen_tokenizer(out: Path) -> None:
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    src = _package_file("dashscope", "resources", "qwen.tiktoken")
    backend = TikTokenConverter(vocab_file=str(src), pattern=QWEN_SPLIT_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    assert tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS) == [151643, 151644, 151645]
    _attach_chat_template(tok, "qwen")
    tok.save_pretrained(str(out))


def _build_plain_sentencepiece_tokenizer(out: Path, model_file: str) -> None:
    """A mistral_common SentencePiece model as a plain Llama tokenizer (eos ``</s>``, no added tokens)."""
    from transformers import LlamaTokenizer

    staging = out / "_spm"
    staging.mkdir()
    shutil.copy(_package_file("mistral_common", "data", model_file), staging / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(staging), legacy=True, add_bos_token=True, add_eos_token=False)
    shutil.rmtree(staging)
    tok.init_kwargs["legacy"] = True
    tok.save_pretrained(str(out))


def _attach_chat_template(tok, template_name: str) -> None:
    from .templates import chat_template_jinja, get_template, tokenizer_adds_bos

    tok.chat_template = chat_template_jinja(get_template(template_name), tok.eos_token, tokenizer_adds_bos(tok))


@dataclass(frozen=True)
class TinyModelSpec:
    name: str
    tokenizer: str  # "openchat" or "qwen"
    architecture: str  # "mistral" or "qwen2"
    hidden_size: int
    num_layers: int
    seed: int
    template: str
    # The spread of the random weights sets how peaked (and how good, in CE) a model's guesses are;
    # these make the sources beat the pivot on roughly half of the sample conversations, so that the
    # MinCE choice of the demo goes both ways.
    initializer_range: float = 0.2
    # FuseLLM fixtures: the EOS the tokenizer is saved with (None: the kind's own), and the logit
    # width when it exceeds the tokenizer (MPT's 50432 rows for 50277 entries).
    eos_token: str | None = None
    logit_width: int | None = None

    @property
    def cache_key(self) -> str:
        import hashlib

        return hashlib.sha1(repr(self).encode()).hexdigest()[:10]


TOKENIZER_BUILDERS = {"openchat": _build_openchat_tokenizer, "qwen": _build_qwen_tokenizer}

TINY_MODELS = {
    spec.name: spec
    for spec in [
        # The pivot: Mistral architecture, OpenChat-3.5 vocabulary (32002).
        TinyModelSpec("openchat_3.5-tiny", "openchat", "mistral", 64, 2, seed=1, template="openchat_3.5",
                      initializer_range=0.3),
        # A source sharing the pivot's vocabulary (like Starling, SOLAR, Mixtral), a different shape.
        TinyModelSpec("starling-tiny", "openchat", "mistral", 96, 3, seed=2, template="openchat_3.5",
                      initializer_range=0.25),
        # A source with a different, byte-level vocabulary (like Qwen1.5-Chat): 151646 ids.
        TinyModelSpec("qwen1.5-chat-tiny", "qwen", "qwen2", 64, 2, seed=3, template="qwen",
                      initializer_range=0.21),
    ]
}
PIVOT, SAME_VOCAB_SOURCE, DIFF_VOCAB_SOURCE = TINY_MODELS

# FuseLLM (DESIGN.md 12): a pivot and two sources, three different real vocabularies. The names
# stand for the released models; the vocabularies are the nearest offline stand-ins.
TOKENIZER_BUILDERS["mistral"] = lambda out: _build_plain_sentencepiece_tokenizer(out, "tokenizer.model.v1")
TOKENIZER_BUILDERS["mistral-v3"] = lambda out: _build_plain_sentencepiece_tokenizer(
    out, "mistral_instruct_tokenizer_240323.model.v3")
FUSELLM_TINY_MODELS = {
    spec.name: spec
    for spec in [
        # Llama-2-7B stand-in: SentencePiece "▁", 32000 ids, eos "</s>".
        TinyModelSpec("llama-2-7b-tiny", "mistral", "mistral", 64, 2, seed=11, template="none",
                      initializer_range=0.3),
        # OpenLLaMA-7B-v2 stand-in: another SentencePiece vocabulary (32768 ids).
        TinyModelSpec("open_llama_7b_v2-tiny", "mistral-v3", "mistral", 64, 2, seed=12, template="none",
                      initializer_range=0.25),
        # MPT-7B stand-in: byte-level "Ġ" BPE, eos "<|endoftext|>", logit width above the vocabulary.
        TinyModelSpec("mpt-7b-tiny", "qwen", "qwen2", 64, 2, seed=13, template="none",
                      initializer_range=0.21, eos_token="<|endoftext|>", logit_width=151936),
    ]
}
FUSELLM_PIVOT, FUSELLM_SOURCE_0, FUSELLM_SOURCE_1 = FUSELLM_TINY_MODELS


def build_tokenizer(kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) the real ``openchat`` or ``qwen`` tokenizer into the cache; return its folder."""
    if kind not in TOKENIZER_BUILDERS:
        raise InputError(f"unknown fixture tokenizer {kind!r}; choose from {sorted(TOKENIZER_BUILDERS)}")
    path = Path(cache_dir or default_cache_dir()) / f"tokenizer-{kind}"
    if not (path / "tokenizer_config.json").exists():
        with atomic_dir(path) as tmp:
            TOKENIZER_BUILDERS[kind](tmp)
    return path


def load_tokenizer(kind: str, cache_dir: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(build_tokenizer(kind, cache_dir)))


def _model_config(spec: TinyModelSpec, vocab_size: int, tok):
    from transformers import MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 2,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=spec.initializer_range,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if spec.architecture == "mistral":
        return MistralConfig(sliding_window=None, tie_word_embeddings=False, **common)
    return Qwen2Config(tie_word_embeddings=True, **common)


def build_tiny_model(name: str, out_dir: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) a tiny random-weight model with its real tokenizer; return its folder.

    Without ``out_dir`` the model goes into the fixture cache.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    specs = {**TINY_MODELS, **FUSELLM_TINY_MODELS}
    if name not in specs:
        raise InputError(f"unknown fixture model {name!r}; choose from {sorted(specs)}")
    spec = specs[name]
    path = Path(out_dir) if out_dir else Path(cache_dir or default_cache_dir()) / f"{name}-{spec.cache_key}"
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    tok = AutoTokenizer.from_pretrained(str(build_tokenizer(spec.tokenizer, cache_dir)))
    if spec.eos_token:
        tok.eos_token = spec.eos_token
    config = _model_config(spec, spec.logit_width or len(tok), tok)
    with atomic_dir(path) as tmp:
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline tiny fixture models.")
    parser.add_argument("--out", default="models", help="folder that receives one sub-folder per model")
    parser.add_argument("--models", default=",".join(TINY_MODELS), help="comma-separated fixture names")
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        print(build_tiny_model(name, Path(args.out) / name))


if __name__ == "__main__":
    main()
