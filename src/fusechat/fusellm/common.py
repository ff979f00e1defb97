"""Pieces every FuseLLM stage shares: tokenizers, first-rows sampling, sharding, document encoding."""

from __future__ import annotations

from ..data import split_bounds
from ..errors import InputError
from ..modeling import load_tokenizer
from ..storage import load_dataset_dir

TEXT = "text"
SENTENCEPIECE_SPACE = "\u2581"  # ▁


def load_stage_tokenizer(model_name_or_path: str, model_max_length: int | None = None, cache_dir: str | None = None):
    """The model's tokenizer, right padding, pad = own pad, else unk, else eos (docs/design.md 12).

    The reference picks slow or fast by a ``llama``/``mpt`` substring of the path (12.8 #25); here
    any path works and the word-start marker is read from the tokenizer itself.
    """
    tokenizer = released_sentencepiece_encoding(load_tokenizer(model_name_or_path, model_max_length, cache_dir,
                                                               use_fast=True))
    if tokenizer.pad_token is None:
        raise InputError(f"{model_name_or_path}: the tokenizer has no pad, unk or eos token")
    if tokenizer.eos_token is None:
        raise InputError(f"{model_name_or_path}: the tokenizer has no EOS token to end each document with")
    return tokenizer


def released_sentencepiece_encoding(tokenizer):
    """Make a SentencePiece tokenizer encode as the release's slow ``LlamaTokenizer`` (sentencepiece
    itself, legacy mode) does: every stretch of text between special tokens gets the "▁" dummy
    prefix, even when it starts with a space (``' The cat'`` -> ``▁ ▁The ▁cat``). The fast
    tokenizer's Metaspace skips the prefix there and loses that space. Other tokenizers are returned
    unchanged.
    """
    from tokenizers import normalizers, pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    metaspace = backend is not None and isinstance(backend.pre_tokenizer, pre_tokenizers.Metaspace)
    if metaspace and backend.pre_tokenizer.replacement == SENTENCEPIECE_SPACE:
        backend.normalizer = normalizers.Sequence([normalizers.Prepend(SENTENCEPIECE_SPACE),
                                                   normalizers.Replace(" ", SENTENCEPIECE_SPACE)])
        backend.pre_tokenizer = None
    return tokenizer


def load_dataset_dict(path: str, flag: str):
    """A DatasetDict saved with ``save_to_disk`` (a lone Dataset counts as its ``train`` split)."""
    from datasets import Dataset, DatasetDict

    loaded = load_dataset_dir(path, flag)
    return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded


def first_rows(dataset, proportion: float | None):
    """``--dataset_sample_prop``: the *first* int(len * p) rows (FuseLLM's debug flag, 12.8 #13)."""
    if proportion is None:
        return dataset
    if not 0 < proportion <= 1:
        raise InputError(f"--dataset_sample_prop must be in (0, 1], got {proportion}")
    return dataset.select(range(int(len(dataset) * proportion)))


def shard(dataset, split_num: int | None, index: int | None):
    """``--dataset_split_num N --dataset_index i``: contiguous slice i of N, the last takes the rest."""
    if split_num is None and index is None:
        return dataset, 0
    if split_num is None or index is None:
        raise InputError("--dataset_split_num and --dataset_index go together")
    start, end = split_bounds(len(dataset), split_num, index)
    return dataset.select(range(start, end)), start


def encode_documents(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """docs/design.md 12.2: text + the EOS *string*, no special tokens added (so no BOS), truncated."""
    encoded = tokenizer([text + tokenizer.eos_token for text in texts], add_special_tokens=False,
                        truncation=True, max_length=max_length)
    return encoded["input_ids"]


def require(dataset, columns, where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise InputError(f"{where}: missing column(s) {missing}; found {dataset.column_names}")
