"""The released WRPO config YAML (training_configs/*-wrpo.yaml) as defaults of fusechat-imf-wrpo.

The keys that decide the loss and the run map onto flags; flags given on the command line win.
Keys that concern the released launcher only (hub, logging, saving, precision) are accepted and
listed in one notice, so a released config runs unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

# released key -> flag destination
KEY_TO_FLAG = {
    "beta": "beta", "alpha": "alpha", "is_dynamic": "is_dynamic", "loss_type": "loss_type",
    "max_length": "max_length", "max_prompt_length": "max_prompt_length", "learning_rate": "learning_rate",
    "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "warmup_ratio": "warmup_ratio", "seed": "seed",
    "max_steps": "max_steps", "model_name_or_path": "model", "output_dir": "out",
}
FIXED = {"lr_scheduler_type": "cosine"}  # what this trainer always does; another value is refused


def read_yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: expected a mapping of keys to values")
    return data


def apply_wrpo_yaml(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Set ``parser``'s defaults from ``--config`` in ``argv``; returns notices to log."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return []
    data = read_yaml(known.config)
    defaults, ignored = {}, []
    for key, value in data.items():
        if key in KEY_TO_FLAG:
            defaults[KEY_TO_FLAG[key]] = value
        elif key in FIXED and value != FIXED[key]:
            raise InputError(f"--config {known.config}: {key} {value!r} is not supported (only {FIXED[key]!r})")
        elif key == "dataset_mixer" and isinstance(value, dict) and value:
            defaults["data"] = next(iter(value))
        else:
            ignored.append(key)
    if not isinstance(defaults.get("is_dynamic", True), bool):
        raise InputError(f"--config {known.config}: is_dynamic must be true or false")
    parser.set_defaults(**defaults)
    for action in parser._actions:  # a key the YAML supplies is no longer required on the command line
        if action.dest in defaults:
            action.required = False
    notes = [f"--config {known.config}: {len(defaults)} settings taken"]
    if ignored:
        notes.append(f"--config {known.config}: keys of the released launcher, not used here: {', '.join(ignored)}")
    return notes
