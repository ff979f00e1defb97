"""Small pieces the stage scripts share: loading comma-separated set lists, saving with a summary."""

from __future__ import annotations

import logging

from ..errors import InputError
from ..schema import SPLIT, train_split
from ..storage import load_dataset_dir, save_dataset_atomic, split_paths

logger = logging.getLogger("fusechat")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def load_sets(paths: str, what: str):
    """``(datasets, names)`` for a comma-separated list of saved DatasetDicts (their train splits)."""
    names = split_paths(paths)
    if not names:
        raise InputError(f"no {what} given")
    return [train_split(load_dataset_dir(p, what), p) for p in names], names


def save_set(dataset, path: str, num_proc: int | None = None) -> None:
    from datasets import DatasetDict

    save_dataset_atomic(DatasetDict({SPLIT: dataset}), path, num_proc)
    logger.info("saved %d rows to %s", len(dataset), path)
