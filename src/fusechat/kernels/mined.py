"""The minimum-edit-distance (MinED) search of vocabulary pieces, and word-start markers.

MinED (docs/design.md 6.2 ``soft``, 12.3 ``default``): for each query, the first piece (in the given
order) at the smallest Levenshtein distance. The search is exact and compares a query only with the
pieces that can still win: Lev(x, y) >= |len(x) - len(y)|, so for a query of length L the pieces are
visited in shells of length L, L-1 and L+1, L-2 and L+2, ... (rapidfuzz's C++ Levenshtein, one shell
of one length group at a time), and a query stops once the shell radius exceeds its best distance so
far. Every piece at the minimum distance lies in a visited shell, and the first of them is kept, so
the result is the exhaustive search's (cdist + argmin).
"""

from __future__ import annotations

import json

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from ..errors import InputError

SENTENCEPIECE_MARKER = "\u2581"  # "▁"
BYTE_LEVEL_MARKER = "\u0120"  # "Ġ"


# --- word-start markers ----------------------------------------------------------------------

def _component_types(node) -> list[tuple[str, dict]]:
    """Every (type, settings) pair in a tokenizers component tree (Sequence nests others)."""
    found = []
    if isinstance(node, dict):
        if "type" in node:
            found.append((node["type"], node))
        for value in node.values():
            found.extend(_component_types(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_component_types(value))
    return found


def _marker_from_backend(tokenizer) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    # The pre-tokenizer decides how a word start is written; the decoder and normalizer are the
    # fallback (Gemma-style vocabularies write "▁" with a Replace normalizer, not Metaspace).
    for part in ("pre_tokenizer", "decoder", "normalizer"):
        component = getattr(backend, part, None)
        if component is None:
            continue
        for kind, settings in _component_types(json.loads(component.__getstate__())):
            if kind == "Metaspace":
                return settings.get("replacement", SENTENCEPIECE_MARKER)
            if kind == "ByteLevel":
                return BYTE_LEVEL_MARKER
            if kind == "Replace" and SENTENCEPIECE_MARKER in json.dumps(settings, ensure_ascii=False):
                return SENTENCEPIECE_MARKER
    return None


def _marker_from_vocabulary(tokenizer) -> str | None:
    pieces = [piece for piece in tokenizer.get_vocab() if isinstance(piece, str)]
    counts = {marker: sum(piece.startswith(marker) for piece in pieces)
              for marker in (SENTENCEPIECE_MARKER, BYTE_LEVEL_MARKER)}
    best = max(counts, key=counts.get)
    # A real word-start marker starts a sizeable share of the pieces, far more than the other.
    if counts[best] >= 0.05 * max(len(pieces), 1) and counts[best] > 2 * min(counts.values()):
        return best
    return None


def word_start_marker(tokenizer) -> str:
    """``"▁"`` for a SentencePiece/Metaspace vocabulary, ``"Ġ"`` for a byte-level one.

    Decided from the backend's pre-tokenizer, decoder or normalizer, else from how many
    vocabulary pieces start with each marker; an InputError if neither fits.
    """
    marker = _marker_from_backend(tokenizer) or _marker_from_vocabulary(tokenizer)
    if marker is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise InputError(
            f"tokenizer {name}: cannot tell its word-start marker; neither a SentencePiece ('▁') "
            f"nor a byte-level ('Ġ') vocabulary"
        )
    return marker



# --- the search -----------------------------------------------------------------------------

def levenshtein_matrix(rows: list[str], columns: list[str], workers: int = 1) -> np.ndarray:
    """int32 [len(rows), len(columns)]: the Levenshtein distance of every pair (rapidfuzz, C++)."""
    return cdist(rows, columns, scorer=Levenshtein.distance, dtype=np.int32, workers=workers)


def nearest_pieces(queries: list[str], base_pieces: list[str], workers: int = -1,
                         progress: bool = True, return_distances: bool = False):
    """For each query, the index of the first of ``base_pieces`` at the smallest Levenshtein
    distance (and that distance, with ``return_distances``)."""
    from tqdm.auto import tqdm

    if not base_pieces:
        raise InputError("the base vocabulary is empty: nothing to map onto")
    base_lengths = np.fromiter((len(p) for p in base_pieces), dtype=np.int64, count=len(base_pieces))
    shells = {int(length): np.flatnonzero(base_lengths == length) for length in np.unique(base_lengths)}
    longest_base = int(base_lengths.max())
    query_lengths = np.fromiter((len(q) for q in queries), dtype=np.int64, count=len(queries))
    best_distance = np.full(len(queries), np.iinfo(np.int64).max, dtype=np.int64)
    best_id = np.full(len(queries), len(base_pieces), dtype=np.int64)
    for length in tqdm(np.unique(query_lengths).tolist(), desc="MinED vocabulary mapping (by query length)",
                       disable=not progress):
        members = np.flatnonzero(query_lengths == length)
        radius = 0
        while radius <= max(length, longest_base):
            active = members[best_distance[members] >= radius]  # those a shell this far can still beat or tie
            if active.size == 0:
                break
            for shell_length in {length - radius, length + radius}:
                ids = shells.get(shell_length)
                if ids is None:
                    continue
                distances = levenshtein_matrix([queries[k] for k in active], [base_pieces[i] for i in ids], workers)
                shell_best = distances.min(axis=1)
                shell_id = ids[np.argmin(distances, axis=1)]  # the first minimum within the shell
                better = (shell_best < best_distance[active]) | (
                    (shell_best == best_distance[active]) & (shell_id < best_id[active]))
                best_distance[active[better]] = shell_best[better]
                best_id[active[better]] = shell_id[better]
            radius += 1
    return (best_id.tolist(), best_distance.tolist()) if return_distances else best_id.tolist()


def all_minima(queries: list[str], distances: list[int], base_pieces: list[str], workers: int = -1) -> list[list[int]]:
    """For each query, every base id (ascending) at its minimum distance ``distances[k]``."""
    base_lengths = np.fromiter((len(p) for p in base_pieces), dtype=np.int64, count=len(base_pieces))
    result: list[list[int]] = [[] for _ in queries]
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (query, distance) in enumerate(zip(queries, distances)):
        groups.setdefault((len(query), distance), []).append(k)
    for (length, distance), members in groups.items():
        ids = np.flatnonzero(np.abs(base_lengths - length) <= distance)  # Lev >= the length difference
        found = levenshtein_matrix([queries[k] for k in members], [base_pieces[i] for i in ids], workers) == distance
        for row, k in enumerate(members):
            result[k] = ids[found[row]].tolist()
    return result
