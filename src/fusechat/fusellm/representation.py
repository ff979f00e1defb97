"""Plain-text representations of one model (docs/design.md 12.2, forward_for_logits.py).

Input per row: the text plus the tokenizer's EOS string, encoded without special tokens (no BOS),
truncated to ``model_max_length``; labels = input_ids, attention mask all ones. The forward pass,
top-k capture and per-step CE are FuseChat's capture (``fusechat.representation``) with the
float16 ``metric_ce`` of 12.2. Rows are stored unpadded: the top-k and per-step columns keep only
the L real positions (the reference pads them to 2048; the values at real positions are the same).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from ..modeling import output_vocab_size
from ..representation import CaptureOptions, representation_dataset
from ..schema import ID, METRIC_CE, PER_STEP_METRIC_CE
from .common import TEXT, encode_documents

logger = logging.getLogger(__name__)


def tokenize_documents(dataset, tokenizer, max_length: int, split: str, first_row: int = 0,
                       num_proc: int | None = None):
    """``id`` (``"<split>:<row>"``, for error messages), input_ids, labels, attention_mask."""
    from ..schema import tokenized_features

    def encode(batch, indices):
        ids = encode_documents(tokenizer, batch[TEXT], max_length)
        return {ID: [f"{split}:{first_row + i}" for i in indices], "input_ids": ids, "labels": ids,
                "attention_mask": [[1] * len(row) for row in ids]}

    return dataset.map(encode, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       features=tokenized_features(), num_proc=num_proc if num_proc and num_proc > 1 else None,
                       desc=f"Tokenizing {split}")


def check_one_token_rows(tokenized, where: str) -> None:
    """A row of one token has no next-token prediction: metric_ce = 0/0 = NaN (12.8 #33)."""
    from ..arrow import row_lengths

    short = (row_lengths(tokenized) < 2).nonzero()[0]
    if short.size:
        rows = [tokenized[int(r)][ID] for r in short[:5]]
        raise InputError(f"{where}: row(s) {rows} hold a single token (empty text after splitting?), so "
                         "metric_ce is NaN; pass --no_assert to keep them (packing --fiter_nan drops them)")


def capture_split(texts, tokenized, model, pad_id: int, options: CaptureOptions, scratch_dir: str,
                  progress: bool = True):
    """The representation columns of one split in FuseLLM's layout (text kept, float16 metrics)."""
    from datasets import Value, List

    captured = representation_dataset(tokenized, options, model, pad_id, scratch_dir, progress=progress)
    # metric_ce holds float16 values already; the per-step CEs are rounded as the reference stores them.
    captured = captured.cast_column(METRIC_CE, Value("float16"))
    if PER_STEP_METRIC_CE in captured.column_names:
        captured = captured.cast_column(PER_STEP_METRIC_CE, List(Value("float16")))
    captured = captured.remove_columns(ID).add_column(TEXT, list(texts))
    return captured.select_columns(_ordered(captured.column_names))


def _ordered(columns: list[str]) -> list[str]:
    """The column order of the reference's sets: text, input_ids, attention_mask, labels, the rest."""
    first = [TEXT, "input_ids", "attention_mask", "labels"]
    return first + [c for c in columns if c not in first]


def empty_split(options: CaptureOptions, vocab_size: int):
    """A split with no rows (a small --dataset_sample_prop), with the columns of a captured one."""
    from datasets import Dataset, Features, List, Value

    from ..schema import index_dtype_for, representation_features

    features = representation_features(options.per_token_metric, index_dtype_for(vocab_size))
    features[METRIC_CE] = Value("float16")
    if options.per_token_metric:
        features[PER_STEP_METRIC_CE] = List(Value("float16"))
    del features[ID]
    features[TEXT] = Value("string")
    features = Features({name: features[name] for name in _ordered(list(features))})
    return Dataset.from_dict({name: [] for name in features}, features=features)


def represent_dataset_dict(dataset_dict, tokenizer, model, max_length: int, options: CaptureOptions,
                           scratch_dir: str, sample_prop=None, split_num=None, split_index=None,
                           num_proc: int | None = None, progress: bool = True):
    """Every split: first rows, shard, tokenize, capture. The result lives in ``scratch_dir`` until
    the caller has saved it."""
    from datasets import DatasetDict

    from .common import first_rows, require, shard

    result = {}
    for split, dataset in dataset_dict.items():
        require(dataset, [TEXT], f"--dataset split {split!r}")
        dataset, start = shard(first_rows(dataset, sample_prop), split_num, split_index)
        if len(dataset) == 0:
            result[split] = empty_split(options, output_vocab_size(model))
            continue
        tokenized = tokenize_documents(dataset, tokenizer, max_length, split, start, num_proc)
        if not options.no_assert:
            check_one_token_rows(tokenized, f"--dataset split {split!r}")
        split_scratch = Path(scratch_dir) / split
        split_scratch.mkdir(parents=True, exist_ok=True)
        result[split] = capture_split(dataset[TEXT], tokenized, model, pad_id=tokenizer.pad_token_id,
                                      options=options, scratch_dir=str(split_scratch), progress=progress)
        logger.info("split %s: %d rows", split, len(result[split]))
    return DatasetDict(result)


def forward_for_logits(dataset_dir: str, save_dir: str, model_name_or_path: str, max_length: int,
                       options: CaptureOptions, load_in_half: str = "none", cache_dir: str | None = None,
                       sample_prop: float | None = None, split_num: int | None = None,
                       split_index: int | None = None, num_proc: int | None = None) -> None:
    """forward_for_logits.py: the representations of one model over every split at ``dataset_dir``,
    saved at ``save_dir``."""
    import torch

    from ..modeling import load_causal_lm
    from ..provenance import fusellm_record
    from ..storage import save_dataset_atomic, scratch_dir
    from .common import load_dataset_dict, load_stage_tokenizer

    if options.top_k < 1:
        raise InputError(f"--top_k_logits must be at least 1 (full logits are refused), got {options.top_k}")
    if max_length < 2:
        raise InputError(f"--model_max_length must be at least 2, got {max_length}")
    dataset_dict = load_dataset_dict(dataset_dir, "--dataset")
    tokenizer = load_stage_tokenizer(model_name_or_path, max_length, cache_dir)
    model = load_causal_lm(model_name_or_path, None, load_in_half, cache_dir=cache_dir)
    # As the release (12.2): eager attention. In bfloat16 SDPA rounds differently and reorders
    # near-tied top-k entries (docs/differences_fusellm_fidelity.md).
    model.set_attn_implementation("eager")
    model.eval()
    model.config.use_cache = False
    if torch.cuda.is_available():
        model.to("cuda")
    if len(tokenizer) > output_vocab_size(model):
        raise InputError(f"{model_name_or_path}: tokenizer has {len(tokenizer)} tokens but the model's "
                         f"output layer only {output_vocab_size(model)}")
    if options.top_k > output_vocab_size(model):
        raise InputError(f"--top_k_logits {options.top_k} is above the vocabulary size {output_vocab_size(model)} "
                         f"of {model_name_or_path}")
    record = fusellm_record(tokenizer, model_name_or_path, max_length, [dataset_dir])
    with scratch_dir(save_dir) as scratch:
        result = represent_dataset_dict(dataset_dict, tokenizer, model, max_length, options, str(scratch),
                                        sample_prop, split_num, split_index, num_proc)
        save_dataset_atomic(result, save_dir, provenance=record)
    logger.info("saved %s rows to %s", {s: len(d) for s, d in result.items()}, save_dir)
