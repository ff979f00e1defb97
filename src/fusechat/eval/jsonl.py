"""JSON-lines files that survive interruption: answers and judgments are appended one line at a time.

Each record is written with one ``write`` of a full line followed by flush and fsync, so an
interrupted run leaves every finished record on disk. The only damage a crash can do is a last
line cut short; in files this project wrote, readers ignore such a line (with a warning) and
appenders cut it off before writing, so a resumed run redoes that one record and nothing else.
In any other file (a question file, say) a cut-short last line is an error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from ..errors import InputError
from ..storage import is_our_output, mark_file

logger = logging.getLogger(__name__)


def _parse_lines(path: Path, data: bytes) -> tuple[list[dict], int]:
    """Records of ``data`` and the byte length of its intact part (everything but a cut-short tail,
    which only a file of ours may have)."""
    ours = is_our_output(path)
    records: list[dict] = []
    lines = data.split(b"\n")
    intact = 0
    for lineno, raw in enumerate(lines, 1):
        is_last = lineno == len(lines)
        if raw.strip():
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if is_last and ours:  # no newline after it: a write of ours that was cut short
                    logger.warning("%s: ignoring line %d, cut short by an interrupted write", path, lineno)
                    return records, intact
                cut = " (the last line is cut short)" if is_last else ""
                raise InputError(f"{path}: malformed JSON on line {lineno}{cut}: {exc}") from exc
            if not isinstance(record, dict):
                raise InputError(f"{path}: line {lineno} is not a JSON object")
            records.append(record)
        intact += len(raw) + (0 if is_last else 1)
    return records, intact


def read_jsonl(path: str | os.PathLike, what: str = "file") -> list[dict]:
    """All records of a JSON-lines file; a missing file is an :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    return _parse_lines(p, p.read_bytes())[0]


def read_jsonl_if_exists(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    return read_jsonl(p) if p.is_file() else []


class JsonlAppender:
    """Append records to a JSON-lines file, one durable line each; safe to share between threads.

    Opening it cuts off a last line left incomplete by an interrupted run, and adds the newline a
    complete last record may lack, so appended lines always start on a fresh line. The file is
    created by the first record, so a run that fails before its first record leaves no empty file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._repair_tail()
        self._handle = None

    def _repair_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        _, intact = _parse_lines(self.path, data)
        if intact < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(intact)
        elif data and not data.endswith(b"\n"):
            with open(self.path, "ab") as handle:
                handle.write(b"\n")

    def write(self, record: dict) -> None:
        line = json.dumps(record) + "\n"  # ASCII-escaped, byte for byte as FastChat writes
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    mark_file(self.path)
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
