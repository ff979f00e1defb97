"""get_data_representation's work on disk (docs/design.md 4): the tokenized set of a corpus split, built
once and then reused, and one model's representation set, both written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

from . import data, provenance
from .errors import InputError
from .representation import CaptureOptions, representation_dataset, select_records, tokenize_records
from .schema import TOKENIZED_COLUMNS, require_columns
from .storage import load_train_splits, save_train_split, scratch_dir, write_json
from .templates import ChatTemplate

logger = logging.getLogger(__name__)


def skipped_report_path(tokenized_path: str | Path) -> Path:
    """Where ``--skip_invalid`` lists the records it left out: ``<tokenized set>.skipped.json``."""
    path = Path(tokenized_path)
    return path.with_name(path.name + ".skipped.json")


def dropped_report_path(tokenized_path: str | Path) -> Path:
    """Where the records kept without their first message are listed."""
    path = Path(tokenized_path)
    return path.with_name(path.name + ".dropped_messages.json")


def tokenized_set(path: str | Path, data_path: str, tokenizer, template: ChatTemplate, max_length: int,
                  mask_instruction: bool, sample_prop: float | None = None, split_num: int | None = None,
                  split_index: int | None = None, skip_invalid: bool = False, num_proc: int | None = None,
                  separator: str | None = None, record: dict | None = None, accept_unrecorded: bool = False):
    """The tokenized set at ``path``: loaded if it exists (and ``record``, the provenance of what this
    run would make, matches the one saved with it), else built from the corpus split and saved."""
    path = Path(path)
    if path.exists():
        if record is not None:
            provenance.check_reuse(path, record, "--tknz_dataset_path", accept_unrecorded)
        logger.info("reusing the tokenized set at %s", path)
        (tokenized,), _ = load_train_splits(str(path), "tokenized set")
        require_columns(tokenized, TOKENIZED_COLUMNS, str(path))
        return tokenized
    records = select_records(data.read_corpus(data_path), sample_prop, split_num, split_index)
    valid, problems = data.validate_records(records, skip_invalid=skip_invalid)
    data.log_problems(problems, data_path)
    if skip_invalid:
        report = skipped_report_path(path)
        write_json(report, [{"id": p.record_id, "reason": p.reason} for p in problems if not p.kept])
        logger.warning("skipped %d invalid record(s); listed in %s", sum(not p.kept for p in problems), report)
    if any(p.kept for p in problems):
        report = dropped_report_path(path)
        write_json(report, [{"id": p.record_id, "reason": p.reason} for p in problems if p.kept])
        logger.warning("the records kept without their first message are listed in %s", report)
    if not valid:
        raise InputError(f"{data_path}: no valid records in this split")
    tokenized = tokenize_records(valid, tokenizer, template, max_length, mask_instruction, num_proc, separator)
    save_train_split(tokenized, path, num_proc, record=record)
    (tokenized,), _ = load_train_splits(str(path), "tokenized set")
    return tokenized


def capture_model(model_name_or_path: str, tokenizer, max_length: int, load_in_half: str = "none",
                  device_map: str | None = None, flash_attn: bool = False, cache_dir: str | None = None,
                  top_k: int = 1):
    """The model in eval mode, on the GPU when there is one (unless ``device_map`` places it), checked
    to score every token id of ``tokenizer`` and to have at least ``top_k`` of them."""
    import torch

    from .modeling import load_causal_lm, output_vocab_size

    model = load_causal_lm(model_name_or_path, max_length, load_in_half, device_map, flash_attn, cache_dir)
    model.eval()
    if not device_map and torch.cuda.is_available():
        model.to("cuda")
    vocab = output_vocab_size(model)
    if len(tokenizer) > vocab:
        raise InputError(f"{model_name_or_path}: tokenizer has {len(tokenizer)} tokens but the model's "
                         f"output layer only {vocab}")
    if top_k > vocab:
        raise InputError(f"--top_k_logits {top_k} is above the vocabulary size {vocab} of {model_name_or_path}")
    return model


def save_representations(tokenized, options: CaptureOptions, model, pad_id: int, out: str | Path,
                         record: dict | None = None) -> int:
    """Capture the representations of every row and save the set at ``out`` with the provenance
    ``record``; returns its row count."""
    with scratch_dir(out) as scratch:
        captured = representation_dataset(tokenized, options, model, pad_id, scratch)
        save_train_split(captured, out, record=record)
    return len(captured)
