"""Small pieces the stage scripts share: loading comma-separated set lists, saving with a summary."""

from __future__ import annotations

import logging

from .. import provenance
from ..errors import InputError
from ..schema import SPLIT, train_split
from ..storage import check_output_dir, load_dataset_dir, save_dataset_atomic, split_paths

logger = logging.getLogger("fusechat")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def load_sets(paths: str, what: str):
    """``(datasets, names)`` for a comma-separated list of saved DatasetDicts (their train splits)."""
    names = split_paths(paths)
    if not names:
        raise InputError(f"no {what} given")
    return [train_split(load_dataset_dir(p, what), p) for p in names], names


def check_set_output(path: str | None, flag: str, *inputs: str | None) -> None:
    """Before any work: the output can be written and replaces neither an input (comma-separated
    lists) nor a folder this project did not write."""
    if path:
        check_output_dir(path, flag, [p for paths in inputs if paths for p in split_paths(paths)])


def save_set(dataset, path: str, num_proc: int | None = None, ids_from: list[str] | None = None,
             kind: str = "derived") -> None:
    """Save atomically; the set carries the provenance record of ``ids_from``, the sets whose token
    ids it keeps (so train.py can check the tokenizer)."""
    from datasets import DatasetDict

    record = provenance.derived_record(provenance.first_record(ids_from), kind, ids_from) if ids_from else None
    save_dataset_atomic(DatasetDict({SPLIT: dataset}), path, num_proc, provenance=record)
    logger.info("saved %d rows to %s", len(dataset), path)
