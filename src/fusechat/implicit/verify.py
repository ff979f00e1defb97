"""Verifiers for math and code responses (docs/design.md 13.2, 13.6.2 A5).

Math: the final answer is the content of the last ``\\boxed{...}`` (``--answer boxed``; the demo's small
models rarely box, so ``boxed-or-last-number`` falls back to the last number in the text); it is
correct when it equals the gold answer after normalisation, numerically when both sides are numbers.
The checker is named :data:`MATH_CHECKER` in every score file's log.

Code: the last fenced code block must parse (``ast.parse``, the "static analysis"), then the code and
the prompt's tests run in a fresh Python process with a timeout, in an empty temporary folder, with an
empty environment, the socket module disabled, and a memory limit. No code block, a syntax error, a
failing test or a timeout: the response fails.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import tempfile
from fractions import Fraction

MATH_CHECKER = "fusechat-math-equiv-1 (last \\boxed{}, normalised strings, exact numbers)"
ANSWER_RULES = ("boxed", "boxed-or-last-number")
CODE_TIMEOUT = 10.0
MEMORY_LIMIT = 1 << 30

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)```", re.DOTALL)
# Run before the tests: no network for the code under test.
_NO_NETWORK = (
    "import socket as _s\n"
    "def _refuse(*a, **k):\n    raise OSError('network access is disabled while testing')\n"
    "_s.socket = _refuse; _s.create_connection = _refuse; _s.getaddrinfo = _refuse\n"
    "del _s, _refuse\n"
)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_answer(text: str, rule: str = "boxed") -> str | None:
    boxed = last_boxed(text)
    if boxed is not None or rule == "boxed":
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalise(answer: str) -> str:
    s = answer.strip().strip("$").strip()
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""),
                     ("\\,", ""), ("\\ ", ""), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), ("%", "")):
        s = s.replace(old, new)
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def as_number(s: str) -> Fraction | None:
    """An exact value for integers, decimals, a/b and \\frac{a}{b}; thousands separators allowed."""
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if frac:
        sign = -1 if frac.group(1) else 1
        return sign * Fraction(int(frac.group(2)), int(frac.group(3))) if int(frac.group(3)) else None
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    try:
        return Fraction(s) if re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)(/\d+)?", s) else None
    except (ValueError, ZeroDivisionError):
        return None


def answers_equal(found: str, gold: str) -> bool:
    a, b = normalise(found), normalise(gold)
    if a == b:
        return True
    x, y = as_number(a), as_number(b)
    return x is not None and y is not None and x == y


def check_math(response: str, gold: str, rule: str = "boxed") -> bool:
    answer = extract_answer(response, rule)
    return answer is not None and answers_equal(answer, gold)


def extract_code(response: str) -> str | None:
    """The last fenced code block (```python, ```py or a bare fence)."""
    blocks = [body for lang, body in _FENCE.findall(response) if lang.lower() in ("", "python", "py", "python3")]
    return blocks[-1] if blocks else None


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_code_tests(code: str, tests: str, timeout: float = CODE_TIMEOUT) -> str:
    """The outcome of running ``code`` then ``tests``: pass, syntax error, tests failed or timeout."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return "syntax error"
    with tempfile.TemporaryDirectory(prefix="fusechat-code-") as folder:
        script = os.path.join(folder, "check.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(_NO_NETWORK + code + "\n\n" + tests + "\n")
        process = subprocess.Popen([sys.executable, "-I", "-S", script], cwd=folder, env={"PATH": "/usr/bin:/bin"},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=_limit_memory)
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the tests' children go too
            process.wait()
            return "timeout"
    return "pass" if status == 0 else "tests failed"


def check_code(response: str, tests: str, timeout: float = CODE_TIMEOUT) -> str:
    code = extract_code(response)
    if code is None:
        return "no code block"
    return run_code_tests(code, tests, timeout)
