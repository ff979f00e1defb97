"""The training sets of train.py's three modes (docs/design.md 8), checked before training starts.

--do_fuse         aligned sets: token columns, the pivot's and the source's top-k lists, and the
                  two sequence CEs (only the lists with --fuse_with_ref_model False)
--train_baseline  representation sets: plain SFT on their token columns
neither           the JSON corpus, rendered with the run's conversation template and tokenized

Dataset folders (comma-separated) are checked one by one, so an error names the folder and the
row; then they are concatenated and the training set is shuffled with seed 42, as the reference
does. The checks run on whole Arrow record batches (lengths, id ranges, NaNs), never element by
element in Python: a real set holds 95k rows x 2048 positions x 10 entries per list.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from ..data import log_problems, read_corpus, validate_records
from ..errors import InputError
from ..schema import (FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, IGNORE_INDEX, INDICES, LOGITS,
                      METRIC_CE, PER_STEP_FUSED_METRIC_CE, TOKEN_COLUMNS, metric_array, train_split)
from ..storage import load_dataset_dir, split_paths
from ..templates import encode_rendered, get_template, render_conversation
from ..arrow import flat_values, list_lengths, list_values, record_batches

logger = logging.getLogger(__name__)

SHUFFLE_SEED = 42
CHECK_ROWS = 1024  # rows per checked record batch
ENCODE_BATCH = 1000  # conversations per tokenizer call


@dataclass(frozen=True)
class SetRequirements:
    """What a dataset folder must hold for this run."""

    fuse: bool
    fuse_with_ref_model: bool
    vocab_size: int
    model_max_length: int

    @property
    def topk_pairs(self) -> tuple[tuple[str, str], ...]:
        return ((LOGITS, INDICES), (FUSED_LOGITS, FUSED_INDICES)) if self.fuse else ()

    @property
    def metric_columns(self) -> tuple[str, ...]:
        return (METRIC_CE, FUSED_METRIC_CE) if self.fuse and self.fuse_with_ref_model else ()

    @property
    def columns(self) -> tuple[str, ...]:
        return TOKEN_COLUMNS + tuple(c for pair in self.topk_pairs for c in pair) + self.metric_columns


# ---- checks -----------------------------------------------------------------------------------

def check_columns(dataset, where: str, req: SetRequirements) -> None:
    present = set(dataset.column_names)
    if req.fuse and not {FUSED_LOGITS, FUSED_INDICES} <= present:
        raise InputError(f"{where}: --do_fuse needs an aligned set with {FUSED_LOGITS} and {FUSED_INDICES}, "
                         f"but this set has no fused columns (found {dataset.column_names}); run replace_model "
                         f"or align_token_and_vocab on it first")
    if FUSED_METRIC_CE in req.metric_columns and FUSED_METRIC_CE not in present and PER_STEP_FUSED_METRIC_CE in present:
        raise InputError(f"{where}: has only the token-level {PER_STEP_FUSED_METRIC_CE}; the MinCE choice of "
                         f"--fuse_with_ref_model needs the sequence-level {FUSED_METRIC_CE} (--metric_level sequence)")
    missing = [c for c in req.columns if c not in present]
    if missing:
        raise InputError(f"{where}: missing column(s) {missing}; found {dataset.column_names}")


def check_rows(dataset, where: str, req: SetRequirements) -> None:
    """Every row fits the run: consistent lengths, ids inside the model's vocabulary, no NaN."""
    check_columns(dataset, where, req)
    columns = list(req.columns) + ([ID] if ID in dataset.column_names else [])
    first_row, too_long = 0, 0
    with tqdm(total=len(dataset), desc=f"checking {where}", unit="row", leave=False) as bar:
        for batch in record_batches(dataset, columns, CHECK_ROWS):
            too_long += _check_batch(batch, first_row, where, req)
            first_row += batch.num_rows
            bar.update(batch.num_rows)
    if too_long:
        logger.warning("%s: %d of %d rows are longer than --model_max_length %d and are truncated",
                       where, too_long, len(dataset), req.model_max_length)


def _check_batch(batch: pa.RecordBatch, first_row: int, where: str, req: SetRequirements) -> int:
    """Raise on the first bad row of ``batch``; return how many rows exceed model_max_length."""
    def fail(row: int, message: str):
        name = f" (id {batch.column(ID)[row].as_py()!r})" if ID in batch.schema.names else ""
        raise InputError(f"{where}: row {first_row + row}{name}: {message}")

    for name in batch.schema.names:
        if batch.column(name).null_count:
            fail(int(np.flatnonzero(batch.column(name).is_null().to_numpy(zero_copy_only=False))[0]),
                 f"{name} is null")
    lengths = _check_token_columns(batch, req.vocab_size, fail)
    for logits_name, ids_name in req.topk_pairs:
        _check_topk(batch, logits_name, ids_name, lengths, req.vocab_size, fail)
    for name in req.metric_columns:
        try:
            values = metric_array(batch.column(name), name, "metric")
        except InputError as exc:
            fail(0, str(exc).removeprefix("metric: "))
        nan = np.isnan(values)
        if nan.any():
            fail(int(np.flatnonzero(nan)[0]), f"{name} is NaN; run filter_nan on the set first")
    return int((lengths > req.model_max_length).sum())


def _check_token_columns(batch: pa.RecordBatch, vocab: int, fail) -> np.ndarray:
    """input_ids, labels and attention_mask agree in length; ids fit the vocabulary. Returns the lengths."""
    input_ids, labels = batch.column("input_ids"), batch.column("labels")
    lengths = list_lengths(input_ids)
    if (lengths == 0).any():
        fail(int(np.flatnonzero(lengths == 0)[0]), "input_ids is empty")
    for name in ("labels", "attention_mask"):
        other = list_lengths(batch.column(name))
        if not np.array_equal(other, lengths):
            row = int(np.flatnonzero(other != lengths)[0])
            fail(row, f"{name} has {other[row]} entries but input_ids has {lengths[row]}")
    ids = flat_values(input_ids)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab))
    if len(bad):
        fail(_row_of(input_ids, bad[0]), f"input_ids hold id {ids[bad[0]]}, outside the model's vocabulary of "
                                         f"{vocab} ids: the set was made with another tokenizer (vocabulary size "
                                         f"mismatch with the model)")
    values = flat_values(labels)
    bad = np.flatnonzero((values != IGNORE_INDEX) & ((values < 0) | (values >= vocab)))
    if len(bad):
        fail(_row_of(labels, bad[0]), f"labels hold id {values[bad[0]]}, outside the model's vocabulary of "
                                      f"{vocab} ids")
    return lengths


def _check_topk(batch: pa.RecordBatch, logits_name: str, ids_name: str, lengths: np.ndarray, vocab: int,
                fail) -> None:
    """One list per token; logits and ids lists of equal length; ids in the vocabulary; no NaN logits."""
    logits, ids = batch.column(logits_name), batch.column(ids_name)
    for name, column in ((logits_name, logits), (ids_name, ids)):
        positions = list_lengths(column)
        if not np.array_equal(positions, lengths):
            row = int(np.flatnonzero(positions != lengths)[0])
            fail(row, f"{name} has {positions[row]} positions but input_ids has {lengths[row]}")
    inner_logits, inner_ids = list_values(logits), list_values(ids)
    mismatch = np.flatnonzero(list_lengths(inner_logits) != list_lengths(inner_ids))
    if len(mismatch):
        fail(*_at(logits, mismatch[0], f"{logits_name} and {ids_name} lists differ in length"))
    values = flat_values(inner_ids)
    bad = np.flatnonzero((values < 0) | (values >= vocab))
    if len(bad):
        fail(*_at(ids, _parent(inner_ids)[bad[0]], f"{ids_name} holds target id {values[bad[0]]}, outside the "
                                                   f"model's vocabulary of {vocab} ids"))
    values = flat_values(inner_logits)
    bad = np.flatnonzero(np.isnan(values) | (values == np.inf))
    if len(bad):
        fail(*_at(logits, _parent(inner_logits)[bad[0]], f"{logits_name} holds {values[bad[0]]}"))


def _parent(array: pa.Array) -> np.ndarray:
    return pc.list_parent_indices(array).to_numpy()


def _row_of(array: pa.Array, element: int) -> int:
    return int(_parent(array)[element])


def _at(array: pa.Array, position: int, message: str) -> tuple[int, str]:
    """(row, message naming the position in the row) of entry ``position`` of the flattened ``array``."""
    row = int(_parent(array)[position])
    lengths = list_lengths(array)
    return row, f"position {int(position - (np.cumsum(lengths) - lengths)[row])}: {message}"


# ---- loading ----------------------------------------------------------------------------------

class ArrowRows(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` whose batches are read as pyarrow Tables (the collator's fast path).

    ``dataset[i]`` still gives a row dict, for samplers that look at single rows.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self._arrow = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[index]

    def __getitems__(self, indices) -> pa.Table:
        return self._arrow[list(indices)]


def load_dataset_sets(paths: str, req: SetRequirements, flag: str = "--data_path"):
    """Check every folder of ``paths`` and concatenate them (only the columns the run needs)."""
    from datasets import concatenate_datasets

    folders = split_paths(paths or "")
    if not folders:
        raise InputError(f"{flag}: no dataset folder given")
    sets = []
    for folder in folders:
        dataset = train_split(load_dataset_dir(folder, f"{flag} dataset"), folder)
        check_rows(dataset, folder, req)
        sets.append(dataset)
    keep = list(req.columns) + ([ID] if all(ID in d.column_names for d in sets) else [])
    sets = [d.select_columns(keep) for d in sets]
    if len(sets) == 1:
        return sets[0]
    for folder, dataset in zip(folders[1:], sets[1:]):
        if dataset.features != sets[0].features:
            raise InputError(f"{flag}: {folder} stores its columns with other types than {folders[0]} "
                             f"({dataset.features} vs {sets[0].features}); they cannot be concatenated")
    return concatenate_datasets(sets)


class ConversationRows(torch.utils.data.Dataset):
    """JSON corpus conversations, tokenized up front or (``lazy``) when first read."""

    def __init__(self, records: list[dict], tokenizer, conv_temp: str, max_length: int,
                 mask_instruction: bool = True, lazy: bool = False, separator: str | None = None):
        self.records = records
        self.tokenizer = tokenizer
        self.separator = separator or tokenizer.eos_token
        self.template = get_template(conv_temp)
        self.max_length = max_length
        self.mask_instruction = mask_instruction
        self._rows: list[dict | None] = [None] * len(records)
        if not lazy:
            for start in tqdm(range(0, len(records), ENCODE_BATCH), desc="tokenizing", unit="batch"):
                self._encode(range(start, min(start + ENCODE_BATCH, len(records))))

    def _encode(self, indices) -> None:
        indices = list(indices)
        rendered = [render_conversation(self.template, self.records[i]["messages"], self.separator)
                    for i in indices]
        encoded = encode_rendered(self.tokenizer, rendered, self.max_length, self.mask_instruction)
        for n, i in enumerate(indices):
            self._rows[i] = {ID: self.records[i]["id"], **{k: v[n] for k, v in encoded.items()}}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        if self._rows[index] is None:
            self._encode([index])
        return self._rows[index]


def load_corpus_rows(path: str, tokenizer, data_args, max_length: int, shuffle: bool,
                     separator: str | None = None) -> ConversationRows:
    records, problems = validate_records(read_corpus(path))
    log_problems(problems, path)
    if shuffle:
        records = random.Random(SHUFFLE_SEED).sample(records, len(records))
    return ConversationRows(records, tokenizer, data_args.conv_temp, max_length, data_args.mask_instruction,
                            data_args.lazy_preprocess, separator)


def build_sets(data_args, training_args, tokenizer, vocab_size: int, separator: str | None = None):
    """``(train_set, eval_set or None)`` for the run's mode; bad input raises before training."""
    get_template(data_args.conv_temp)  # an unknown template fails here, before any loading
    if training_args.do_fuse or training_args.train_baseline:
        req = SetRequirements(training_args.do_fuse, training_args.fuse_with_ref_model, vocab_size,
                              training_args.model_max_length)
        train = ArrowRows(load_dataset_sets(data_args.data_path, req).shuffle(seed=SHUFFLE_SEED))
        evaluation = (ArrowRows(load_dataset_sets(data_args.eval_data_path, req, "--eval_data_path"))
                      if data_args.eval_data_path else None)
        return train, evaluation
    max_length = training_args.model_max_length
    train = load_corpus_rows(data_args.data_path, tokenizer, data_args, max_length, shuffle=True, separator=separator)
    evaluation = (load_corpus_rows(data_args.eval_data_path, tokenizer, data_args, max_length, shuffle=False,
                                   separator=separator)
                  if data_args.eval_data_path else None)
    return train, evaluation
