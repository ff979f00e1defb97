"""Vocabulary mappings from the blending (source) vocabulary to the base (pivot) one (docs/design.md 6.2):
EM (``exact_mapping``, ``--align_type hard``), MinED (``mined_mapping``, soft) and MS
(``AlignmentCounts`` accumulates the sparse count matrix over a corpus's token alignments,
``ms_mapping`` picks per blending id; default), and their files: the mapping as a JSON list indexed
by blending id, the count matrix as a scipy sparse ``.npz``.

Everything here works on vocabulary *pieces* (``convert_ids_to_tokens``, the keys of
``get_vocab()``), never on decoded strings; "marker replaced" is ``piece.replace(blending_marker,
base_marker)``. Choices where the spec is silent are in README.md "Differences".
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import sparse

from ..errors import InputError
from ..kernels.align_methods import align_method
from ..kernels.mined import nearest_pieces, word_start_marker
from ..storage import atomic_file, read_json, write_json



# --- vocabularies ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Vocabulary:
    """A vocabulary as plain data: the piece of every id (None for a hole), marker, special ids."""

    pieces: tuple[str | None, ...]
    marker: str
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    name: str = "vocabulary"

    @property
    def size(self) -> int:
        return len(self.pieces)

    @cached_property
    def index(self) -> dict[str, int]:
        """piece -> id (the lowest id if a piece repeats)."""
        index: dict[str, int] = {}
        for token_id, piece in enumerate(self.pieces):
            if piece is not None:
                index.setdefault(piece, token_id)
        return index

    @property
    def no_token_id(self) -> int:
        """Where unmappable ids go: unk, else eos (docs/design.md 6.2)."""
        if self.unk_id is not None:
            return self.unk_id
        if self.eos_id is not None:
            return self.eos_id
        raise InputError(f"{self.name}: has neither an unk nor an eos token to map unmatched ids to")


def vocabulary_size(tokenizer) -> int:
    """Number of ids of a tokenizer, added tokens included."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


def vocabulary_of(tokenizer) -> Vocabulary:
    size = vocabulary_size(tokenizer)
    return Vocabulary(
        pieces=tuple(tokenizer.convert_ids_to_tokens(list(range(size)))),
        marker=word_start_marker(tokenizer),
        unk_id=tokenizer.unk_token_id,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        name=getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
    )


def _marker_replaced(blending: Vocabulary, base: Vocabulary) -> list[str | None]:
    return [None if p is None else p.replace(blending.marker, base.marker) for p in blending.pieces]


# --- EM and MinED ----------------------------------------------------------------------------

def exact_mapping(blending: Vocabulary, base: Vocabulary) -> np.ndarray:
    """EM: blending id -> base id of the same piece after marker replacement, -1 where none (int64)."""
    return np.fromiter(
        (-1 if piece is None else base.index.get(piece, -1) for piece in _marker_replaced(blending, base)),
        dtype=np.int64, count=blending.size,
    )


def mined_mapping(blending: Vocabulary, base: Vocabulary, workers: int = -1, progress: bool = True) -> list[int]:
    """MinED (``--align_type soft``): a list indexed by blending id (docs/design.md 6.2).

    Exact match of the marker-replaced piece first, else the base piece at the smallest
    Levenshtein distance, the lowest base id on ties (:func:`fusechat.kernels.mined.nearest_pieces`,
    once per distinct query). A blending id without a piece maps to the base no-token id.
    """
    exact = exact_mapping(blending, base)
    queries = _marker_replaced(blending, base)
    mapping = [int(base_id) for base_id in exact]
    unmatched: dict[str, list[int]] = {}  # distinct query -> blending ids that need it
    for blending_id, base_id in enumerate(exact):
        if base_id < 0:
            if queries[blending_id] is None:
                mapping[blending_id] = base.no_token_id
            else:
                unmatched.setdefault(queries[blending_id], []).append(blending_id)
    choice_ids = np.array([i for i, p in enumerate(base.pieces) if p is not None], dtype=np.int64)
    choices = [base.pieces[i] for i in choice_ids]
    if unmatched and not choices:
        raise InputError(f"{base.name}: the base vocabulary has no pieces to map onto")
    distinct = list(unmatched)
    for query, best in zip(distinct, nearest_pieces(distinct, choices, workers, progress) if distinct else []):
        for blending_id in unmatched[query]:
            mapping[blending_id] = int(choice_ids[best])
    return mapping


# --- MS: the count matrix --------------------------------------------------------------------

def matched_blending_ids(blending_ids: Sequence[int], alignment: Sequence[Sequence[int]]) -> list[list[int]]:
    """The blending ids matched to each base position, from its alignment (the blending positions
    matched to it, as the ``base_to_blending_mapping`` column holds them)."""
    return [[blending_ids[position] for position in positions] for positions in alignment]


def alignment_pairs(base_ids: Sequence[int], matched_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(base id, blending id) coordinates of one sequence, each blending id once per base position."""
    if len(base_ids) != len(matched_ids):
        raise InputError(f"{len(base_ids)} base ids but {len(matched_ids)} alignment entries")
    lengths = np.fromiter((len(ids) for ids in matched_ids), dtype=np.int64, count=len(matched_ids))
    columns = np.fromiter((i for ids in matched_ids for i in ids), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.asarray(base_ids, dtype=np.int64), lengths)
    positions = np.repeat(np.arange(len(matched_ids), dtype=np.int64), lengths)
    # Distinct (position, blending id) pairs: the reference's fancy-indexed += adds once per index.
    keep = np.unique(np.stack([positions, columns]), axis=1, return_index=True)[1]
    return rows[keep], columns[keep]


class AlignmentCounts:
    """Sparse accumulator of ``C[base_id, blending_id]`` over many token alignments.

    Coordinates are buffered and folded into a CSR matrix every ``flush_every`` pairs, so memory
    stays proportional to the number of distinct pairs, never to the corpus or to the dense shape.
    """

    def __init__(self, base_size: int, blending_size: int, flush_every: int = 4_000_000):
        self.shape = (int(base_size), int(blending_size))
        self.flush_every = flush_every
        self._matrix = sparse.csr_matrix(self.shape, dtype=np.int64)
        self._rows: list[np.ndarray] = []
        self._columns: list[np.ndarray] = []
        self._buffered = 0

    def add_pairs(self, rows: np.ndarray, columns: np.ndarray) -> None:
        rows, columns = np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)
        for name, ids, size in (("base", rows, self.shape[0]), ("blending", columns, self.shape[1])):
            if ids.size and (ids.min() < 0 or ids.max() >= size):
                bad = ids[(ids < 0) | (ids >= size)][0]
                raise InputError(f"{name} id {int(bad)} is outside the {name} vocabulary ({size} ids)")
        self._rows.append(rows)
        self._columns.append(columns)
        self._buffered += rows.size
        if self._buffered >= self.flush_every:
            self._flush()

    def add(self, base_ids: Sequence[int], matched_ids: Sequence[Sequence[int]]) -> None:
        """Count one sequence: its base ids and the blending ids matched to each base position."""
        self.add_pairs(*alignment_pairs(base_ids, matched_ids))

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, columns = np.concatenate(self._rows), np.concatenate(self._columns)
        self._rows, self._columns, self._buffered = [], [], 0
        batch = sparse.coo_matrix((np.ones(rows.size, dtype=np.int64), (rows, columns)), shape=self.shape)
        self._matrix = (self._matrix + batch.tocsr()).tocsr()

    def to_csr(self) -> sparse.csr_matrix:
        self._flush()
        matrix = self._matrix.copy()
        matrix.sum_duplicates()
        matrix.sort_indices()
        return matrix


UNREADABLE_NPZ = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)  # a truncated file: BadZipFile


def save_count_matrix(path: str | os.PathLike, matrix, record: dict | None = None) -> None:
    """Write the count matrix as a scipy ``.npz`` (CSR), atomically, with its provenance ``record``."""
    with atomic_file(path, "wb", record=record) as handle:
        sparse.save_npz(handle, sparse.csr_matrix(matrix))


def check_count_matrix(path: str | os.PathLike, base_size: int, blending_size: int) -> Path:
    """Check that a count matrix file exists and fits both vocabularies, reading only its shape."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--token_alignment_matrix_file {p}: no such file (run with --do_token_alignment first)")
    try:
        with np.load(p) as members:  # scipy's .npz keeps the shape in its own member
            shape = tuple(int(n) for n in members["shape"])
    except UNREADABLE_NPZ as exc:
        raise InputError(f"--token_alignment_matrix_file {p}: not a scipy sparse .npz ({exc})") from None
    if shape != (base_size, blending_size):
        raise InputError(
            f"--token_alignment_matrix_file {p}: shape {shape}, but the base vocabulary has "
            f"{base_size} ids and the blending vocabulary {blending_size}"
        )
    return p


def load_count_matrix(path: str | os.PathLike, base_size: int, blending_size: int) -> sparse.csr_matrix:
    """Read a count matrix saved by :func:`save_count_matrix` (or the reference), checking its shape."""
    p = check_count_matrix(path, base_size, blending_size)
    try:
        return sparse.csr_matrix(sparse.load_npz(p))
    except UNREADABLE_NPZ as exc:
        raise InputError(f"--token_alignment_matrix_file {p}: not a scipy sparse .npz ({exc})") from None


# --- MS: the mapping -------------------------------------------------------------------------

class _MsStrings:
    """Per-id strings of the MS distance, computed once per vocabulary instead of once per pair."""

    def __init__(self, blending: Vocabulary, base: Vocabulary):
        self.blending_stripped = [None if p is None else p.replace(blending.marker, "") for p in blending.pieces]
        self.blending_swapped = _marker_replaced(blending, base)
        self.base_stripped = [None if p is None else p.replace(base.marker, "") for p in base.pieces]
        self.base_raw = base.pieces

    def distances(self, blending_ids: Sequence[int], base_ids: Sequence[int]) -> np.ndarray:
        """The MS distance of each (blending id, base id) pair, float64 (docs/design.md 6.2).

        Levenshtein distance of the marker-stripped pieces (if one strips to nothing: the blending
        piece with its marker replaced against the raw base piece), times 0.1 when one string
        contains the other.
        """
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cpdist

        left, right, weights = [], [], []
        for c, r in zip(blending_ids, base_ids):
            a, b = self.blending_stripped[c], self.base_stripped[r]
            if not a or not b:
                a, b = self.blending_swapped[c], self.base_raw[r]
            left.append(a)
            right.append(b)
            weights.append(0.1 if a in b or b in a else 1.0)
        if not left:
            return np.zeros(0, dtype=np.float64)
        distances = cpdist(left, right, scorer=Levenshtein.distance, dtype=np.int64, workers=-1)
        # dist * w here, * sigmoid(count) by the caller: the reference's order of float operations.
        return distances.astype(np.float64) * np.asarray(weights, dtype=np.float64)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ms_mapping(counts, blending: Vocabulary, base: Vocabulary, chunk_size: int = 250_000) -> list[int]:
    """MS (``--align_type default``): a list indexed by blending id (docs/design.md 6.2).

    ``counts`` is ``C[base_id, blending_id]`` (any scipy sparse matrix or dense array). For every
    blending id with a count, the base id among its nonzero rows minimising
    ``ms_distance * sigmoid(C)`` (the lowest base id on ties; note that sigmoid makes the rarer
    pair win among equal distances, as in the reference); the others map to base unk (else eos).
    Then BOS -> BOS and EOS -> EOS where both vocabularies have them. The nonzeros are scored in
    chunks, so memory stays bounded whatever their number.
    """
    if counts.shape != (base.size, blending.size):
        raise InputError(
            f"count matrix of shape {counts.shape} does not fit the base vocabulary ({base.size} ids) "
            f"and the blending vocabulary ({blending.size} ids)"
        )
    columns = sparse.csc_matrix(counts)
    columns.eliminate_zeros()
    columns.sum_duplicates()
    columns.sort_indices()  # rows ascending within a column: "first" = lowest base id
    base_rows = columns.indices.astype(np.int64)
    blending_cols = np.repeat(np.arange(blending.size, dtype=np.int64), np.diff(columns.indptr))

    # Pairs whose pieces exist (a hole has no string to compare).
    blending_has = np.array([p is not None for p in blending.pieces], dtype=bool)
    base_has = np.array([p is not None for p in base.pieces], dtype=bool)
    usable = blending_has[blending_cols] & base_has[base_rows]
    base_rows, blending_cols = base_rows[usable], blending_cols[usable]
    values = columns.data[usable].astype(np.float64)

    strings = _MsStrings(blending, base)
    scores = np.empty(values.size, dtype=np.float64)
    for start in range(0, values.size, chunk_size):
        part = slice(start, start + chunk_size)
        scores[part] = strings.distances(blending_cols[part].tolist(), base_rows[part].tolist()) * sigmoid(values[part])

    mapping = np.full(blending.size, base.no_token_id if blending.size else 0, dtype=np.int64)
    if scores.size:
        # Per column: the first position holding the column minimum (columns are contiguous runs).
        starts = np.flatnonzero(np.r_[True, blending_cols[1:] != blending_cols[:-1]])
        column_min = np.minimum.reduceat(scores, starts)
        run_lengths = np.diff(np.r_[starts, scores.size])
        is_min = scores == np.repeat(column_min, run_lengths)
        positions = np.arange(scores.size)
        first_min = np.minimum.reduceat(np.where(is_min, positions, scores.size), starts)
        mapping[blending_cols[starts]] = base_rows[first_min]
    for blending_id, base_id in ((blending.bos_id, base.bos_id), (blending.eos_id, base.eos_id)):
        if blending_id is not None and base_id is not None:
            mapping[blending_id] = base_id
    return mapping.tolist()


def blending_to_base_mapping(align_type: str, blending: Vocabulary, base: Vocabulary, counts=None,
                             progress: bool = True, separators: tuple[int, int] | None = None) -> list[int] | None:
    """The mapping file's content for an align method: its vocabulary mapping (MinED, MS), or None.

    ``separators``: (blending id, base id) of the tokens that close a turn in the two tokenized sets.
    When they differ (Gemma's <end_of_turn> against SmolLM2's <|im_end|> under one ChatML template), the
    one maps to the other, as BOS to BOS and EOS to EOS: by spelling alone they match nothing alike
    (MS maps <end_of_turn> to a one-letter piece), and the source's wish to end a reply must reach the
    pivot as its own end of turn.
    """
    kind = align_method(align_type).mapping
    if kind == "mined":
        mapping = mined_mapping(blending, base, progress=progress)
    elif kind == "ms":
        if counts is None:
            raise InputError(f"--align_type {align_type} needs the token alignment count matrix to build its mapping")
        mapping = ms_mapping(counts, blending, base)
    else:
        return None
    if separators is not None:
        mapping[separators[0]] = separators[1]
    return mapping


# --- mapping files ---------------------------------------------------------------------------

def save_blending_to_base(path: str | os.PathLike, mapping: Iterable[int], record: dict | None = None) -> None:
    """Write the mapping as a JSON list indexed by blending id, atomically, with its provenance ``record``."""
    write_json(path, [int(base_id) for base_id in mapping], indent=None, record=record)


def load_blending_to_base(path: str | os.PathLike, blending_size: int, base_size: int) -> list[int]:
    """Read a ``--blending_to_base_file`` and check it against both vocabularies."""
    p = Path(path)
    mapping = read_json(p, "--blending_to_base_file", "run with --do_token_alignment first")
    if not isinstance(mapping, list):
        raise InputError(f"--blending_to_base_file {p}: expected a JSON list, got {type(mapping).__name__}")
    if len(mapping) != blending_size:
        raise InputError(
            f"--blending_to_base_file {p}: {len(mapping)} entries, but the blending vocabulary has "
            f"{blending_size} ids (base vocabulary: {base_size}); was it built for another model pair?"
        )
    for blending_id, base_id in enumerate(mapping):
        if isinstance(base_id, bool) or not isinstance(base_id, int) or not 0 <= base_id < base_size:
            raise InputError(
                f"--blending_to_base_file {p}: entry {blending_id} is {base_id!r}, not a base id in "
                f"[0, {base_size})"
            )
    return mapping
