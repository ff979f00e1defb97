"""AlpacaEval 2.0 generation (docs/design.md 10): one reply per instruction, in alpaca_eval's JSON shape.

Input: alpaca_eval's evaluation set (805 records with ``instruction`` and ``dataset``; the file
``alpaca_eval.json`` of the ``tatsu-lab/alpaca_eval`` dataset), as a JSON list or JSON lines.
Output: a JSON list of ``{"instruction", "output", "generator", "dataset"}`` in input order,
ready for ``alpaca_eval --model_outputs``. With the ``openchat_3.5`` template every prompt is
``GPT4 Correct User: {instruction}<|end_of_turn|>GPT4 Correct Assistant:``, as in the paper.
Replies are appended to ``{output}.partial.jsonl`` as they finish, so a rerun resumes; the
final JSON is written atomically once all are done, and a rerun after that loads no model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..errors import InputError
from ..storage import write_json
from ..templates import USER
from .generate import ChatGenerator
from .jsonl import JsonlAppender, read_jsonl, read_jsonl_if_exists


def load_instructions(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"instruction file not found: {p}")
    if p.suffix == ".jsonl":
        records = read_jsonl(p, "instruction file")
    else:
        try:
            records = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        if not isinstance(records, list):
            raise InputError(f"{p}: expected a JSON list of {{instruction, ...}} records")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str):
            raise InputError(f"{p}: record {index} has no string field 'instruction'")
    return records


def partial_path(output_file: str | os.PathLike) -> Path:
    output = Path(output_file)
    return output.with_name(output.name + ".partial.jsonl")


def output_record(source: dict, output: str, generator_name: str) -> dict:
    record = {"instruction": source["instruction"], "output": output, "generator": generator_name}
    if "dataset" in source:
        record["dataset"] = source["dataset"]
    return record


def finished_outputs(output_file: str | os.PathLike, instructions: list[dict]) -> dict[int, str]:
    """``{index: output}`` already generated: the final file of a finished run, else the partial file."""
    output = Path(output_file)
    if output.is_file():
        try:
            previous = json.loads(output.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{output}: exists but is not JSON ({exc}); delete it to start over") from exc
        if not isinstance(previous, list) or [r.get("instruction") for r in previous if isinstance(r, dict)] != [
                r["instruction"] for r in instructions]:
            raise InputError(f"{output}: exists and holds outputs for other instructions; delete it or choose "
                             "another --output-file")
        return {i: r["output"] for i, r in enumerate(previous)}
    partial = partial_path(output)
    done: dict[int, str] = {}
    for lineno, record in enumerate(read_jsonl_if_exists(partial), 1):
        index = record.get("index")
        if not isinstance(index, int) or not 0 <= index < len(instructions) or \
                record.get("instruction") != instructions[index]["instruction"]:
            raise InputError(f"{partial}: line {lineno} does not belong to this instruction file; delete it to start over")
        done[index] = record["output"]
    return done


def generate_alpaca_outputs(make_generator: Callable[[], ChatGenerator], instructions: list[dict],
                            output_file: str | os.PathLike, generator_name: str, max_new_tokens: int = 2048,
                            temperature: float = 0.0, seed: int = 0) -> list[dict]:
    """Generate the replies not yet done, then write the final JSON list.

    ``make_generator`` is called only when something is left to generate.
    """
    done = finished_outputs(output_file, instructions)
    pending = [i for i in range(len(instructions)) if i not in done]
    partial = partial_path(output_file)
    if pending:
        generator = make_generator()
        chunk = generator.batch_size * 4  # several batches per write: little lost on interruption
        with JsonlAppender(partial) as appender, tqdm(total=len(instructions), initial=len(done),
                                                      desc=f"alpaca_eval ({generator_name})",
                                                      unit="instruction") as bar:
            for start in range(0, len(pending), chunk):
                indices = pending[start:start + chunk]
                replies = generator.generate([[(USER, instructions[i]["instruction"])] for i in indices],
                                             temperature, max_new_tokens, seed=seed)
                for index, reply in zip(indices, replies):
                    appender.write({"index": index, "instruction": instructions[index]["instruction"],
                                    "output": reply})
                    done[index] = reply
                bar.update(len(indices))
    outputs = [output_record(instructions[i], done[i], generator_name) for i in range(len(instructions))]
    write_json(output_file, outputs)
    partial.unlink(missing_ok=True)
    return outputs
