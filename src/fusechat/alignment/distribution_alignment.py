"""Distribution alignment of one sample (docs/design.md 6.3): the source's top-k lists moved into the
pivot's positions and vocabulary, given the sample's token alignment (6.1).

Per base position the aligner picks a source row (a blending position), ONE-HOT or EMPTY
(``source_rows``, by the align method's rules: :mod:`fusechat.kernels.align_methods`), then maps
that row's candidates to base ids (:mod:`fusechat.kernels.distribution`).
Token strings compared per position are the per-id *decoded* strings (``decoded_token_strings``);
candidate ids are mapped through vocabulary *pieces* (``vocab_mapping``). Where the reference and
the spec part ways (soft's mapping lookup, an empty ``bt``), README.md "Differences" says what is done.

    aligner = DistributionAligner.create(align_type, vocabulary_of(blending_tok), vocabulary_of(base_tok),
                                         blending_to_base, use_token_alignment_matrix)
    logits, ids = aligner.align_sample(base_ids, base_tokens, blending_ids, blending_tokens,
                                       source_row["per_step_logits"], source_row["per_step_indices"])
    columns = fused_columns(pivot_row, source_row, logits, ids, metric_level)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..kernels.align_methods import AlignMethod, align_method
from ..kernels.checks import check_metric_level
from ..kernels.distribution import EMPTY, ONE_HOT, aligned_distributions, candidate_lists, source_rows
from ..kernels.dtw import align_tokens
from ..schema import (FUSED_INDICES, FUSED_LOGITS, FUSED_METRIC_CE, INDICES, LOGITS, METRIC_CE,
                      PER_STEP_FUSED_METRIC_CE, PER_STEP_METRIC_CE)
from .vocab_mapping import Vocabulary, exact_mapping



def _many_to_one(bt: str, matched: Sequence[int], blending_tokens: Sequence[str], base_marker: str,
                 blending_marker: str) -> int:
    """The source row for a base token matched to several blending positions (default + matrix)."""
    bt = bt.replace(base_marker, "")
    tokens = [blending_tokens[j].replace(blending_marker, "") for j in matched]
    if bt:
        for j, token in zip(matched, tokens):
            if bt.endswith(token) or token.endswith(bt):
                return j
    consumed, rest = [], bt
    for k, token in enumerate(tokens):
        if rest.startswith(token):
            consumed.append(k)
            rest = rest[len(token):]
    if rest:
        consumed = []
    concatenation = "".join(tokens)
    if consumed or concatenation.endswith(bt) or bt.endswith(concatenation):
        if consumed and "".join(tokens[k] for k in consumed) == bt:
            return matched[consumed[-1]]
        return EMPTY
    return ONE_HOT


@dataclass(frozen=True)
class DistributionAligner:
    """The per-pair constants of 6.3: align method, markers and the blending -> base id tables."""

    method: AlignMethod
    base_marker: str
    blending_marker: str
    blending_to_base: np.ndarray | None  # the method's vocabulary mapping (MinED, MS); None without one
    candidate_table: np.ndarray  # blending id -> base id of a top-k candidate, -1: dropped
    use_token_alignment_matrix: bool = False

    @property
    def align_type(self) -> str:
        return self.method.name

    @classmethod
    def create(cls, align_type: str, blending: Vocabulary, base: Vocabulary,
               blending_to_base: Sequence[int] | None = None,
               use_token_alignment_matrix: bool = False) -> "DistributionAligner":
        method = align_method(align_type)
        exact = exact_mapping(blending, base)
        table = None
        if method.mapping is not None:
            if blending_to_base is None:
                raise InputError(f"--align_type {align_type} needs a --blending_to_base_file mapping")
            table = np.asarray(blending_to_base, dtype=np.int64)
            if table.shape != (blending.size,):
                raise InputError(
                    f"the blending_to_base mapping has {table.size} entries but the blending vocabulary "
                    f"has {blending.size} ids"
                )
            if table.size and (table.min() < 0 or table.max() >= base.size):
                raise InputError("the blending_to_base mapping holds ids outside the base vocabulary "
                                 f"({base.size} ids)")
        return cls(method, base.marker, blending.marker, table, method.candidates(exact, table),
                   bool(use_token_alignment_matrix))

    def source_rows(self, base_ids: Sequence[int], base_tokens: Sequence[str], blending_ids: Sequence[int],
                    blending_tokens: Sequence[str], alignment: Sequence[Sequence[int]],
                    where: str = "sample") -> np.ndarray:
        """Per base position: the blending position whose candidates it takes, or ONE_HOT / EMPTY."""
        _check_alignment_inputs(base_ids, base_tokens, blending_ids, blending_tokens, alignment, self.candidate_table.size,
                      where)
        return self._source_rows(base_ids, base_tokens, blending_ids, blending_tokens, alignment)

    def _source_rows(self, base_ids, base_tokens, blending_ids, blending_tokens, alignment) -> np.ndarray:
        base_marker, blending_marker, method = self.base_marker, self.blending_marker, self.method
        replaced = [token.replace(blending_marker, base_marker) for token in blending_tokens]
        single = [matched[0] if len(matched) == 1 else -1 for matched in alignment]
        matched_tokens = [replaced[j] if j >= 0 else None for j in single]
        mapped = None
        if method.match_uses_mapping:  # the mapping sends the matched source id to the base id
            at = np.asarray(single, dtype=np.int64)
            mapped_ids = self.blending_to_base[np.asarray(blending_ids, dtype=np.int64)[np.maximum(at, 0)]]
            mapped = ((at >= 0) & (mapped_ids == np.asarray(base_ids, dtype=np.int64))).tolist()

        def many(i: int) -> int:
            return _many_to_one(base_tokens[i], alignment[i], blending_tokens, base_marker, blending_marker)

        return source_rows(single, base_tokens, matched_tokens, method.takes, mapped,
                           many if method.many_to_one and self.use_token_alignment_matrix else None)

    def candidate_distributions(self, blending_logits: Sequence[Sequence[float]],
                                blending_indices: Sequence[Sequence[int]]) -> list[tuple[list[float], list[int]]]:
        """Each source row's candidates in base ids: source order, dropped ones out, repeats skipped."""
        return candidate_lists(blending_logits, blending_indices, self.candidate_table)[0]

    def align(self, base_ids: Sequence[int], base_tokens: Sequence[str], blending_ids: Sequence[int],
              blending_tokens: Sequence[str], alignment: Sequence[Sequence[int]],
              blending_logits: Sequence[Sequence[float]], blending_indices: Sequence[Sequence[int]],
              where: str = "sample") -> tuple[list[list[float]], list[list[int]]]:
        """The source's distributions in base positions and ids: (logits per position, ids per position)."""
        _check_candidates(blending_ids, blending_logits, blending_indices, where)
        rows = self.source_rows(base_ids, base_tokens, blending_ids, blending_tokens, alignment, where)
        logits, ids, _ = aligned_distributions(rows, base_ids, blending_logits, blending_indices, self.candidate_table,
                                               one_hot_offset=1)
        return logits, ids

    def align_sample(self, base_ids: Sequence[int], base_tokens: Sequence[str], blending_ids: Sequence[int],
                     blending_tokens: Sequence[str], blending_logits: Sequence[Sequence[float]],
                     blending_indices: Sequence[Sequence[int]], where: str = "sample",
                     alignment: Sequence[Sequence[int]] | None = None) -> tuple[list[list[float]], list[list[int]]]:
        """Distribution alignment (6.3) of one sample, on its token alignment (6.1): ``alignment`` when
        the token pass saved it, else computed here."""
        if alignment is None:
            alignment = align_tokens(base_tokens, blending_tokens, self.base_marker, self.blending_marker)
        return self.align(base_ids, base_tokens, blending_ids, blending_tokens, alignment, blending_logits,
                          blending_indices, where)


def _check_alignment_inputs(base_ids, base_tokens, blending_ids, blending_tokens, alignment, blending_size: int,
                  where: str) -> None:
    if len(base_ids) == 0:
        raise InputError(f"{where}: no base tokens")
    if len(base_tokens) != len(base_ids) or len(alignment) != len(base_ids):
        raise InputError(
            f"{where}: {len(base_ids)} base ids, {len(base_tokens)} base token strings and "
            f"{len(alignment)} alignment entries; they must be equal"
        )
    if len(blending_tokens) != len(blending_ids):
        raise InputError(f"{where}: {len(blending_ids)} blending ids but {len(blending_tokens)} token strings")
    outside_vocabulary = [j for j, i in enumerate(blending_ids) if not 0 <= i < blending_size]
    if outside_vocabulary:
        j = outside_vocabulary[0]
        raise InputError(f"{where}: source token id {blending_ids[j]} at position {j} is outside the source "
                         f"vocabulary ({blending_size} ids)")
    lengths = np.fromiter((len(matched) for matched in alignment), dtype=np.int64, count=len(alignment))
    positions = np.fromiter((j for matched in alignment for j in matched), dtype=np.int64, count=int(lengths.sum()))
    outside = (positions < 0) | (positions >= len(blending_ids))
    bad = np.flatnonzero(lengths == 0).tolist() + np.repeat(np.arange(len(alignment)), lengths)[outside].tolist()
    if bad:
        i = min(bad)
        raise InputError(f"{where}: base position {i} is matched to {list(alignment[i])!r}, not to blending "
                         f"positions in [0, {len(blending_ids)})")


def _check_candidates(blending_ids, blending_logits, blending_indices, where: str) -> None:
    if len(blending_logits) < len(blending_ids) or len(blending_indices) < len(blending_ids):
        raise InputError(
            f"{where}: the source has {len(blending_ids)} tokens but {len(blending_logits)} rows of "
            f"per_step_logits and {len(blending_indices)} of per_step_indices"
        )
    logit_lengths = [len(row) for row in blending_logits]
    index_lengths = [len(row) for row in blending_indices]
    if logit_lengths != index_lengths:
        j = next(j for j, (a, b) in enumerate(zip(logit_lengths, index_lengths)) if a != b)
        raise InputError(f"{where}: source position {j} has {logit_lengths[j]} logits but {index_lengths[j]} indices")


def not_aligned(blending_logits: Sequence[Sequence[float]],
                blending_indices: Sequence[Sequence[int]]) -> tuple[list[list[float]], list[list[int]]]:
    """``--not_align``: the source's lists as they are, in its own vocabulary and positions."""
    return [list(row) for row in blending_logits], [list(row) for row in blending_indices]


def dropped_columns(metric_level: str) -> tuple[str, ...]:
    """Columns of the pivot's set that the aligned set drops (the reference's choice per level)."""
    return (PER_STEP_METRIC_CE,) if check_metric_level(metric_level) == "sequence" else (METRIC_CE,)


def fused_columns(base_row: dict, blending_row: dict, fused_logits: list, fused_indices: list,
                  metric_level: str = "sequence", where: str = "sample") -> dict:
    """The columns written for one aligned row (docs/design.md 6.3).

    The pivot's ``per_step_logits`` / ``per_step_indices`` cut to its number of tokens, the fused
    lists, and the source's metric: ``fused_metric_ce`` (sequence level) or
    ``per_step_fused_metric_ce`` (token level, the source's per-token CEs as they are).
    """
    length = len(base_row["input_ids"])
    columns = {
        LOGITS: base_row[LOGITS][:length],
        INDICES: base_row[INDICES][:length],
        FUSED_LOGITS: fused_logits,
        FUSED_INDICES: fused_indices,
    }
    if check_metric_level(metric_level) == "sequence":
        columns[FUSED_METRIC_CE] = blending_row[METRIC_CE]
    else:
        if PER_STEP_METRIC_CE not in blending_row:
            raise InputError(f"{where}: --metric_level token needs the source's {PER_STEP_METRIC_CE} column "
                             f"(capture it with --save_per_token_metric)")
        columns[PER_STEP_FUSED_METRIC_CE] = list(blending_row[PER_STEP_METRIC_CE])
    return columns
