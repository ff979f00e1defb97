"""FuseLLM's vocabulary mapping, source piece -> pivot piece (DESIGN.md 12.3, ``default`` mode).

For every blending vocabulary piece x, x' = x with every blending marker replaced by the base
marker. If x' is a base piece it maps to itself; otherwise to the base piece y with the smallest
Levenshtein distance on the raw strings (markers included), the first such y in ascending base id
order on ties. The result is a dict keyed by x' (written as one JSON object).

The reference evaluates all |V_blend| x |V_base| distances in a pool of 64 processes. Here the
same answer comes from an exact search that compares a query only with the base pieces that can
still win: Lev(x, y) >= |len(x) - len(y)|, so for a query of length L the base pieces are visited in
shells of length L, L-1 and L+1, L-2 and L+2, ... (rapidfuzz's C++ Levenshtein, one shell of one
length group at a time), and a query stops once the shell radius exceeds its best distance so far.
Every piece at the minimum distance lies in a visited shell, and the first of them in ascending base
id order is kept, so the result is the exhaustive search's.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

MAPPING_TYPES = ("default", "co_occurrence")


def ordered_pieces(tokenizer) -> list[str]:
    """``get_vocab()`` keys in ascending id order (the base order of 12.3; 12.8 #5)."""
    return [piece for piece, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]


def _levenshtein(queries: list[str], choices: list[str], workers: int) -> np.ndarray:
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    return cdist(queries, choices, scorer=Levenshtein.distance, dtype=np.int32, workers=workers)


def min_distance_choices(queries: list[str], base_pieces: list[str], workers: int = -1,
                         progress: bool = True) -> list[int]:
    """For each query, the base id of the first base piece (ascending id) at the smallest Levenshtein
    distance."""
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
                distances = _levenshtein([queries[k] for k in active], [base_pieces[i] for i in ids], workers)
                shell_best = distances.min(axis=1)
                shell_id = ids[np.argmin(distances, axis=1)]  # the first minimum within the shell
                better = (shell_best < best_distance[active]) | (
                    (shell_best == best_distance[active]) & (shell_id < best_id[active]))
                best_distance[active[better]] = shell_best[better]
                best_id[active[better]] = shell_id[better]
            radius += 1
    return best_id.tolist()


def default_vocab_mapping(blending_pieces: list[str], base_pieces: list[str], blending_marker: str,
                          base_marker: str, workers: int = -1, progress: bool = True) -> dict[str, str]:
    """DESIGN.md 12.3 ``default``: {x' (blending piece, base marker): base piece}, blending id order."""
    base_set = set(base_pieces)
    keys = [piece.replace(blending_marker, base_marker) for piece in blending_pieces]
    missing = list(dict.fromkeys(k for k in keys if k not in base_set))  # distinct, first-seen order
    chosen = dict(zip(missing, (base_pieces[i] for i in min_distance_choices(missing, base_pieces, workers, progress))))
    return {key: key if key in base_set else chosen[key] for key in keys}


def load_vocab_mapping(path: str, base_pieces, flag: str = "--vocab_mapping_save_dir") -> dict[str, str]:
    """Read a mapping JSON; every value must be a base piece."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{flag} {p}: no such file (run vocab_mapping.py first)")
    try:
        mapping = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag} {p}: not valid JSON ({exc})") from None
    if not isinstance(mapping, dict):
        raise InputError(f"{flag} {p}: expected a JSON object {{source piece: pivot piece}}")
    base_set = set(base_pieces)
    for key, value in mapping.items():
        if value not in base_set:
            raise InputError(f"{flag} {p}: entry {key!r} maps to {value!r}, which is not a pivot vocabulary "
                             "piece; was it built for another model pair?")
    return mapping
