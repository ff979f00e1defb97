"""Token and distribution alignment of one source onto the pivot's rows (docs/design.md 12.4).

Per row pair (pivot = base, m tokens; source = blending, n tokens):

1. token alignment: FuseChat's DTW kernel on vocabulary *pieces* with FuseLLM's cost (markers
   stripped, no fallback for empty strings) and backtrack order diagonal, up, left (12.4.1);
2. distribution alignment per base position i (12.4.2): a position matched to several blending
   tokens gets ONE-HOT; a position matched to one blending token j whose piece equals the base
   piece (marker replaced; ``soft``: or whose mapping is the base piece) gets j's top-k
   candidates mapped into the pivot's vocabulary, in the source's order, first logit per base id;
   anything else gets ONE-HOT. ONE-HOT is the *current* base token with logit 1.0 (the next one
   with ``onehot_next_token``, 12.8 #1). A byte-level source at i = 0 gets the base marker
   prefixed when the base piece has it and its own does not (12.8 #8).

Candidates that crash the reference are skipped and counted (12.8 #6): a piece missing from the
mapping, an id with no piece (the logit layer is wider than the tokenizer).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..kernels import checks
from ..kernels.align_methods import AlignMethod, align_method
from ..kernels.distribution import aligned_distributions, source_rows
from ..kernels.dtw import token_alignment_spans
from ..kernels.mined import BYTE_LEVEL_MARKER, word_start_marker
from .distill import teacher_columns

TIE_ORDER = "diagonal-up-left"
# Candidate table codes besides a base id (>= 0); below -1: skipped and counted.
NOT_IN_BASE, MISSING_KEY, NO_PIECE = -1, -2, -3

logger = logging.getLogger(__name__)


def check_align_type(align_type: str) -> AlignMethod:
    """A registered align method whose vocabulary mapping vocab_mapping.py writes (none, or MinED)."""
    return align_method(align_type, "--vocab_align_type", mappings=(None, "mined"))


def check_metric_level(metric_level: str) -> str:
    return checks.check_metric_level(
        metric_level, ("sequence",), "the released code writes per-token CEs in source positions, never aligned "
        "to the pivot, and its trainer ignores them (docs/design.md 12.8 #9); use --metric_level sequence")


def piece_table(tokenizer, width: int | None = None) -> np.ndarray:
    """Object array id -> piece (``convert_ids_to_tokens``), None for ids beyond the tokenizer."""
    size = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
    table = np.full(max(size, width or 0), None, dtype=object)
    table[:size] = tokenizer.convert_ids_to_tokens(list(range(size)))
    return table


@dataclass
class AlignmentTables:
    """Everything one model pair needs, built once: pieces, markers, the candidate table."""

    base_pieces: np.ndarray
    blending_pieces: np.ndarray  # marker NOT replaced (the DTW strips it)
    blending_replaced: list  # marker replaced by the base marker (None where no piece)
    base_marker: str
    blending_marker: str
    candidates: np.ndarray  # blending id -> base id, or NOT_IN_BASE / MISSING_KEY / NO_PIECE
    mapping: dict | None  # the method's vocabulary mapping (soft), else None
    byte_level_blending: bool
    method: AlignMethod

    @classmethod
    def build(cls, base_pieces, blending_pieces, base_marker: str, blending_marker: str, align_type: str,
              mapping: dict | None = None):
        method = check_align_type(align_type)
        if method.mapping is not None and mapping is None:
            raise InputError(f"--vocab_align_type {align_type} needs the mapping file (--vocab_mapping_save_dir)")
        base_pieces = np.asarray(base_pieces, dtype=object)
        blending_pieces = np.asarray(blending_pieces, dtype=object)
        base_index = {}
        for base_id, piece in enumerate(base_pieces.tolist()):
            if piece is not None:
                base_index.setdefault(piece, base_id)
        replaced = [None if p is None else p.replace(blending_marker, base_marker) for p in blending_pieces.tolist()]
        exact = np.array([NO_PIECE if piece is None else base_index.get(piece, NOT_IN_BASE) for piece in replaced],
                         dtype=np.int64)
        mapped = None
        if method.mapping is not None:
            mapped = np.array([NO_PIECE if piece is None else base_index[mapping[piece]] if piece in mapping
                               else MISSING_KEY for piece in replaced], dtype=np.int64)
        return cls(base_pieces, blending_pieces, replaced, base_marker, blending_marker,
                   method.candidates(exact, mapped), mapping if method.mapping is not None else None,
                   blending_marker == BYTE_LEVEL_MARKER, method)


def _pieces(table: np.ndarray, ids, side: str, where: str) -> list[str]:
    ids = np.asarray(ids, dtype=np.int64)
    bad = (ids < 0) | (ids >= len(table))
    pieces = table[np.where(bad, 0, ids)]
    if bad.any() or any(p is None for p in pieces):
        position = int(np.flatnonzero(bad | np.array([p is None for p in pieces]))[0])
        raise InputError(f"{where}: {side} token id {int(ids[position])} at position {position} has no piece "
                         "in its tokenizer (were the sets made with another model?)")
    return pieces.tolist()


def align_row(base_ids, blending_ids, blending_logits, blending_indices, tables: AlignmentTables,
              onehot_next_token: bool = False, where: str = "row"):
    """docs/design.md 12.4.1-12.4.2 for one row pair: (aligned logits, aligned ids, skipped candidates).

    Both lists have one entry per base position; an entry can be empty (hard: no candidate has a
    base piece; training then uses the pivot's own distribution there).
    """
    m, n = len(base_ids), len(blending_ids)
    if m == 0:
        return [], [], 0
    if n == 0:
        raise InputError(f"{where}: the source row is empty but the pivot row has {m} tokens")
    if len(blending_indices) < n or len(blending_logits) < n:
        raise InputError(f"{where}: the source has {n} tokens but top-k lists for only "
                         f"{min(len(blending_indices), len(blending_logits))} positions")
    base_pieces = _pieces(tables.base_pieces, base_ids, "pivot", where)
    blending_pieces = _pieces(tables.blending_pieces, blending_ids, "source", where)
    first, last = token_alignment_spans(base_pieces, blending_pieces, tables.base_marker, tables.blending_marker,
                                        tie_order=TIE_ORDER, empty_fallback=False)
    method, mapping, replaced, marker = tables.method, tables.mapping, tables.blending_replaced, tables.base_marker
    single = np.where(first == last, first, -1).tolist()
    matched = [replaced[blending_ids[j]] if j >= 0 else None for j in single]
    if (single[0] >= 0 and tables.byte_level_blending and base_pieces[0].startswith(marker)
            and not matched[0].startswith(marker)):
        matched[0] = marker + matched[0]  # 12.8 #8
    mapped = None
    if mapping is not None and method.match_uses_mapping:
        mapped = [blt is not None and mapping.get(blt) == bt for bt, blt in zip(base_pieces, matched)]
    rows = source_rows(single, base_pieces, matched, method.takes, mapped)
    return aligned_distributions(rows, base_ids, blending_logits, blending_indices, tables.candidates,
                                 one_hot_offset=1 if onehot_next_token else 0, outside=NO_PIECE)


# --- whole sets ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairSpec:
    """How to build the tables of a model pair; cheap to pickle into ``datasets`` workers."""

    base_model: str
    blending_model: str
    align_type: str
    mapping_file: str | None = None
    cache_dir: str | None = None

    def tables(self) -> AlignmentTables:
        return _tables(self)


@functools.lru_cache(maxsize=2)
def _tables(spec: PairSpec) -> AlignmentTables:
    from .common import load_stage_tokenizer
    from .vocab_mapping import load_vocab_mapping

    base = load_stage_tokenizer(spec.base_model, None, spec.cache_dir)
    blending = load_stage_tokenizer(spec.blending_model, None, spec.cache_dir)
    base_pieces = piece_table(base)
    mapping = None
    if check_align_type(spec.align_type).mapping is not None:
        mapping = load_vocab_mapping(spec.mapping_file, [p for p in base_pieces if p is not None])
    return AlignmentTables.build(base_pieces, piece_table(blending), word_start_marker(base),
                                 word_start_marker(blending), spec.align_type, mapping)


def aligned_column_names(index: int) -> tuple[str, str, str]:
    return teacher_columns(str(index))


BASE_REQUIRED = ("input_ids", "per_step_logits", "per_step_indices", "metric_ce")
BLENDING_REQUIRED = ("input_ids", "per_step_logits", "per_step_indices", "metric_ce")
SKIPPED = "_skipped_candidates"


def check_same_documents(base, blending, base_tokenizer, max_length: int, base_name: str, blending_name: str) -> None:
    """Row r of both sets holds the same document (12.8 #10): equal row counts, then the ``text``
    columns when both have one, else the pivot's input_ids against the source text re-encoded with
    the pivot's tokenizer (a chained run's base has no ``text`` any more)."""
    from ..arrow import arrow_column, first_differing_row
    from .common import TEXT, encode_documents

    if len(base) != len(blending):
        raise InputError(f"{base_name} has {len(base)} rows but {blending_name} has {len(blending)}; "
                         "they must be the same split and shard of the same corpus")
    if TEXT in base.column_names and TEXT in blending.column_names:
        row = first_differing_row(arrow_column(base, TEXT), arrow_column(blending, TEXT))
        if row is not None:
            raise InputError(f"row {row}: {base_name} and {blending_name} hold different documents "
                             f"({base[row][TEXT][:40]!r}... vs {blending[row][TEXT][:40]!r}...)")
        return
    if TEXT not in blending.column_names:
        raise InputError(f"{blending_name}: no 'text' column, so its rows cannot be matched to {base_name}; "
                         "use the output of forward_for_logits.py")
    import pyarrow as pa

    for start in range(0, len(base), 1000):
        stop = min(start + 1000, len(base))
        texts = blending.select(range(start, stop))[TEXT]
        expected = pa.array(encode_documents(base_tokenizer, texts, max_length), type=pa.list_(pa.int64()))
        actual = arrow_column(base.select(range(start, stop)), "input_ids").cast(pa.list_(pa.int64()))
        row = first_differing_row(actual, expected)
        if row is not None:
            raise InputError(f"row {start + row}: the pivot tokens of {base_name} are not the pivot's encoding of "
                             f"{blending_name}'s text ({texts[row][:40]!r}...): different documents, or a "
                             "different --model_max_length than forward_for_logits.py used")


def _align_batch(batch, indices, spec: PairSpec, index: int, onehot_next_token: bool, where: str):
    from ..schema import BLENDING

    tables = spec.tables()
    logits_name, ids_name, metric_name = aligned_column_names(index)
    out = {logits_name: [], ids_name: [], SKIPPED: []}
    for r, row_index in enumerate(indices):
        base_ids = batch["input_ids"][r]
        logits, ids, skipped = align_row(
            base_ids, batch[BLENDING + "input_ids"][r], batch[BLENDING + "per_step_logits"][r],
            batch[BLENDING + "per_step_indices"][r], tables, onehot_next_token, where=f"{where} row {row_index}")
        out[logits_name].append(logits)
        out[ids_name].append(ids)
        out[SKIPPED].append(skipped)
    m = [len(ids) for ids in batch["input_ids"]]
    out["per_step_logits"] = [row[:length] for row, length in zip(batch["per_step_logits"], m)]
    out["per_step_indices"] = [row[:length] for row, length in zip(batch["per_step_indices"], m)]
    out[metric_name] = batch[BLENDING + "metric_ce"]
    return out


def align_split(base, blending, spec: PairSpec, index: int, max_length: int, onehot_next_token: bool = False,
                batch_size: int = 1000, num_proc: int | None = None, base_name: str = "base",
                blending_name: str = "blending", scratch_dir: str | None = None):
    """The base split with the source's aligned columns ``*_<index>`` (12.4.3), and the number of
    skipped candidates. Rows are checked first (same count, same documents)."""
    from datasets import Features, List, Value

    from ..schema import BLENDING, paired
    from ..schema import index_dtype_for
    from .common import TEXT, load_stage_tokenizer, require

    require(base, BASE_REQUIRED, base_name)
    require(blending, BLENDING_REQUIRED, blending_name)
    names = aligned_column_names(index)
    clash = [c for c in names if c in base.column_names]
    if clash:
        raise InputError(f"{base_name} already has {clash}: --blending_model_index {index} was aligned before")
    check_same_documents(base, blending, load_stage_tokenizer(spec.base_model, None, spec.cache_dir), max_length,
                         base_name, blending_name)
    both = paired(base, blending, base_name, blending_name, BLENDING_REQUIRED)
    dropped = [c for c in (TEXT, "per_step_metric_ce") if c in base.column_names]
    features = {k: v for k, v in base.features.items() if k not in dropped}
    tables = spec.tables()
    features[names[0]] = List(List(Value("float16")))
    features[names[1]] = List(List(Value(index_dtype_for(len(tables.base_pieces)))))
    features[names[2]] = blending.features["metric_ce"]
    features[SKIPPED] = Value("int64")
    aligned = both.map(
        _align_batch, batched=True, batch_size=batch_size, with_indices=True,
        fn_kwargs={"spec": spec, "index": index, "onehot_next_token": onehot_next_token,
                   "where": base_name},
        remove_columns=[c for c in both.column_names if c.startswith(BLENDING) or c in dropped],
        features=Features(features), num_proc=num_proc if num_proc and num_proc > 1 else None,
        load_from_cache_file=False, desc=f"Aligning source {index}",
        cache_file_name=None if scratch_dir is None else f"{scratch_dir}/aligned-{_digest(base_name)}.arrow")
    skipped = int(np.sum(aligned[SKIPPED])) if len(aligned) else 0
    return aligned.remove_columns(SKIPPED), skipped


def _digest(name: str) -> str:
    import hashlib

    return hashlib.sha1(name.encode()).hexdigest()[:12]


def align_representations(base_dir: str, blending_dir: str, save_dir: str, spec: PairSpec, index: int = 0,
                          max_length: int = 2048, onehot_next_token: bool = False, batch_size: int = 1000,
                          num_proc: int | None = None, metric_level: str = "sequence") -> None:
    """token_alignment.py: every split of the pivot's set at ``base_dir`` with the aligned columns of
    the source set at ``blending_dir`` added as ``*_<index>``, saved at ``save_dir``."""
    from datasets import DatasetDict

    from ..provenance import derived_record, read_record
    from ..storage import save_dataset_atomic, scratch_dir
    from .common import load_dataset_dict

    check_metric_level(metric_level)
    method = check_align_type(spec.align_type)
    if index < 0:
        raise InputError(f"--blending_model_index must be 0 or more, got {index}")
    if method.mapping is not None and not spec.mapping_file:
        raise InputError("--vocab_align_type soft needs --vocab_mapping_save_dir (the JSON file of vocab_mapping.py)")
    base = load_dataset_dict(base_dir, "--base_dataset_dir")
    blending = load_dataset_dict(blending_dir, "--blending_dataset_dir")
    if set(base) != set(blending):
        raise InputError(f"--base_dataset_dir has splits {sorted(base)} but --blending_dataset_dir has {sorted(blending)}")
    spec.tables()  # a bad model or mapping fails before any work
    result, skipped = {}, 0
    with scratch_dir(save_dir) as scratch:
        for split in base:
            result[split], count = align_split(
                base[split], blending[split], spec, index, max_length, onehot_next_token, batch_size, num_proc,
                base_name=f"{base_dir} split {split!r}", blending_name=f"{blending_dir} split {split!r}",
                scratch_dir=str(scratch))
            skipped += count
        if skipped:
            logger.warning("skipped %d source candidate(s) with no pivot mapping or no piece (the reference "
                           "crashes on them, docs/design.md 12.8 #6)", skipped)
        record = derived_record(read_record(base_dir), "fusellm_aligned", [base_dir, blending_dir])
        save_dataset_atomic(DatasetDict(result), save_dir, provenance=record)
    logger.info("saved %s rows to %s", {s: len(d) for s, d in result.items()}, save_dir)
