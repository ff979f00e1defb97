"""FuseLLM's vocabulary mapping, source piece -> pivot piece (docs/design.md 12.3, ``default`` mode).

For every blending vocabulary piece x, x' = x with every blending marker replaced by the base
marker. If x' is a base piece it maps to itself; otherwise to the base piece y with the smallest
Levenshtein distance on the raw strings (markers included), the first such y in ascending base id
order on ties. The result is a dict keyed by x' (written as one JSON object).

The reference evaluates all |V_blend| x |V_base| distances in a pool of 64 processes; here the
exact shell search of :mod:`fusechat.kernels.mined` gives the same answer.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from ..kernels.mined import all_minima, nearest_pieces, word_start_marker

logger = logging.getLogger(__name__)
MAPPING_TYPES = ("default", "co_occurrence")


def ordered_pieces(tokenizer) -> list[str]:
    """``get_vocab()`` keys in ascending id order (the base order of 12.3; 12.8 #5)."""
    return [piece for piece, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]


def default_vocab_mapping(blending_pieces: list[str], base_pieces: list[str], blending_marker: str,
                          base_marker: str, workers: int = -1, progress: bool = True, with_minima: bool = False):
    """docs/design.md 12.3 ``default``: {x' (blending piece, base marker): base piece}, blending id order.

    ``with_minima`` also returns, per key, every base piece at the minimum distance (the key itself
    for an exact hit), which ``co_occurrence`` chooses among.
    """
    base_set = set(base_pieces)
    keys = [piece.replace(blending_marker, base_marker) for piece in blending_pieces]
    missing = list(dict.fromkeys(k for k in keys if k not in base_set))  # distinct, first-seen order
    choices, distances = nearest_pieces(missing, base_pieces, workers, progress, return_distances=True)
    chosen = dict(zip(missing, (base_pieces[i] for i in choices)))
    mapping = {key: key if key in base_set else chosen[key] for key in keys}
    if not with_minima:
        return mapping
    minima = {key: [key] for key in keys if key in base_set}
    for key, ids in zip(missing, all_minima(missing, distances, base_pieces, workers)):
        minima[key] = [base_pieces[i] for i in ids]
    return mapping, minima


# --- co_occurrence (docs/design.md 12.3; not used by the release) ----------------------------------------

def cooccurrence_counts(id_rows, vocab_size: int, window: int):
    """C[t_i, t_j] += 1 and C[t_j, t_i] += 1 for every i and every j != i in
    [max(0, i - w), min(i + w, len) - 1] (the reference's asymmetric window), as a CSR matrix."""
    from scipy import sparse

    rows, columns = [], []
    for ids in id_rows:
        tokens = np.asarray(ids, dtype=np.int64)
        for offset in range(-window, window):
            if offset == 0:
                continue
            i = np.arange(max(0, -offset), min(len(tokens), len(tokens) - offset))
            rows.extend((tokens[i], tokens[i + offset]))
            columns.extend((tokens[i + offset], tokens[i]))
    if not rows:
        return sparse.csr_matrix((vocab_size, vocab_size), dtype=np.int64)
    r, c = np.concatenate(rows), np.concatenate(columns)
    return sparse.coo_matrix((np.ones(r.size, dtype=np.int64), (r, c)), shape=(vocab_size, vocab_size)).tocsr()


def cooccurrence_mapping(mapping: dict[str, str], minima: dict[str, list[str]], base_index: dict[str, int],
                         blending_index: dict[str, int], base_counts, blending_counts, base_marker: str,
                         blending_marker: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Steps 4-5 of ``co_occurrence``: re-choose among equally distant base pieces by the cosine of
    co-occurrence rows over the anchor columns. Returns the new mapping and the changes
    ``{x': [default choice, new choice]}``."""
    inverse = {}
    for key, value in mapping.items():  # the last key mapped to a base piece wins
        inverse[value] = key
    anchor_base, anchor_blending = [], []
    for anchor in sorted(inverse, key=base_index.__getitem__):
        blending_piece = inverse[anchor].replace(base_marker, blending_marker)
        if blending_piece in blending_index:
            anchor_base.append(base_index[anchor])
            anchor_blending.append(blending_index[blending_piece])
    base_rows = base_counts[:, anchor_base].tocsr()
    blending_rows = blending_counts[:, anchor_blending].tocsr()
    updated, changes = dict(mapping), {}
    for key, value in mapping.items():
        if key == value:
            continue
        candidates = minima[key]
        if len(candidates) == 1:
            choice = candidates[0]
        else:
            blending_id = blending_index.get(key.replace(base_marker, blending_marker))
            b = (blending_rows[blending_id].toarray()[0].astype(np.float64) if blending_id is not None
                 else np.zeros(len(anchor_blending)))
            rows = base_rows[[base_index[candidate] for candidate in candidates]].astype(np.float64)
            norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
            similarities = (rows @ b) / (norms * np.sqrt(np.sum(b * b)) + 1e-6)  # integer sums: exact
            choice = candidates[int(np.argmax(similarities))]  # the first maximum
        if choice != value:
            updated[key] = choice
            changes[key] = [value, choice]
    return updated, changes


def load_vocab_mapping(path: str, base_pieces, flag: str = "--vocab_mapping_save_dir") -> dict[str, str]:
    """Read a mapping JSON; every value must be a base piece."""
    from pathlib import Path

    from ..storage import read_json

    p = Path(path)
    mapping = read_json(p, flag, "run vocab_mapping.py first")
    if not isinstance(mapping, dict):
        raise InputError(f"{flag} {p}: expected a JSON object {{source piece: pivot piece}}")
    base_set = set(base_pieces)
    for key, value in mapping.items():
        if value not in base_set:
            raise InputError(f"{flag} {p}: entry {key!r} maps to {value!r}, which is not a pivot vocabulary "
                             "piece; was it built for another model pair?")
    return mapping


def validation_texts(dataset_dir: str | None) -> list[str]:
    """The texts of the validation split of ``--dataset_dir`` (what co_occurrence counts)."""
    from .common import TEXT, load_dataset_dict, require

    if not dataset_dir:
        raise InputError("--vocab_mapping_type co_occurrence needs --dataset_dir (its validation split is counted)")
    dataset_dict = load_dataset_dict(dataset_dir, "--dataset_dir")
    if "validation" not in dataset_dict:
        raise InputError(f"--dataset_dir {dataset_dir}: no 'validation' split (found {list(dataset_dict)})")
    require(dataset_dict["validation"], [TEXT], f"--dataset_dir {dataset_dir} split 'validation'")
    return list(dataset_dict["validation"][TEXT])


def updated_log_path(save_path: str) -> str:
    """Where co_occurrence lists the entries it changed: ``<mapping>_updated_log.json``."""
    return save_path[: -len(".json")] + "_updated_log.json"


def check_mapping_flags(mapping_type: str, workers: int, save_path: str) -> None:
    if mapping_type not in MAPPING_TYPES:
        raise InputError(f"--vocab_mapping_type {mapping_type!r} is unknown; choose from {', '.join(MAPPING_TYPES)}")
    if workers < 1:
        raise InputError(f"--num_process must be at least 1, got {workers}")
    if not save_path.endswith(".json"):
        raise InputError(f"--vocab_mapping_save_dir {save_path}: the path of a .json file")


def build_vocab_mapping(base_model: str, blending_model: str, save_path: str, mapping_type: str = "default",
                        dataset_dir: str | None = None, max_length: int = 2048, window: int = 5, workers: int = 1,
                        cache_dir: str | None = None) -> None:
    """vocab_mapping.py: the blending -> base piece mapping of a model pair, written as JSON at
    ``save_path`` (co_occurrence also writes the entries it changed beside it)."""
    from ..storage import write_json
    from .common import load_stage_tokenizer

    check_mapping_flags(mapping_type, workers, save_path)
    co_occurrence = mapping_type == "co_occurrence"
    texts = validation_texts(dataset_dir) if co_occurrence else None
    base = load_stage_tokenizer(base_model, max_length, cache_dir)
    blending = load_stage_tokenizer(blending_model, max_length, cache_dir)
    base_pieces, blending_pieces = ordered_pieces(base), ordered_pieces(blending)
    base_marker, blending_marker = word_start_marker(base), word_start_marker(blending)
    result = default_vocab_mapping(blending_pieces, base_pieces, blending_marker, base_marker,
                                   workers=workers, with_minima=co_occurrence)
    if co_occurrence:
        mapping, minima = result
        counts = [cooccurrence_counts(tokenizer(texts, add_special_tokens=False, truncation=True,
                                                max_length=max_length)["input_ids"], len(pieces), window)
                  for tokenizer, pieces in ((base, base_pieces), (blending, blending_pieces))]
        mapping, changes = cooccurrence_mapping(
            mapping, minima, {p: i for i, p in enumerate(base_pieces)}, {p: i for i, p in enumerate(blending_pieces)},
            counts[0], counts[1], base_marker, blending_marker)
        log_path = updated_log_path(save_path)
        write_json(log_path, changes, indent=None)
        logger.info("co_occurrence changed %d entries (listed in %s)", len(changes), log_path)
    else:
        mapping = result
    write_json(save_path, mapping, indent=None)
    exact = sum(key == value for key, value in mapping.items())
    logger.info("%d entries (%d exact, %d by minimum edit distance) written to %s", len(mapping), exact,
                len(mapping) - exact, save_path)
