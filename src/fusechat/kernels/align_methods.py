"""Align methods: how a source's top-k lists come into the pivot's positions and vocabulary
(``--align_type`` of align_token_and_vocab, docs/design.md 6.2-6.3; ``--vocab_align_type`` of FuseLLM's
token_alignment.py, 12.4.2). One registry entry per method; both wings read it.

A method decides two things, given the token alignment of a row pair:

- which base positions take a source row: a base token matched to exactly one source token takes
  that token's list when ``takes(bt, blt, mapped)`` holds (``bt`` the base token, ``blt`` the source
  token with its word-start marker replaced by the base one, ``mapped`` whether the vocabulary
  mapping sends the source token to the base token; computed only for methods with
  ``match_uses_mapping``). A base token matched to several source tokens takes one of them only
  for a method with ``many_to_one`` (FuseChat with ``--use_token_alignment_matrix``); all other
  positions get ONE-HOT;
- how a candidate id becomes a base id: ``candidates(exact, mapped)`` builds the table blending id
  -> base id from the exact-piece table and the mapping's table (negative: dropped).

``mapping`` names the vocabulary mapping the method needs: None, ``"mined"`` (minimum edit
distance, :mod:`fusechat.kernels.mined`) or ``"ms"`` (FuseChat's count-matrix mapping).

Adding a method is one :func:`register` call (docs/kernels.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MAPPINGS = (None, "mined", "ms")


@dataclass(frozen=True)
class AlignMethod:
    name: str
    summary: str
    mapping: str | None
    candidates: Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # (exact, mapped) -> blending id -> base id
    takes: Callable[[str, str, bool], bool]  # (bt, blt, mapped) -> the position takes the source's list
    match_uses_mapping: bool = False
    many_to_one: bool = False

    def __post_init__(self):
        if self.mapping not in MAPPINGS:
            raise ValueError(f"align method {self.name}: mapping must be one of {MAPPINGS}, got {self.mapping!r}")


def _exact(exact, mapped):
    return exact


def _mapped(exact, mapped):
    return mapped


def _exact_else_mapped(exact, mapped):
    return np.where(exact >= 0, exact, mapped)


ALIGN_METHODS: dict[str, AlignMethod] = {}


def register(method: AlignMethod) -> AlignMethod:
    """Add ``method`` to the registry (a method of the same name is replaced)."""
    ALIGN_METHODS[method.name] = method
    return method


register(AlignMethod("hard", "EM: the same token after marker replacement; candidates by exact piece", None,
                     _exact, lambda bt, blt, mapped: bt == blt))
register(AlignMethod("soft", "MinED: the same token or its minimum-edit-distance mapping; candidates "
                     "through the mapping", "mined", _mapped, lambda bt, blt, mapped: bt == blt or mapped,
                     match_uses_mapping=True))
register(AlignMethod("default", "MS: one token ends with the other; candidates by exact piece, else through "
                     "the count-matrix mapping", "ms", _exact_else_mapped,
                     lambda bt, blt, mapped: blt.endswith(bt) or bt.endswith(blt), many_to_one=True))


def align_method(name: str, flag: str = "--align_type", mappings: tuple = MAPPINGS) -> AlignMethod:
    """The registered method ``name``; ``mappings``: the vocabulary mappings the calling stage can give."""
    method = ALIGN_METHODS.get(name)
    usable = [m.name for m in ALIGN_METHODS.values() if m.mapping in mappings]
    if method is None:
        raise InputError(f"{flag} {name!r} is unknown; choose from {', '.join(usable)}")
    if method.mapping not in mappings:
        raise InputError(f"{flag} {name}: its {method.mapping} vocabulary mapping is not made by this stage; "
                         f"choose from {', '.join(usable)}")
    return method
