"""One entry-point convention: every stage is a console script (pyproject.toml) whose function only
parses and calls the library through ``errors.run_cli``; the published-path scripts under FuseChat/
and FuseLLM/ are one line that calls that same function; logging is set up in one place."""

import ast
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
SHIMS = sorted([*REPO.glob("FuseChat/*/*.py"), *REPO.glob("FuseLLM/src/*.py"), *REPO.glob("FuseLLM/src/utils/*.py")])


def resolve(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def shim_call(path: Path) -> str:
    """``module:function`` that a published-path script calls; its code must be exactly one line."""
    tree = ast.parse(path.read_text())
    body = tree.body[1:] if ast.get_docstring(tree) else tree.body
    code = [line for line in path.read_text().split('"""', 2)[-1].splitlines() if line.strip()]
    assert len(body) == 1 and len(code) == 1, f"{path}: {len(code)} lines of code"
    match = re.fullmatch(r'if __name__ == "__main__": from ([\w.]+) import (\w+); raise SystemExit\(\2\(\)\)', code[0])
    assert match, f"{path}: {code[0]}"
    return f"{match.group(1)}:{match.group(2)}"


def test_there_are_a_shim_per_released_script_and_a_console_script_per_stage():
    assert len(SHIMS) == 16
    assert len(SCRIPTS) == 20


@pytest.mark.parametrize("shim", SHIMS, ids=lambda p: str(p.relative_to(REPO)))
def test_each_shim_is_one_line_calling_a_console_script(shim):
    assert shim_call(shim) in SCRIPTS.values()


# Importing mergekit or the Trainer takes seconds.
SLOW_IMPORTS = {"fusechat-merge", "fusechat-varm-analysis", "fusechat-train", "fusellm-train"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_IMPORTS else n
                                  for n in sorted(SCRIPTS)])
def test_each_console_script_parses_its_flags(name, capsys):
    entry = resolve(SCRIPTS[name])
    try:
        code = entry(["--help"])
    except SystemExit as exc:  # argparse ends with --help; click (fusechat-merge) returns
        code = exc.code
    assert code == 0
    assert "usage:" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("name", ["fusechat-filter-nan", "fusellm-packing",
                                  pytest.param("fusechat-merge", marks=pytest.mark.slow)])
def test_bad_input_is_one_line_and_status_2(name, tmp_path, capsys):
    missing = tmp_path / "missing"
    argv = {"fusechat-filter-nan": ["--input_data_dir", str(missing), "--output_data_dir", str(tmp_path / "o")],
            "fusellm-packing": ["--dataset_dir", str(missing), "--dataset_save_dir", str(tmp_path / "o")],
            "fusechat-merge": [str(missing), str(tmp_path / "o")]}[name]
    assert resolve(SCRIPTS[name])(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(missing) in errors[0]


@pytest.mark.slow
def test_a_shim_runs_as_the_released_path(tmp_path):
    missing = tmp_path / "missing"
    result = subprocess.run([sys.executable, str(REPO / "FuseChat" / "train" / "filter_nan.py"),
                             "--input_data_dir", str(missing), "--output_data_dir", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("filter_nan.py: error: ") and "Traceback" not in result.stderr


def test_logging_is_set_up_in_one_place():
    sources = {path: path.read_text() for path in (REPO / "src" / "fusechat").rglob("*.py")}
    assert [path.name for path, text in sources.items() if "basicConfig(" in text] == ["errors.py"]
