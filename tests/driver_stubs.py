"""Stub projects for the bash drivers (scripts/*.sh): every stage script is replaced by a stub that
records its arguments and creates the outputs it was asked for; fake torchrun and fusechat-merge on PATH."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fusechat import fixtures

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
CORPUS = REPO / "data" / "fusechat_sample.json"
SCE_RECIPE = REPO / "mergekit" / "fusechat_configs" / "fusechat-sce.yml"
STAGES = ["get_data_representation", "replace_model", "align_token_and_vocab", "filter_nan", "train"]

STUB = r'''
import json, os, sys
from pathlib import Path

STAGE = "{stage}"
args = sys.argv[1:]

def flag(name):
    return args[args.index(name) + 1] if name in args else None

with open(os.environ["STUB_CALLS"], "a") as handle:
    handle.write(json.dumps({{"stage": STAGE, "args": args,
                             "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\n")
if os.environ.get("STUB_FAIL") == STAGE:
    print(STAGE + ": simulated failure", file=sys.stderr)
    sys.exit(3)
folders = {{"get_data_representation": ["--tknz_dataset_path", "--dataset_save_dir"],
           "replace_model": ["--dataset_save_dir"], "filter_nan": ["--output_data_dir"],
           "align_token_and_vocab": ["--aligned_dataset_save_dir"] if "--do_distribution_alignment" in args else []}}
for name in folders.get(STAGE, []):
    Path(flag(name)).mkdir(parents=True)
if STAGE == "align_token_and_vocab" and "--do_token_alignment" in args:
    Path(flag("--token_alignment_matrix_file")).write_text("matrix")
    Path(flag("--blending_to_base_file")).write_text("[]")
    if flag("--aligned_dataset_tknz_save_dir"):
        Path(flag("--aligned_dataset_tknz_save_dir")).mkdir(parents=True)
if STAGE == "train":
    Path(flag("--output_dir")).mkdir(parents=True, exist_ok=True)
    (Path(flag("--output_dir")) / "config.json").write_text("{{}}")
'''

FAKE_TORCHRUN = r'''#!/usr/bin/env bash
# Records the launcher's own options, then runs the script in this process.
launcher=()
while [[ "$1" != *.py ]]; do launcher+=("$1"); shift; done
python -c 'import json, os, sys; open(os.environ["STUB_CALLS"], "a").write(json.dumps({"stage": "torchrun", "args": sys.argv[1:]}) + "\n")' "${launcher[@]}"
exec python "$@"
'''

FAKE_MERGE = r'''#!/usr/bin/env python
import json, os, sys
from pathlib import Path
import yaml

recipe, out = sys.argv[1], sys.argv[2]
with open(os.environ["STUB_CALLS"], "a") as handle:
    handle.write(json.dumps({"stage": "fusechat-merge", "args": sys.argv[1:],
                             "recipe": yaml.safe_load(Path(recipe).read_text())}) + "\n")
Path(out).mkdir(parents=True)
(Path(out) / "config.json").write_text("{}")
'''


@pytest.fixture(scope="module")
def tokenizer_dirs():
    return {"openchat": fixtures.build_tokenizer("openchat"), "qwen": fixtures.build_tokenizer("qwen")}


@pytest.fixture
def project(tmp_path, tokenizer_dirs):
    """A stub project (FuseChat/train/*.py stubs, fake torchrun and fusechat-merge on PATH) and a work
    folder with three model folders: a pivot, a source with its vocabulary, a source with Qwen's."""
    proj = tmp_path / "proj"
    train = proj / "FuseChat" / "train"
    train.mkdir(parents=True)
    for stage in STAGES:
        (train / f"{stage}.py").write_text(STUB.format(stage=stage))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("torchrun", FAKE_TORCHRUN), ("fusechat-merge", FAKE_MERGE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    work = tmp_path / "work"
    for model, kind in (("pivot-lm", "openchat"), ("same-lm", "openchat"), ("other-lm", "qwen")):
        shutil.copytree(tokenizer_dirs[kind], work / "models" / model)
        (work / "models" / model / "config.json").write_text("{}")
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PROJ_PATH": str(proj), "WORK_DIR": str(work), "DATA_PATH": str(CORPUS),
           "PIVOT": "pivot-lm", "SOURCES": "same-lm other-lm", "SPLIT_NUM": "2", "GPUS": "",
           "RECIPE": str(SCE_RECIPE), "STUB_CALLS": str(calls), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for name in ("OVERWRITE", "MODELS", "TARGETS", "MERGED_DIR", "STUB_FAIL", "APPEND_STEPS"):
        env.pop(name, None)
    return {"env": env, "work": work, "calls": calls, "proj": proj}


def run(script: str, env: dict, **overrides) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / script)], env={**env, **overrides}, capture_output=True, text=True,
                          timeout=300)


def calls(project) -> list[dict]:
    if not project["calls"].exists():
        return []
    return [json.loads(line) for line in project["calls"].read_text().splitlines()]


def no_work_done(project) -> bool:
    work = project["work"]
    return not calls(project) and not any((work / d).exists() for d in (
        "logs", "representations", "aligned_representations", "checkpoints"))
