"""Which checkpoint a run resumes from.

The Trainer writes a checkpoint folder file by file and ``trainer_state.json`` last, so a run killed
while saving leaves a ``checkpoint-N`` without it. Resuming from that folder fails deep inside the
Trainer; the latest complete checkpoint is used instead, and the incomplete one is named.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import InputError

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The complete ``checkpoint-N`` of ``output_dir`` with the largest N; incomplete ones are skipped
    with a warning."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT.match(p.name))]
    for _, folder in sorted(found, reverse=True):
        if is_complete(folder):
            return str(folder)
        logger.warning("skipping %s: no %s, its save was interrupted (delete it to silence this)", folder,
                       STATE_FILE)
    return None


def check_resume_checkpoint(path: str) -> None:
    """An explicit ``--resume_from_checkpoint`` must be a complete checkpoint folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
    if not is_complete(folder):
        raise InputError(f"--resume_from_checkpoint {path}: incomplete checkpoint (no {STATE_FILE}; its save was "
                         "interrupted)")
