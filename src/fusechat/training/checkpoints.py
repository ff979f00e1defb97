"""Which checkpoint a run resumes from, and how the final model is saved.

The Trainer writes a checkpoint folder file by file and ``trainer_state.json`` last, so a run killed
while saving leaves a ``checkpoint-N`` without it. Resuming from that folder fails deep inside the
Trainer; the latest complete checkpoint is used instead, and the incomplete one is named.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from ..errors import InputError
from ..modeling import check_weights, keep_legacy_flag
from ..storage import keep_umask

logger = logging.getLogger(__name__)
STATE_FILE = "trainer_state.json"
STAGING = ".final_model.tmp"  # the final model is written here, then moved into output_dir
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
            check_weights(folder, "checkpoint")
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
    check_weights(folder, "--resume_from_checkpoint")


def save_final(trainer, output_dir: str) -> None:
    """Model, tokenizer and trainer state into output_dir, each file moved into place when complete.

    ``save_model`` runs on every process (FSDP gathers the full state dict); only the main process
    writes. config.json moves last, so a folder with a config holds a whole model.
    """
    staging = Path(output_dir) / STAGING
    if trainer.is_world_process_zero() and staging.exists():
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        keep_legacy_flag(trainer.processing_class, staging)
        trainer.state.save_to_json(str(staging / "trainer_state.json"))
        files = sorted(staging.iterdir(), key=lambda p: p.name == "config.json")
        for path in files:
            target = Path(output_dir) / path.name
            if path.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(path, target)
        staging.rmdir()
        keep_umask(output_dir)  # the weights are saved 0600 through a private temporary file
    trainer.accelerator.wait_for_everyone()
