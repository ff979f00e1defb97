"""align_token_and_vocab's work over saved sets (docs/design.md 6.2, 6.3): the token pass (every row's
token alignment, the count matrix, the mapping) and the distribution pass, as ``datasets.map`` jobs.

A *paired* set (:func:`fusechat.schema.paired`) holds the pivot's (base) columns as they are and the
source's (blending) columns prefixed with ``blending_``, row r of both being the same conversation.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arrow import arrow_column, first_differing_row, row_lengths
from ..errors import InputError
from ..kernels.align_methods import align_method
from ..kernels.distribution import carried_positions
from ..kernels.dtw import align_tokens, decoded_token_strings
from ..schema import (BLENDING, FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, ID, INDICES, LOGITS,
                      PER_STEP_FUSED_METRIC_CE, paired, require_columns)
from ..storage import load_train_splits, save_train_split, split_paths
from .distribution_alignment import DistributionAligner, dropped_columns, fused_columns, not_aligned
from .vocab_mapping import (AlignmentCounts, Vocabulary, blending_to_base_mapping, check_count_matrix,
                            load_blending_to_base, matched_blending_ids, save_blending_to_base, save_count_matrix)

ALIGNMENT_COLUMN = "base_to_blending_mapping"
SOURCE_POSITIONS_COLUMN = "_source_positions"  # per row: positions that carry the source's distribution

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerSpec:
    """How to load a tokenizer; cheap to pickle into ``datasets`` worker processes (a tokenizer object
    with a 152k vocabulary takes seconds to pickle and to hash for the cache fingerprint)."""

    name_or_path: str
    use_fast: bool = True
    trust_remote_code: bool = False
    cache_dir: str | None = None

    def load(self):
        return _load_tokenizer(self)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(spec: TokenizerSpec):
    from ..modeling import load_tokenizer

    return load_tokenizer(spec.name_or_path, None, spec.cache_dir, spec.use_fast, spec.trust_remote_code)


def token_alignment_batch(batch, base: TokenizerSpec, blending: TokenizerSpec, base_marker: str,
                          blending_marker: str):
    """docs/design.md 6.1 for every row: per base position, the blending positions matched to it."""
    base_tokenizer, blending_tokenizer = base.load(), blending.load()
    alignments = []
    for base_ids, blending_ids in zip(batch["input_ids"], batch[BLENDING + "input_ids"]):
        alignments.append(align_tokens(decoded_token_strings(base_tokenizer, base_ids),
                                       decoded_token_strings(blending_tokenizer, blending_ids),
                                       base_marker, blending_marker))
    return {ALIGNMENT_COLUMN: alignments}


def with_token_alignments(pairs, tokenized, where: str):
    """The paired set with the ``base_to_blending_mapping`` column of the token pass's tokenized set.

    That set covers every split (and maybe other rows): rows are matched by conversation id and
    length, in order among equal keys, and their ``input_ids`` must be the very ones aligned.
    """
    from datasets import concatenate_datasets

    require_columns(tokenized, (ID, "input_ids", ALIGNMENT_COLUMN), where)
    require_columns(pairs, (ID,), "the base set")
    rows_of: dict[tuple, list[int]] = {}
    keys = zip(arrow_column(tokenized, ID).to_pylist(), row_lengths(tokenized).tolist())
    for row, key in enumerate(keys):
        rows_of.setdefault(key, []).append(row)
    used: dict[tuple, int] = {}
    picked = []
    for row, key in enumerate(zip(arrow_column(pairs, ID).to_pylist(), row_lengths(pairs).tolist())):
        candidates, k = rows_of.get(key, []), used.get(key, 0)
        if k >= len(candidates):
            raise InputError(f"{where}: no token alignment of conversation {key[0]!r} (row {row}, {key[1]} tokens); "
                             "run --do_token_alignment on the same tokenized sets")
        used[key] = k + 1
        picked.append(candidates[k])
    alignments = tokenized.select(picked)
    row = first_differing_row(arrow_column(alignments, "input_ids"), arrow_column(pairs, "input_ids"))
    if row is not None:
        raise InputError(f"{where}: the input_ids of conversation {pairs[row][ID]!r} (row {row}) differ from the "
                         "ones the token pass aligned")
    return concatenate_datasets([pairs, alignments.select_columns([ALIGNMENT_COLUMN]).flatten_indices()], axis=1)


def distribution_alignment_batch(batch, aligner: DistributionAligner | None, base: TokenizerSpec,
                                 blending: TokenizerSpec, metric_level: str):
    """docs/design.md 6.3 for every row; ``aligner`` None means ``--not_align`` (lists copied unmapped).

    The token alignment (6.1) comes from the ``base_to_blending_mapping`` column when the batch has
    it (:func:`with_token_alignments`); only without it is it computed here.
    """
    base_tokenizer, blending_tokenizer = base.load(), blending.load()
    out: dict[str, list] = {}
    for r in range(len(batch["input_ids"])):
        base_row = {k: batch[k][r] for k in batch if not k.startswith(BLENDING) and k != ALIGNMENT_COLUMN}
        blending_row = {k[len(BLENDING):]: batch[k][r] for k in batch if k.startswith(BLENDING)}
        base_ids, blending_ids = base_row["input_ids"], blending_row["input_ids"]
        where = f"conversation {base_row.get(ID, r)!r}"
        if aligner is None:
            logits, indices = not_aligned(blending_row[LOGITS], blending_row[INDICES])
        else:
            logits, indices = aligner.align_sample(
                base_ids, decoded_token_strings(base_tokenizer, base_ids), blending_ids,
                decoded_token_strings(blending_tokenizer, blending_ids), blending_row[LOGITS], blending_row[INDICES],
                where=where, alignment=batch[ALIGNMENT_COLUMN][r] if ALIGNMENT_COLUMN in batch else None)
        columns = fused_columns(base_row, blending_row, logits, indices, metric_level, where=where)
        columns[SOURCE_POSITIONS_COLUMN] = carried_positions(base_ids, logits, indices) if aligner is not None else len(base_ids)
        for key, value in columns.items():
            out.setdefault(key, []).append(value)
    return out


def aligned_features(base_features, metric_level: str, fused_index_dtype: str):
    """The aligned set's features: the pivot's (less the dropped metric) plus the fused columns."""
    from datasets import Features, List, Value

    features = {k: v for k, v in base_features.items()
                if k not in (*dropped_columns(metric_level), ALIGNMENT_COLUMN) and not k.startswith(BLENDING)}
    features[FUSED_LOGITS] = List(List(Value("float16")))
    features[FUSED_INDICES] = List(List(Value(fused_index_dtype)))
    if metric_level == "sequence":
        features[FUSED_METRIC_CE] = Value("float16")
    else:
        features[PER_STEP_FUSED_METRIC_CE] = List(Value("float16"))
    features[SOURCE_POSITIONS_COLUMN] = Value("int64")
    return Features(features)


def source_position_share(dataset) -> float:
    """The share of pivot positions, over the whole set, whose fused entry is the source's distribution."""
    total = int(row_lengths(dataset).sum())
    return float(np.sum(dataset[SOURCE_POSITIONS_COLUMN])) / total if total else 0.0


# --- the two passes over saved sets ----------------------------------------------------------

@dataclass(frozen=True)
class MapSettings:
    """How ``datasets.map`` runs: rows per batch, worker processes, and the scratch folder that takes
    its cache files (never next to the input sets; results are never reused from a cache, so a fresh
    fingerprint spares hashing the arguments)."""

    batch_size: int
    workers: int
    scratch: Path

    def kwargs(self, name: str) -> dict:
        return dict(batched=True, batch_size=max(1, self.batch_size),
                    num_proc=self.workers if self.workers > 1 else None,
                    cache_file_name=str(self.scratch / f"{name}.arrow"), load_from_cache_file=False,
                    new_fingerprint=uuid.uuid4().hex[:24])


def sampled(dataset, proportion: float | None):
    """``--dataset_sample_prop``: the same rows of every model's set (the data module's sampler)."""
    from ..data import sample_indices

    return dataset if proportion is None else dataset.select(sample_indices(len(dataset), proportion))


def load_pairs(base_dirs: str, blending_dirs: str, base_columns: Sequence[str], blending_columns: Sequence[str],
               what: str, sample_prop: float | None = None) -> list:
    """The paired sets of comma-separated base and blending set lists (split k with split k)."""
    bases, base_names = load_train_splits(base_dirs, f"base {what}")
    blendings, blending_names = load_train_splits(blending_dirs, f"blending {what}")
    if len(bases) != len(blendings):
        raise InputError(f"--base_dataset_dir lists {len(bases)} sets but --blending_dataset_dir {len(blendings)}")
    for base, blending, base_name, blending_name in zip(bases, blendings, base_names, blending_names):
        require_columns(base, base_columns, base_name)
        require_columns(blending, blending_columns, blending_name)
    return [paired(sampled(base, sample_prop), sampled(blending, sample_prop), base_name, blending_name,
                   blending_columns)
            for base, blending, base_name, blending_name in zip(bases, blendings, base_names, blending_names)]


def token_pass(pairs: list, base: TokenizerSpec, blending: TokenizerSpec, base_vocab: Vocabulary,
               blending_vocab: Vocabulary, settings: MapSettings):
    """docs/design.md 6.1 over every row of every paired set and the count matrix C of 6.2.

    Returns ``(C as CSR, the base rows with their base_to_blending_mapping column)``.
    """
    from datasets import concatenate_datasets

    counts = AlignmentCounts(base_vocab.size, blending_vocab.size)
    aligned_parts = []
    for n, pair_set in enumerate(pairs):
        aligned = pair_set.map(token_alignment_batch, fn_kwargs=dict(
            base=base, blending=blending, base_marker=base_vocab.marker, blending_marker=blending_vocab.marker),
            desc=f"Token alignment, set {n + 1} of {len(pairs)}", **settings.kwargs(f"token_alignment_{n}"))
        for batch in aligned.select_columns(["input_ids", BLENDING + "input_ids", ALIGNMENT_COLUMN]).iter(1000):
            for base_ids, blending_ids, alignment in zip(batch["input_ids"], batch[BLENDING + "input_ids"],
                                                         batch[ALIGNMENT_COLUMN], strict=True):
                counts.add(base_ids, matched_blending_ids(blending_ids, alignment))
        aligned_parts.append(aligned.remove_columns([BLENDING + "input_ids"]))
    matrix = counts.to_csr()
    logger.info("token alignment count matrix: %d nonzeros in %s", matrix.nnz, matrix.shape)
    return matrix, concatenate_datasets(aligned_parts)


def separator_pair(base_dirs: str, blending_dirs: str, base_vocab: Vocabulary,
                   blending_vocab: Vocabulary) -> tuple[int, int] | None:
    """(blending id, base id) of the turn separators the two tokenized sets were made with (from their
    provenance records); None when they are the same piece, or a set has no record."""
    from ..provenance import first_record

    records = first_record(split_paths(base_dirs)), first_record(split_paths(blending_dirs))
    if None in records or records[0].get("separator") == records[1].get("separator"):
        return None
    base_id = base_vocab.index.get(records[0].get("separator"))
    blending_id = blending_vocab.index.get(records[1].get("separator"))
    return None if base_id is None or blending_id is None else (blending_id, base_id)


def save_token_pass(align_type: str, matrix, tokenized, base_vocab: Vocabulary, blending_vocab: Vocabulary,
                    matrix_file: str | None, mapping_file: str | None, tokenized_dir: str | None,
                    record: dict | None = None, separators: tuple[int, int] | None = None) -> None:
    """The token pass's outputs, the tokenized set first: the matrix, then the mapping, mark it done;
    each with ``record`` (what made them), the mapping's with the align type too.
    ``separators``: see :func:`separator_pair`."""
    mapping = blending_to_base_mapping(align_type, blending_vocab, base_vocab, counts=matrix, separators=separators)
    if mapping is not None and not mapping_file:
        raise InputError(f"--align_type {align_type} writes its mapping to --blending_to_base_file; give one")
    if tokenized_dir:
        save_train_split(tokenized, tokenized_dir, record=record)
    if matrix_file:
        save_count_matrix(matrix_file, matrix, record)
    if mapping is not None:
        save_blending_to_base(mapping_file, mapping, record and dict(record, align_type=align_type))


def token_pass_done(matrix_file: str | None, mapping_file: str | None, tokenized_dir: str | None) -> bool:
    """Every output the token pass was asked for exists already (so the pair's matrix is built once)."""
    outputs = [f for f in (matrix_file, mapping_file, tokenized_dir) if f]
    return bool(outputs) and all(Path(f).exists() for f in outputs)


def load_aligner(align_type: str, base_vocab: Vocabulary, blending_vocab: Vocabulary, mapping_file: str | None,
                 use_token_alignment_matrix: bool, matrix_file: str | None) -> DistributionAligner:
    """The distribution aligner of a model pair, from the token pass's files (checked, not recomputed)."""
    mapping = None
    if align_method(align_type).mapping is not None:
        if not mapping_file:
            raise InputError(f"--align_type {align_type} needs --blending_to_base_file")
        mapping = load_blending_to_base(mapping_file, blending_vocab.size, base_vocab.size)
    if use_token_alignment_matrix:  # the rule it enables needs no counts; the file must fit the pair
        if not matrix_file:
            raise InputError("--use_token_alignment_matrix needs --token_alignment_matrix_file")
        check_count_matrix(matrix_file, base_vocab.size, blending_vocab.size)
    return DistributionAligner.create(align_type, blending_vocab, base_vocab, mapping, use_token_alignment_matrix)


def distribution_pass(pair_set, aligner: DistributionAligner | None, base: TokenizerSpec, blending: TokenizerSpec,
                      metric_level: str, fused_index_dtype: str, settings: MapSettings,
                      tokenized_dir: str | None = None):
    """docs/design.md 6.3 over every row; returns ``(aligned set, share of positions with the source's
    distribution)``. With ``tokenized_dir`` (the token pass's tokenized set) the token alignments are
    read from it; ``aligner`` None is ``--not_align``."""
    if aligner is not None and tokenized_dir:
        (tokenized,), (tokenized_name,) = load_train_splits(tokenized_dir, "token-aligned set")
        pair_set = with_token_alignments(pair_set, tokenized, tokenized_name)
    features = aligned_features(pair_set.features, metric_level, fused_index_dtype)
    aligned = pair_set.map(distribution_alignment_batch, fn_kwargs=dict(
        aligner=aligner, base=base, blending=blending, metric_level=metric_level),
        remove_columns=[c for c in pair_set.column_names if c not in features], features=features,
        desc="Distribution alignment", **settings.kwargs("distribution_alignment"))
    share = source_position_share(aligned)
    return aligned.remove_columns([SOURCE_POSITIONS_COLUMN]), share
