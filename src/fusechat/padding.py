"""The one padder: ragged rows into a [rows, width] array (capture batches, collated training
batches, candidate lists of distribution alignment)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np


def pad_rows(values: np.ndarray, lengths: np.ndarray, width: int, fill, dtype, limit: int | None = None) -> np.ndarray:
    """Rows of ``lengths`` laid end to end in ``values`` as a [len(lengths), width] array padded with
    ``fill``, each row cut at ``limit`` (default: ``width``). A batch has few rows: one slice copy each."""
    limit = width if limit is None else limit
    if limit == width and len(values) == len(lengths) * width and (lengths == width).all():
        return values.reshape(len(lengths), width).astype(dtype)  # no padding (packed rows): one copy
    out = np.full((len(lengths), width), fill, dtype=dtype)
    end = np.cumsum(lengths)
    for row, (start, length) in enumerate(zip(end - lengths, lengths)):
        kept = min(int(length), limit)
        out[row, :kept] = values[start:start + kept]
    return out


def pad_lists(rows: Sequence[Sequence], fill, dtype) -> np.ndarray:
    """Python lists as a [len(rows), longest] array padded with ``fill``."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max(initial=0))
    if (lengths == width).all():
        return np.array(rows, dtype=dtype).reshape(len(rows), width)
    values = np.fromiter(chain.from_iterable(rows), dtype=dtype, count=int(lengths.sum()))
    return pad_rows(values, lengths, width, fill, dtype)
