"""Splitting long texts so that every piece fits all three tokenizers (DESIGN.md 12.1).

A text whose token count exceeds ``block_size - 48`` for any tokenizer is cut by the tokenizer that
gives it the most tokens (ties: base, blending, another blending) into consecutive chunks of that
many ids, each decoded back to text with special tokens skipped. Decoding is not an inverse of the
cut (a SentencePiece chunk loses its leading space, a split multi-byte character becomes U+FFFD, a
literal special-token string vanishes); that is the released corpus (12.8 #12) and is kept.
"""

from __future__ import annotations

from .common import TEXT

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
    chosen = lengths.index(longest)  # the first maximum: base, blending, another blending
    ids, tokenizer = encodings[chosen], tokenizers[chosen]
    return [tokenizer.decode(ids[start:start + threshold], skip_special_tokens=True)
            for start in range(0, len(ids), threshold)]


def split_batch(batch: dict, tokenizers, threshold: int) -> dict:
    return {TEXT: [piece for text in batch[TEXT] for piece in split_text(text, tokenizers, threshold)]}


def split_dataset(dataset, tokenizers, block_size: int, num_proc: int | None = None):
    """One split: a single ``text`` column, long texts expanded in place, other columns dropped."""
    return dataset.map(split_batch, batched=True, batch_size=100, remove_columns=dataset.column_names,
                       fn_kwargs={"tokenizers": tokenizers, "threshold": split_threshold(block_size)},
                       num_proc=num_proc if num_proc and num_proc > 1 else None, desc="Splitting long texts")
