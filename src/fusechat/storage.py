"""Atomic outputs: every stage writes into a temporary sibling and renames it into place.

An interrupted run therefore never leaves a half-written folder or file at the final path
that a later stage would load.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError


@contextlib.contextmanager
def atomic_dir(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final_path``; on success it replaces ``final_path``."""
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_path(tmp, final)


@contextlib.contextmanager
def atomic_file(final_path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary file next to ``final_path``; on success it replaces ``final_path``."""
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def replace_path(src: Path, final: Path) -> None:
    """Move ``src`` to ``final``, removing an older ``final`` first (folders cannot be replaced in one step)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(src, final)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(src, final)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    with atomic_file(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)


def save_dataset_atomic(dataset, path: str | os.PathLike, num_proc: int | None = None) -> None:
    """``save_to_disk`` into a temporary folder, then rename into place."""
    from datasets import DatasetDict

    kwargs = {}
    if isinstance(dataset, DatasetDict) and any(len(split) == 0 for split in dataset.values()):
        # datasets writes an empty split as zero shards, which load_from_disk cannot read back.
        kwargs["num_shards"] = {name: 1 for name, split in dataset.items() if len(split) == 0}
    with atomic_dir(path) as tmp:
        dataset.save_to_disk(str(tmp), num_proc=num_proc if num_proc and num_proc > 1 else None, **kwargs)


def load_dataset_dir(path: str | os.PathLike, what: str = "dataset"):
    """Load a DatasetDict saved by ``save_to_disk``; a clear error if it is missing or not a dataset."""
    from datasets import load_from_disk

    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} folder not found: {p}")
    try:
        return load_from_disk(str(p))
    except FileNotFoundError as exc:
        raise InputError(f"{what} at {p} is not a saved dataset ({exc})") from exc


def split_paths(paths: str) -> list[str]:
    """Comma-separated list of paths, as the reference scripts take them."""
    return [p.strip() for p in paths.split(",") if p.strip()]
