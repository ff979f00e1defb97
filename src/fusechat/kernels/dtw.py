"""Token alignment of one sequence pair by DTW over edit distances (docs/design.md 6.1, 12.4.1).

Base = pivot (columns, m tokens), blending = source (rows, n tokens). Tokens are the strings of
each id decoded on its own (`decoded_token_strings`). The cost of a blending token ``a`` against a
base token ``b``: remove every blending marker from ``a`` and every base marker from ``b`` and take
the Levenshtein distance; if either side became empty, take instead the distance between ``a``
with each blending marker replaced by the base marker and ``b`` unchanged. (The reference removes
and replaces with ``str.replace``, i.e. every occurrence; so does this module.)

DTW: ``D[i][j] = cost(i, j) + min(D[i-1][j], D[i][j-1], D[i-1][j-1])`` with +inf boundaries and
``D[-1][-1] = 0``. Backtrack from ``(n-1, m-1)`` to ``(0, 0)``, moving to the first minimum among
diagonal, left ``(i, j-1)``, up ``(i-1, j)``. Every visited cell matches base position ``j`` to
blending position ``i``.

How it is fast and still identical to that definition:

- the cost matrix is computed once per pair of *distinct* token strings with rapidfuzz's C++
  Levenshtein (a sequence repeats its tokens a lot), then indexed;
- the forward pass keeps only two rows of D (int64) and records, per cell, which predecessor the
  backtrack will take (the first minimum of diagonal, left, up: the very values the forward
  minimum looks at), so the backtrack is a walk over one byte per cell;
- a monotone path visits a contiguous run of rows in each column, so the result is two arrays:
  the first and last blending position matched to each base position.

FuseLLM (docs/design.md 12.4.1) runs the same kernel with two parameters: ``tie_order="diagonal-up-left"``
(its backtrack prefers the previous blending token over the previous base token) and
``empty_fallback=False`` (its cost compares the marker-stripped pieces even when one is empty).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
from numba import njit

from ..errors import InputError
from .mined import levenshtein_matrix

# Backtrack moves, in the tie order of docs/design.md 6.1.
_DIAGONAL, _LEFT, _UP = 0, 1, 2
# First minimum among the predecessors in this order: FuseChat's (6.1) and FuseLLM's (12.4.1).
TIE_ORDERS = ("diagonal-left-up", "diagonal-up-left")


def _check_tie_order(tie_order: str) -> bool:
    """True when "up" is tried before "left"."""
    if tie_order not in TIE_ORDERS:
        raise InputError(f"tie_order {tie_order!r} is unknown; choose from {', '.join(TIE_ORDERS)}")
    return tie_order == "diagonal-up-left"


# --- decoded token strings -------------------------------------------------------------------

# tokenizer -> its whole vocabulary decoded id by id (object array), rebuilt if the size changes.
_DECODED_VOCABULARIES: "weakref.WeakKeyDictionary[object, np.ndarray]" = weakref.WeakKeyDictionary()


def _decoded_vocabulary(tokenizer) -> np.ndarray:
    vocabulary = _DECODED_VOCABULARIES.get(tokenizer)
    if vocabulary is None or len(vocabulary) != len(tokenizer):
        vocabulary = np.empty(len(tokenizer), dtype=object)
        vocabulary[:] = [tokenizer.decode([token_id]) for token_id in range(len(tokenizer))]
        _DECODED_VOCABULARIES[tokenizer] = vocabulary
    return vocabulary


def decoded_token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own, exactly ``tokenizer.decode([id])``.

    The whole vocabulary is decoded once per tokenizer object (and again if tokens are added to
    it) and then indexed, so a sequence costs a lookup per token.
    """
    vocabulary = _decoded_vocabulary(tokenizer)
    id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
    out_of_range = (id_array < 0) | (id_array >= len(vocabulary))
    if out_of_range.any():
        position = int(np.flatnonzero(out_of_range)[0])
        raise InputError(
            f"token id {int(id_array[position])} at position {position} is outside the vocabulary of "
            f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} "
            f"({len(vocabulary)} ids)"
        )
    return vocabulary[id_array].tolist()


# --- cost matrix -----------------------------------------------------------------------------

def _check_inputs(base_tokens, blending_tokens, base_marker, blending_marker) -> None:
    for name, marker in (("base_marker", base_marker), ("blending_marker", blending_marker)):
        if not isinstance(marker, str) or not marker:
            raise InputError(f"{name} must be a non-empty string, got {marker!r}")
    for name, tokens in (("base_tokens", base_tokens), ("blending_tokens", blending_tokens)):
        for position, token in enumerate(tokens):
            if not isinstance(token, str):
                raise InputError(f"{name}[{position}] is {type(token).__name__}, not a token string")


def _distinct(tokens: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct strings in first-seen order, and each token's index among them."""
    index_of: dict[str, int] = {}
    indices = np.fromiter((index_of.setdefault(t, len(index_of)) for t in tokens), np.int64, len(tokens))
    return list(index_of), indices


def _distinct_cost_matrix(base_tokens, blending_tokens, base_marker, blending_marker, empty_fallback=True):
    """Costs between the distinct blending and base strings, and the index of every token in them."""
    blending_distinct, blending_index = _distinct(blending_tokens)
    base_distinct, base_index = _distinct(base_tokens)
    blending_stripped = [a.replace(blending_marker, "") for a in blending_distinct]
    base_stripped = [b.replace(base_marker, "") for b in base_distinct]
    costs = levenshtein_matrix(blending_stripped, base_stripped)

    # Where either side strips to nothing: marker-swapped blending token against the raw base token.
    empty_rows = [k for k, a in enumerate(blending_stripped) if not a]
    empty_columns = [k for k, b in enumerate(base_stripped) if not b]
    if empty_fallback and (empty_rows or empty_columns):
        blending_swapped = [a.replace(blending_marker, base_marker) for a in blending_distinct]
        if empty_rows:
            costs[empty_rows, :] = levenshtein_matrix([blending_swapped[k] for k in empty_rows], base_distinct)
        if empty_columns:
            costs[:, empty_columns] = levenshtein_matrix(
                blending_swapped, [base_distinct[k] for k in empty_columns]
            )
    return costs, blending_index, base_index


def token_cost_matrix(
    base_tokens: Sequence[str], blending_tokens: Sequence[str], base_marker: str, blending_marker: str,
    empty_fallback: bool = True,
) -> np.ndarray:
    """The docs/design.md 6.1 cost of every (blending, base) pair: int32, shape [n_blending, n_base].

    Empty token lists give an empty matrix of the corresponding shape.
    """
    _check_inputs(base_tokens, blending_tokens, base_marker, blending_marker)
    if not base_tokens or not blending_tokens:
        return np.zeros((len(blending_tokens), len(base_tokens)), dtype=np.int32)
    costs, blending_index, base_index = _distinct_cost_matrix(
        base_tokens, blending_tokens, base_marker, blending_marker, empty_fallback
    )
    return costs[np.ix_(blending_index, base_index)]


# --- DTW -------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _dtw_moves(costs, blending_index, base_index, up_before_left=False):
    """Forward DTW pass; returns the backtrack move of every cell (first minimum: diag, left, up;
    diag, up, left with ``up_before_left``).

    The first row and column have a single in-range predecessor (left, resp. up); every other cell
    compares all three, so the inner loop has no boundary tests.
    """
    n, m = blending_index.shape[0], base_index.shape[0]
    moves = np.empty((n, m), dtype=np.uint8)
    previous = np.empty(m, dtype=np.int64)  # D[i-1][*]
    current = np.empty(m, dtype=np.int64)  # D[i][*]
    cost_row = costs[blending_index[0]]
    current[0] = cost_row[base_index[0]]  # D[-1][-1] = 0; moves[0, 0] is never read
    for j in range(1, m):
        current[j] = cost_row[base_index[j]] + current[j - 1]
        moves[0, j] = _LEFT
    for i in range(1, n):
        previous, current = current, previous
        cost_row = costs[blending_index[i]]
        left = cost_row[base_index[0]] + previous[0]
        current[0] = left
        moves[i, 0] = _UP
        for j in range(1, m):
            diagonal, up = previous[j - 1], previous[j]
            best, move = diagonal, _DIAGONAL
            if up_before_left:
                if up < best:
                    best, move = up, _UP
                if left < best:
                    best, move = left, _LEFT
            else:
                if left < best:
                    best, move = left, _LEFT
                if up < best:
                    best, move = up, _UP
            left = cost_row[base_index[j]] + best
            current[j] = left
            moves[i, j] = move
    return moves


@njit(cache=True, nogil=True)
def _backtrack_spans(moves):
    """Walk the moves from (n-1, m-1) to (0, 0); first and last blending position per base column."""
    n, m = moves.shape
    first = np.empty(m, dtype=np.int64)
    last = np.empty(m, dtype=np.int64)
    i, j = n - 1, m - 1
    first[j] = last[j] = i
    while i > 0 or j > 0:
        move = moves[i, j]
        if move == _DIAGONAL:
            i -= 1
            j -= 1
        elif move == _LEFT:
            j -= 1
        else:
            i -= 1
        if move != _UP:  # entered a new column from its bottom
            last[j] = i
        first[j] = i
    return first, last


def token_alignment_spans(
    base_tokens: Sequence[str], blending_tokens: Sequence[str], base_marker: str, blending_marker: str,
    tie_order: str = "diagonal-left-up", empty_fallback: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """For each base position j, the first and last blending position matched to it (int64 arrays).

    ``align_tokens`` is ``[list(range(first[j], last[j] + 1)) for j]``; this form is for callers that
    work on arrays (e.g. counting base/blending pairs over a corpus). ``tie_order`` and
    ``empty_fallback`` select FuseChat's (defaults) or FuseLLM's variant (module docstring).
    """
    up_before_left = _check_tie_order(tie_order)
    _check_inputs(base_tokens, blending_tokens, base_marker, blending_marker)
    for name, tokens in (("base_tokens", base_tokens), ("blending_tokens", blending_tokens)):
        if len(tokens) == 0:
            raise InputError(f"{name} is empty: token alignment needs at least one token on each side")
    costs, blending_index, base_index = _distinct_cost_matrix(
        base_tokens, blending_tokens, base_marker, blending_marker, empty_fallback
    )
    return _backtrack_spans(_dtw_moves(costs, blending_index, base_index, up_before_left))


def align_tokens(
    base_tokens: Sequence[str], blending_tokens: Sequence[str], base_marker: str, blending_marker: str,
    tie_order: str = "diagonal-left-up", empty_fallback: bool = True,
) -> list[list[int]]:
    """docs/design.md 6.1: for each base position, the ascending blending positions matched to it.

    Never empty per position. Raises InputError if either token list is empty. FuseLLM (12.4.1):
    ``tie_order="diagonal-up-left", empty_fallback=False`` on vocabulary pieces.
    """
    first, last = token_alignment_spans(base_tokens, blending_tokens, base_marker, blending_marker,
                                        tie_order, empty_fallback)
    return [list(range(start, stop + 1)) for start, stop in zip(first.tolist(), last.tolist())]
