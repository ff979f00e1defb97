"""Flag values both wings check the same way: one message for one mistake."""

from __future__ import annotations

from ..errors import InputError

METRIC_LEVELS = ("sequence", "token")


def check_lm_loss_weight(weight: float) -> float:
    """lambda of ``lambda * LM + (1 - lambda) * fuse``: a weight in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"--lm_loss_weight must be in [0, 1], got {weight}")
    return weight


def check_metric_level(level: str, supported: tuple[str, ...] = METRIC_LEVELS, why_not: str = "") -> str:
    """``--metric_level``: one of ``supported``; a known level outside it fails with ``why_not``."""
    if level in supported:
        return level
    if level in METRIC_LEVELS:
        raise InputError(f"--metric_level {level} is not supported: {why_not}")
    raise InputError(f"--metric_level {level!r} is unknown; choose from {', '.join(supported)}")
