"""The sample plain-text corpus (``data/fusellm_sample/{train,validation,test}.jsonl``) as a MiniPile-like
DatasetDict with one ``text`` column, saved with ``save_to_disk`` for the FuseLLM stages.

    python -m fusechat.fusellm.corpus --out data/fusellm_minipile
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError, run_cli
from ..storage import save_dataset_atomic
from .common import TEXT

SPLITS = ("train", "validation", "test")
SAMPLE_DIR = Path(__file__).resolve().parents[3] / "data" / "fusellm_sample"


def read_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    texts = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} line {line_number}: malformed JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(TEXT), str):
            raise InputError(f"{path} line {line_number}: expected an object with a string 'text'")
        texts.append(record[TEXT])
    return texts


def sample_dataset_dict(data_dir: str | Path = SAMPLE_DIR):
    """DatasetDict train/validation/test with a ``text`` column, from the JSONL files of ``data_dir``."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_dict({TEXT: read_texts(Path(data_dir) / f"{split}.jsonl")})
                        for split in SPLITS})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(SAMPLE_DIR), help="folder with train/validation/test.jsonl")
    parser.add_argument("--out", required=True, help="where the DatasetDict is saved")
    args = parser.parse_args(argv)
    dataset_dict = sample_dataset_dict(args.data_dir)
    save_dataset_atomic(dataset_dict, args.out)
    print({split: len(d) for split, d in dataset_dict.items()}, "->", args.out)


def cli(argv: list[str] | None = None) -> int:
    """Entry point of python -m fusechat.fusellm.corpus (the drivers' helper)."""
    return run_cli(main, argv, prog="python -m fusechat.fusellm.corpus")


if __name__ == "__main__":
    raise SystemExit(cli())
