"""MT-Bench files in FastChat's llm_judge layout: questions, model answers, reference answers.

    {data_dir}/{bench}/question.jsonl            {"question_id", "category", "turns": [str, ...]}
    {data_dir}/{bench}/model_answer/{model}.jsonl {"question_id", "answer_id", "model_id",
                                                  "choices": [{"index", "turns": [str, ...]}], "tstamp"}
    {data_dir}/{bench}/reference_answer/{judge}.jsonl   (same shape as a model answer)
    {data_dir}/{bench}/model_judgment/{judge}_single.jsonl
    {data_dir}/judge_prompts.jsonl
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .jsonl import read_jsonl

# Sampling temperature per category, as FastChat's llm_judge uses them; other categories get 0.7.
TEMPERATURE_BY_CATEGORY = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
DEFAULT_TEMPERATURE = 0.7
# Categories judged against a reference answer.
NEED_REF_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")


def category_temperature(category: str) -> float:
    return TEMPERATURE_BY_CATEGORY.get(category, DEFAULT_TEMPERATURE)


@dataclass(frozen=True)
class BenchPaths:
    """Default locations of a benchmark's files, as FastChat's llm_judge lays them out."""

    data_dir: Path
    bench_name: str

    @property
    def bench_dir(self) -> Path:
        return self.data_dir / self.bench_name

    @property
    def question_file(self) -> Path:
        return self.bench_dir / "question.jsonl"

    @property
    def answer_dir(self) -> Path:
        return self.bench_dir / "model_answer"

    @property
    def reference_dir(self) -> Path:
        return self.bench_dir / "reference_answer"

    @property
    def judge_prompt_file(self) -> Path:
        return self.data_dir / "judge_prompts.jsonl"

    def answer_file(self, model_id: str) -> Path:
        return self.answer_dir / f"{model_id}.jsonl"

    def judgment_file(self, judge_model: str) -> Path:
        return self.bench_dir / "model_judgment" / f"{judge_model}_single.jsonl"


def check_model_id(model_id: str) -> None:
    """A model id names one answer file in the answer folder: a plain name, no folders."""
    if not model_id or model_id in (".", "..") or "/" in model_id or "\\" in model_id:
        raise InputError(f"--model-id {model_id!r}: must be a plain name without '/' (it names the answer file "
                         "<model-id>.jsonl, which gen_judgment finds by that name)")


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _check_turns(path, where: str, turns) -> None:
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise InputError(f"{path}: {where}: 'turns' must be a non-empty list of strings")


def validate_question(path, lineno: int, record: dict) -> dict:
    where = f"question {record.get('question_id', '?')} (record {lineno})"
    for name in ("question_id", "category", "turns"):
        if name not in record:
            raise InputError(f"{path}: {where}: missing field {name!r}")
    if not _is_id(record["question_id"]):
        raise InputError(f"{path}: {where}: 'question_id' must be an integer or a string")
    if not isinstance(record["category"], str):
        raise InputError(f"{path}: {where}: 'category' must be a string")
    _check_turns(path, where, record["turns"])
    return record


def load_questions(path: str | os.PathLike, begin: int | None = None, end: int | None = None) -> list[dict]:
    """Questions in file order, validated; ``[begin:end]`` selects a slice as FastChat's flags do."""
    records = read_jsonl(path, "question file")
    questions = [validate_question(path, n, r) for n, r in enumerate(records, 1)]
    if begin is not None and end is not None and begin > end:
        raise InputError(f"--question-begin {begin} is after --question-end {end}: no question selected")
    seen: set = set()
    for q in questions:
        if q["question_id"] in seen:
            raise InputError(f"{path}: question_id {q['question_id']!r} appears more than once")
        seen.add(q["question_id"])
    return questions[begin:end]


def validate_answer(path, lineno: int, record: dict) -> dict:
    where = f"answer to question {record.get('question_id', '?')} (record {lineno})"
    if "question_id" not in record or not _is_id(record["question_id"]):
        raise InputError(f"{path}: record {lineno}: missing or invalid 'question_id'")
    choices = record.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InputError(f"{path}: {where}: 'choices' must be a non-empty list of {{index, turns}}")
    _check_turns(path, where, choices[0].get("turns"))
    return record


def load_answers(path: str | os.PathLike, what: str = "answer file") -> dict:
    """``{question_id: answer record}``; a later record for the same question replaces an earlier one."""
    records = read_jsonl(path, what)
    return {r["question_id"]: validate_answer(path, n, r) for n, r in enumerate(records, 1)}


def load_answer_dir(answer_dir: str | os.PathLike, model_ids: list[str] | None = None) -> dict[str, dict]:
    """``{model_id: {question_id: answer}}`` for the given models, else every ``*.jsonl`` in the folder."""
    folder = Path(answer_dir)
    if not folder.is_dir():
        raise InputError(f"answer folder not found: {folder}")
    if model_ids is None:
        model_ids = sorted(p.name[: -len(".jsonl")] for p in folder.glob("*.jsonl"))
        if not model_ids:
            raise InputError(f"no model answers (*.jsonl) in {folder}")
    return {m: load_answers(folder / f"{m}.jsonl", f"answers of model {m!r}") for m in model_ids}
