"""Helpers of the bad-input tests: run an entry point as its script does, and prove nothing changed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fusechat.errors import run_cli


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` (hidden ones included) with its content hash and mode."""
    state = {}
    for path in sorted(Path(root).rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir():
            state[key] = ("dir", path.stat().st_mode)
        else:
            state[key] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return state


def user_folder(path: Path) -> Path:
    """A folder the user filled by hand: no output of ours may replace it."""
    path.mkdir()
    (path / "notes.txt").write_text("the user's own file")
    return path


def run_script(capsys, main, argv, prog: str | None = None) -> tuple[int, str]:
    """Run ``main`` the way the FuseChat/*.py scripts do (``run_cli``); returns (exit status, stderr)."""
    capsys.readouterr()
    code = run_cli(main, [str(a) for a in argv], prog)
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error: " in line]


def assert_one_error(code: int, err: str, expected_start: str, prog: str | None = None) -> str:
    """Exit status 2, no traceback, exactly one error line, which starts as expected."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    if prog:
        assert lines[0].startswith(f"{prog}: error: {expected_start}"), lines[0]
    else:  # any program name before "error: "
        assert lines[0][lines[0].index("error: "):].startswith(f"error: {expected_start}"), lines[0]
    return lines[0]


def conversation(rid: str, *turns: tuple[str, str]) -> dict:
    return {"id": rid, "conversations": [{"from": who, "value": text} for who, text in turns]}


GOOD_RECORDS = [
    conversation("a", ("human", "Hello there, how are you?"), ("gpt", "Fine, thanks! And you?")),
    conversation("b", ("human", "What is 12 * 7?"), ("gpt", "12 * 7 = 84.")),
    conversation("c", ("human", "Name a colour."), ("gpt", "Blue."), ("human", "Another?"), ("gpt", "Green.")),
    conversation("d", ("human", "Say hi"), ("gpt", "Hi!")),
]


def write_corpus(path: Path, records=GOOD_RECORDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
