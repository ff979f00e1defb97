"""The chat corpus: loading, validation, sampling and splitting (docs/design.md 2).

Records are FastChat/ShareGPT dicts: ``{"id", "conversations": [{"from", "value"}, ...]}``.
A first message not from ``human`` (a ``system`` prompt, a greeting from ``gpt``) is dropped, as
docs/design.md 2 says, and every such drop is listed; after that roles must alternate human/gpt and at
least one gpt reply must remain. Ids must be unique (later stages match rows by id). Anything else
is bad input, reported by record id and reason.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .templates import ASSISTANT, USER

ROLE_NAMES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}
SAMPLE_SEED = 42
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    record_id: str
    reason: str
    kept: bool = False  # the record is kept without one message (a dropped first message)


def record_id(record, index: int) -> str:
    """The record's own id, else its position in the corpus."""
    if isinstance(record, dict) and record.get("id") not in (None, ""):
        return str(record["id"])
    return f"#{index}"


def conversation_messages(record, index: int = 0, dropped: list | None = None) -> list[tuple[str, str]]:
    """Validate one record and return its messages as ``(user|assistant, text)`` pairs.

    Raises :class:`InputError` naming the record id and the reason. A dropped first message is
    appended to ``dropped`` as a :class:`Problem` with ``kept=True``.
    """
    rid = record_id(record, index)
    if not isinstance(record, dict):
        raise InputError(f"record {rid}: not a JSON object")
    turns = record.get("conversations")
    if turns is None:
        raise InputError(f"record {rid}: no 'conversations' field")
    if not isinstance(turns, list):
        raise InputError(f"record {rid}: 'conversations' is not a list")
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise InputError(f"record {rid}: message {position} lacks 'from' or 'value'")
        if not isinstance(turn["value"], str):
            raise InputError(f"record {rid}: message {position} has a non-string 'value'")
    if turns and ROLE_NAMES.get(turns[0]["from"]) != USER:
        if dropped is not None and len(turns) > 1:
            dropped.append(Problem(rid, f"first message, from {turns[0]['from']!r}, dropped (a conversation "
                                        "starts with a human message)", kept=True))
        turns = turns[1:]
    if not turns:
        raise InputError(f"record {rid}: empty conversation")
    messages = []
    for position, turn in enumerate(turns):
        role = ROLE_NAMES.get(turn["from"])
        expected = USER if position % 2 == 0 else ASSISTANT
        if role is None:
            raise InputError(f"record {rid}: message {position} has unknown role {turn['from']!r}")
        if role != expected:
            raise InputError(
                f"record {rid}: roles do not alternate human/gpt (message {position} is from "
                f"{turn['from']!r})"
            )
        messages.append((role, turn["value"]))
    if len(messages) < 2:
        raise InputError(f"record {rid}: no gpt reply after the first human message (nothing to learn from)")
    return messages


# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or the second without the first.
LONE_SURROGATE = re.compile(r"(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                            r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def read_corpus(path: str | Path) -> list:
    """Read a JSON list (or JSON Lines) of records; a clear error for malformed JSON."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"data file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError(f"{p}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the corpus "
                         "as UTF-8") from None
    lone = LONE_SURROGATE.search(text)
    if lone:
        raise InputError(f"{p}: line {text.count(chr(10), 0, lone.start()) + 1}: {lone.group()} is half of a UTF-16 "
                         "surrogate pair, not a character (the text cannot be tokenized)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if p.suffix == ".jsonl":
            return _read_json_lines(p, text)
        raise InputError(f"{p}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a JSON list of conversation records")
    return data


def _read_json_lines(p: Path, text: str) -> list:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{p}: malformed JSON on line {lineno}: {exc.msg}") from exc
    return records


def validate_records(records: list, skip_invalid: bool = False) -> tuple[list[dict], list[Problem]]:
    """Return ``(valid records as {id, messages}, problems)``.

    Without ``skip_invalid`` the first problem is raised; with it, invalid records are left out
    and every one of them is listed in ``problems``. Records kept without their first message are
    listed too (``kept=True``), with or without ``skip_invalid``.
    """
    valid, problems, seen = [], [], {}
    for index, record in enumerate(records):
        rid = record_id(record, index)
        dropped: list[Problem] = []
        try:
            if rid in seen:
                raise InputError(f"record {rid}: duplicate id (also record #{seen[rid]}); later stages match "
                                 "rows by id")
            messages = conversation_messages(record, index, dropped)
        except InputError as exc:
            if not skip_invalid:
                raise
            problems.append(Problem(rid, str(exc)))
            continue
        seen[rid] = index
        problems.extend(dropped)
        valid.append({"id": rid, "messages": messages})
    return valid, problems


def log_problems(problems: list[Problem], where: str) -> None:
    """One log line for the records left out and one for the records kept without a message."""
    for kept, what in ((False, "invalid record(s) left out"), (True, "record(s) kept without their first message")):
        ids = [p.record_id for p in problems if p.kept == kept]
        if ids:
            logger.warning("%s: %d %s (ids: %s%s)", where, len(ids), what, ", ".join(ids[:10]),
                           " ..." if len(ids) > 10 else "")


def sample_indices(n: int, proportion: float | None) -> list[int]:
    """``int(n * p)`` random indices with seed 42, kept in corpus order (for debugging runs)."""
    if proportion is None:
        return list(range(n))
    if not 0 < proportion <= 1:
        raise InputError(f"--dataset_sample_prop must be in (0, 1], got {proportion}")
    return sorted(random.Random(SAMPLE_SEED).sample(range(n), int(n * proportion)))


def split_bounds(n: int, split_num: int, index: int) -> tuple[int, int]:
    """Contiguous slice ``index`` of ``split_num``: ``n // split_num`` each, the last takes the rest."""
    if split_num < 1:
        raise InputError(f"--dataset_split_num must be at least 1, got {split_num}")
    if split_num > n:
        logger.warning("--dataset_split_num %d is above the record count %d: slices of %d records, the last "
                       "takes them all", split_num, n, n // split_num)
    if not 0 <= index < split_num:
        raise InputError(f"--dataset_index {index} is out of range for --dataset_split_num {split_num}")
    size = n // split_num
    start = index * size
    end = n if index == split_num - 1 else start + size
    return start, end


def require_positive(value: int | float | None, flag: str) -> None:
    """A size or count flag must be at least 1 (0 would silently produce empty output)."""
    if value is not None and value < 1:
        raise InputError(f"{flag} must be at least 1, got {value}")
