"""MT-Bench results: mean judge score per model, per turn and per category, as tables and a PNG.

The numbers are those of FastChat's ``show_result.py --mode single``: verdicts without a rating
(score -1, or a score outside [1, 10] in a file written by another tool) are left out and counted, every other judgment line counts once; the first- and second-turn means
are over that turn's judgments and the average over both. The per-category mean is over both
turns of that category's questions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..storage import atomic_file
from .jsonl import read_jsonl

MISSING_SCORE = -1
MIN_SCORE, MAX_SCORE = 1, 10


@dataclass
class ScoreTables:
    """``{model: mean}`` per turn and overall; ``{model: {category: mean}}``; categories in question order."""

    first_turn: dict[str, float] = field(default_factory=dict)
    second_turn: dict[str, float] = field(default_factory=dict)
    average: dict[str, float] = field(default_factory=dict)
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # judgments without a rating, per model

    def as_dict(self) -> dict:
        return {"first_turn": self.first_turn, "second_turn": self.second_turn, "average": self.average,
                "by_category": self.by_category, "left_out": self.left_out}


def load_judgments(path: str | os.PathLike) -> list[dict]:
    judgments = read_jsonl(path, "judgment file")
    if not judgments:
        raise InputError(f"judgment file {path} holds no judgments (run gen_judgment first)")
    for lineno, record in enumerate(judgments, 1):
        for name in ("question_id", "model", "score", "turn"):
            if name not in record:
                raise InputError(f"{path}: judgment on line {lineno} lacks {name!r}")
        score = record["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise InputError(f"{path}: judgment on line {lineno} has a non-numeric score {score!r}")
    first_line: dict[tuple, int] = {}
    for lineno, record in enumerate(judgments, 1):
        key = (record["model"], record["question_id"], record["turn"], record.get("judge") and str(record["judge"]))
        if key in first_line:
            raise InputError(f"{path}: judgment on line {lineno} repeats line {first_line[key]} (model "
                             f"{record['model']!r}, question {record['question_id']}, turn {record['turn']}); a mean "
                             "would count it twice: keep one of them")
        first_line[key] = lineno
    return judgments


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def score_tables(judgments: list[dict], categories: dict | None = None,
                 model_list: list[str] | None = None) -> ScoreTables:
    """Mean scores; ``categories`` maps question_id to category (no category table without it)."""
    per_turn: dict[tuple[str, int], list[float]] = {}
    per_model: dict[str, list[float]] = {}
    per_category: dict[str, dict[str, list[float]]] = {}
    tables = ScoreTables()
    if model_list is not None:
        judged = sorted({record["model"] for record in judgments})
        missing = [m for m in model_list if m not in judged]
        if missing:
            raise InputError(f"--model-list: no judgments of {', '.join(map(repr, missing))} (judged models: "
                             f"{', '.join(judged)})")
    for record in judgments:
        model = record["model"]
        if model_list is not None and model not in model_list:
            continue
        if not MIN_SCORE <= record["score"] <= MAX_SCORE:
            tables.left_out[model] = tables.left_out.get(model, 0) + 1
            continue
        per_turn.setdefault((model, record["turn"]), []).append(record["score"])
        per_model.setdefault(model, []).append(record["score"])
        if categories is not None:
            if record["question_id"] not in categories:
                raise InputError(f"judgment of question {record['question_id']} (model {model!r}) names a "
                                 "question that is not in the question file")
            category = categories[record["question_id"]]
            per_category.setdefault(model, {}).setdefault(category, []).append(record["score"])
    tables.first_turn = _ranked({m: _mean(v) for (m, t), v in per_turn.items() if t == 1})
    tables.second_turn = _ranked({m: _mean(v) for (m, t), v in per_turn.items() if t == 2})
    tables.average = _ranked({m: _mean(v) for m, v in per_model.items()})
    if categories is not None:
        order = list(dict.fromkeys(categories.values()))
        tables.categories = [c for c in order if any(c in cats for cats in per_category.values())]
        tables.by_category = {m: {c: _mean(per_category[m][c]) for c in tables.categories if c in per_category[m]}
                              for m in tables.average}
    return tables


def _ranked(means: dict[str, float]) -> dict[str, float]:
    """Highest score first, as show_result sorts; ties by model name."""
    return dict(sorted(means.items(), key=lambda item: (-item[1], item[0])))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def format_tables(tables: ScoreTables, bench_name: str = "mt_bench") -> str:
    """Text tables: first turn, second turn and average (MT-Bench only, as FastChat), then per category."""
    sections = [("First turn", tables.first_turn, "1")]
    if bench_name == "mt_bench":
        sections += [("Second turn", tables.second_turn, "2"), ("Average", tables.average, None)]
    out = []
    for title, means, turn in sections:
        out.append(f"\n########## {title} ##########")
        header = ["model", "turn", "score"] if turn else ["model", "score"]
        out.append(_table(header, [[m, turn, f"{s:.6f}"] if turn else [m, f"{s:.6f}"] for m, s in means.items()]))
    if tables.categories:
        out.append("\n########## Per category ##########")
        rows = [[m] + [f"{tables.by_category[m][c]:.4f}" if c in tables.by_category[m] else "-"
                       for c in tables.categories] for m in tables.by_category]
        out.append(_table(["model", *tables.categories], rows))
    for model, count in tables.left_out.items():
        out.append(f"note: {count} judgment(s) of {model!r} had no rating in [1, 10] (score -1) and are left out "
                   "(gen_judgment --rejudge-missing judges them again)")
    return "\n".join(out).lstrip("\n")


# --- the plot ----------------------------------------------------------------------------------------

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_category_scores(tables: ScoreTables, path: str | os.PathLike, max_score: float = 10.0) -> None:
    """A grouped bar chart (category on x, one bar per model, 0..max_score on y) written as PNG."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError("--plot-file needs matplotlib (pip install matplotlib)") from exc

    if not tables.categories:
        raise InputError("no per-category scores to plot (the question file gives the categories)")
    models = list(tables.by_category)
    figure = Figure(figsize=(max(6.0, 1.1 * len(tables.categories) * max(1, len(models)) ** 0.5), 4.5), dpi=100)
    axes = figure.add_subplot()
    bar = 0.8 / len(models)
    for mi, model in enumerate(models):
        scores = [tables.by_category[model].get(category) for category in tables.categories]
        positions = [ci + (mi - (len(models) - 1) / 2) * bar for ci, score in enumerate(scores) if score is not None]
        heights = [max(score, 0.0) for score in scores if score is not None]
        color = tuple(channel / 255 for channel in PALETTE[mi % len(PALETTE)])
        axes.bar(positions, heights, width=bar, color=color, antialiased=False,
                 label=f"{model} (average {tables.average[model]:.2f})")
    axes.set_xticks(range(len(tables.categories)), tables.categories, rotation=30, ha="right")
    axes.set_ylim(0, max_score)
    axes.set_ylabel("score")
    axes.set_title("MT-Bench score per category")
    axes.grid(axis="y", color="0.86")
    axes.set_axisbelow(True)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1, frameon=False)
    with atomic_file(Path(path), "wb") as handle:
        figure.savefig(handle, format="png", bbox_inches="tight", facecolor="white")
