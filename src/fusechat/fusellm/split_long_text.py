"""Splitting long texts so that every piece fits every tokenizer (docs/design.md 12.1).

The release has three tokenizers (pivot, two sources); any number works. A text whose token count
exceeds ``block_size - 48`` for any tokenizer is cut by the tokenizer that gives it the most tokens
(ties: the earlier model: base, blending, another blending, extra ones in order) into consecutive chunks of that
many ids, each decoded back to text with special tokens skipped. Decoding is not an inverse of the
cut (a SentencePiece chunk loses its leading space, a split multi-byte character becomes U+FFFD, a
literal special-token string vanishes); that is the released corpus (12.8 #12) and is kept.
"""

from __future__ import annotations

import logging

from ..errors import InputError
from .common import TEXT

logger = logging.getLogger(__name__)

MARGIN = 48


def split_threshold(block_size: int) -> int:
    return block_size - MARGIN


def split_text(text: str, tokenizers, threshold: int) -> list[str]:
    """The pieces of one text: itself when it fits every tokenizer, else the decoded chunks."""
    encodings = [tokenizer(text, add_special_tokens=False)["input_ids"] for tokenizer in tokenizers]
    lengths = [len(ids) for ids in encodings]
    longest = max(lengths)
    if longest <= threshold:
        return [text]
    chosen = lengths.index(longest)  # the first maximum: base, blending, another blending, ...
    ids, tokenizer = encodings[chosen], tokenizers[chosen]
    return [tokenizer.decode(ids[start:start + threshold], skip_special_tokens=True)
            for start in range(0, len(ids), threshold)]


def split_batch(batch: dict, tokenizers, threshold: int) -> dict:
    return {TEXT: [piece for text in batch[TEXT] for piece in split_text(text, tokenizers, threshold)]}


def require_text(dataset, where: str) -> None:
    """Every ``text`` is a string (a null or a number cannot be tokenized)."""
    import pyarrow as pa

    column = dataset.data.column(TEXT)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_null(column.type)):
        raise InputError(f"{where}: column 'text' holds {column.type} values, not strings")
    if column.null_count:
        row = column.combine_chunks().is_null().to_numpy(zero_copy_only=False).argmax()
        raise InputError(f"{where}: row {int(row)}: text is null ({column.null_count} such rows)")


def split_dataset(dataset, tokenizers, block_size: int, num_proc: int | None = None):
    """One split: a single ``text`` column, long texts expanded in place, other columns dropped."""
    return dataset.map(split_batch, batched=True, batch_size=100, remove_columns=dataset.column_names,
                       fn_kwargs={"tokenizers": tokenizers, "threshold": split_threshold(block_size)},
                       num_proc=num_proc if num_proc and num_proc > 1 else None, desc="Splitting long texts")


def split_long_texts(dataset_dir: str, save_dir: str, model_paths: list[str], block_size: int,
                     cache_dir: str | None = None, sample_prop: float | None = None,
                     num_proc: int | None = None, record: dict | None = None) -> None:
    """split_long_text.py: every split of the DatasetDict at ``dataset_dir`` cut for the tokenizers of
    ``model_paths`` (base, then the sources in order), saved at ``save_dir``."""
    from datasets import DatasetDict

    from ..storage import save_dataset_atomic
    from .common import first_rows, load_dataset_dict, load_stage_tokenizer, require

    if block_size <= MARGIN:
        raise InputError(f"--block_size must exceed {MARGIN} (the threshold is block_size - {MARGIN}), got {block_size}")
    dataset_dict = load_dataset_dict(dataset_dir, "--dataset")
    for split, dataset in dataset_dict.items():
        require(dataset, [TEXT], f"--dataset {dataset_dir} split {split!r}")
        require_text(dataset, f"--dataset {dataset_dir} split {split!r}")
    tokenizers = [load_stage_tokenizer(path, None, cache_dir) for path in model_paths]
    result = {}
    for split, dataset in dataset_dict.items():
        dataset = first_rows(dataset, sample_prop)
        result[split] = split_dataset(dataset, tokenizers, block_size, num_proc)
        logger.info("split %s: %d rows -> %d rows", split, len(dataset), len(result[split]))
    save_dataset_atomic(DatasetDict(result), save_dir, provenance=record)
