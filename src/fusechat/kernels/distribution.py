"""Distribution alignment of one row pair (docs/design.md 6.3, 12.4.2): the source's top-k lists moved
into the pivot's positions and vocabulary, once the rows to take are chosen.

1. :func:`source_rows`: per base position, the source position whose list it takes, or ONE_HOT, or
   EMPTY; the align method (:mod:`fusechat.kernels.align_methods`) decides, through the caller's
   ``takes`` and ``many`` rules.
2. :func:`aligned_distributions`: those lists with every candidate id sent through the table
   blending id -> base id (source order kept, the first logit per base id, dropped ids out), ONE-HOT
   as ``[1.0]`` on a base id (the next one, FuseChat; the current one, FuseLLM: ``one_hot_offset``),
   EMPTY as ``[]``.

Table codes below zero drop a candidate; codes below -1 are also counted as *skipped* (FuseLLM
reports the candidates that crash the reference, 12.8 #6). A candidate id outside the table gets
the code ``outside``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..padding import pad_lists

ONE_HOT, EMPTY = -1, -2
DROPPED = -1


def source_rows(single: Sequence[int], base_tokens: Sequence[str], matched_tokens: Sequence[str | None],
                takes: Callable[[str, str, bool], bool], mapped: Sequence[bool] | None = None,
                many: Callable[[int], int] | None = None) -> np.ndarray:
    """Per base position i: ``single[i]``, the one source position matched to i (-1 when several
    are), if the align method ``takes(base_tokens[i], matched_tokens[i], mapped[i])`` it (the matched
    source token with the base word-start marker; ``mapped``: the vocabulary mapping sends it to the
    base token, False when not given); ``many(i)`` where several are matched (ONE_HOT without
    ``many``); else ONE_HOT."""
    rows = [ONE_HOT] * len(single)
    for i, j in enumerate(single):
        if j >= 0:
            if takes(base_tokens[i], matched_tokens[i], mapped is not None and mapped[i]):
                rows[i] = j
        elif many is not None:
            rows[i] = many(i)
    return np.array(rows, dtype=np.int64)


def candidate_lists(logit_rows: Sequence[Sequence[float]], id_rows: Sequence[Sequence[int]], table: np.ndarray,
                    outside: int = DROPPED) -> tuple[list[tuple[list[float], list[int]]], np.ndarray]:
    """Each row's candidates in base ids (source order, dropped ones out, repeats skipped: the first
    logit wins), and per row the number of skipped candidates (table codes below -1)."""
    ids = pad_lists(id_rows, -1, np.int64)
    logits = pad_lists(logit_rows, 0.0, np.float64)
    lengths = np.fromiter((len(row) for row in id_rows), dtype=np.int64, count=len(id_rows))
    inside = (ids >= 0) & (ids < table.size)
    mapped = np.where(inside, table[np.where(inside, ids, 0)], outside)
    if (lengths < ids.shape[1]).any():
        mapped[np.arange(ids.shape[1]) >= lengths[:, None]] = DROPPED  # padding
    keep = mapped >= 0
    for column in range(1, mapped.shape[1]):  # taken at an earlier column: the first logit wins
        keep[:, column] &= ~(mapped[:, :column] == mapped[:, column:column + 1]).any(axis=1)
    flat_ids, flat_logits = mapped[keep].tolist(), logits[keep].tolist()
    ends = np.cumsum(keep.sum(axis=1)).tolist()
    starts = [0, *ends[:-1]]
    return [(flat_logits[a:b], flat_ids[a:b]) for a, b in zip(starts, ends)], (mapped < DROPPED).sum(axis=1)


def aligned_distributions(rows: np.ndarray, base_ids: Sequence[int], logit_rows: Sequence[Sequence[float]],
                          id_rows: Sequence[Sequence[int]], table: np.ndarray, one_hot_offset: int = 1,
                          outside: int = DROPPED) -> tuple[list[list[float]], list[list[int]], int]:
    """(logits per base position, base ids per base position, skipped candidates) for the chosen
    ``rows`` (:func:`source_rows`) of the source's top-k lists ``logit_rows`` / ``id_rows``.

    Skipped candidates count once per position that takes their row.
    """
    taken = rows[rows >= 0]
    used = np.unique(taken)
    lists, skipped = candidate_lists([logit_rows[j] for j in used.tolist()], [id_rows[j] for j in used.tolist()],
                                     table, outside)
    skipped_total = int(skipped[np.searchsorted(used, taken)].sum()) if taken.size else 0
    by_row = dict(zip(used.tolist(), lists))
    ids_as_ints = [int(i) for i in base_ids]
    one_hot_ids = ids_as_ints[one_hot_offset:] + ids_as_ints[-1:] * one_hot_offset  # base_ids[min(i + offset, last)]
    out_logits, out_ids = [], []
    for row, one_hot_id in zip(rows.tolist(), one_hot_ids):
        if row >= 0:
            logits, ids = by_row[row]
            out_logits.append(logits[:])
            out_ids.append(ids[:])
        elif row == EMPTY:
            out_logits.append([])
            out_ids.append([])
        else:
            out_logits.append([1.0])
            out_ids.append([one_hot_id])
    return out_logits, out_ids, skipped_total


def carried_flags(base_ids: Sequence[int], fused_logits, fused_indices, onehot_offset: int = 1) -> list[bool]:
    """Per position: its fused entry is the source's distribution, not ONE-HOT (a single logit 1.0
    on the next base id, at the last position the last id again; ``onehot_offset`` 0: on the current
    one, FuseLLM's fallback) and not EMPTY."""
    last = len(base_ids) - 1
    return [bool(len(ids))
            and not (len(ids) == 1 and logits[0] == 1.0 and ids[0] == base_ids[min(i + onehot_offset, last)])
            for i, (logits, ids) in enumerate(zip(fused_logits, fused_indices))]


def carried_positions(base_ids: Sequence[int], fused_logits, fused_indices, onehot_offset: int = 1) -> int:
    """Positions whose fused entry is the source's distribution: the quality figure of an alignment."""
    return sum(carried_flags(base_ids, fused_logits, fused_indices, onehot_offset))
