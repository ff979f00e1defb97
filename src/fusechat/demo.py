"""The Python side of the one-command demo (scripts/demo.sh); the stage drivers' helpers are in
``fusechat.drivers``.

    python -m fusechat.demo generate MODEL_DIR --out answer.json [--question TEXT]
    python -m fusechat.demo summary --steps logs/steps.tsv [--answer answer.json] [--heldout heldout.json]
                                    [--json summary.json]

The drivers record every step in ``logs/steps.tsv`` (stage, unit, ran|skipped, seconds, output);
the summary reads that file and the outputs it names: row counts per stage, and per fused pair the
alignment quality (share of pivot positions that carry the source's distribution), the MinCE
split (how often the source's distribution is the training target) and the trainer's losses; with
``--heldout`` (written by ``python -m fusechat.heldout measure``) also the held-out measures of the
pivot before training, after SFT, after fusion, and of the teacher.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, run_cli
from .storage import write_json

DEMO_QUESTION = "What is the difference between a list and a tuple in Python?"
SPLIT_UNIT = re.compile(r"^(?P<model>.+)_split\d+$")
ALIGN_STAGES = {"align_same_vocab": "same", "align_diff_vocab": "different"}


# ----------------------------------------------------------------------------------------------
# The demo's answer
# ----------------------------------------------------------------------------------------------

def generate_answer(model_dir: str, question: str, max_new_tokens: int = 32) -> str:
    """One greedy reply of a model folder, prompted through its tokenizer's chat template."""
    from .eval.generate import load_generator

    generator = load_generator(model_dir, dtype="float32")
    return generator.generate([[("user", question)]], temperature=0.0, max_new_tokens=max_new_tokens)[0]


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    stage: str
    unit: str
    status: str  # ran | skipped
    seconds: float
    output: str


def read_steps(path: str) -> list[Step]:
    """The steps file of a run; a later line for the same stage and unit replaces an earlier one."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"steps file not found: {path} (run scripts/pipeline.sh first)")
    steps: dict[tuple[str, str], Step] = {}
    with p.open(encoding="utf-8") as handle:
        for lineno, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if len(row) != 5:
                raise InputError(f"{path}: line {lineno}: expected 5 tab-separated fields, got {len(row)}")
            stage, unit, status, seconds, output = row
            steps[(stage, unit)] = Step(stage, unit, status, float(seconds), output)
    return list(steps.values())


def load_rows(path: str):
    """The train split of a saved set."""
    from .schema import train_split
    from .storage import load_dataset_dir

    return train_split(load_dataset_dir(path, "dataset"), path)


def is_dataset(path: str) -> bool:
    p = Path(path)
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


def positions_carrying_source(dataset) -> tuple[int, int]:
    """(positions whose fused entry is the source's distribution, all positions)."""
    from .kernels.distribution import carried_positions
    from .schema import FUSED_INDICES, FUSED_LOGITS

    carried = total = 0
    for batch in dataset.select_columns(["input_ids", FUSED_LOGITS, FUSED_INDICES]).iter(256):
        for ids, logits, indices in zip(batch["input_ids"], batch[FUSED_LOGITS], batch[FUSED_INDICES]):
            carried += carried_positions(ids, logits, indices)
            total += len(ids)
    return carried, total


def source_wins(dataset) -> tuple[int, int]:
    """(rows whose training target is the source's distribution under MinCE, rows)."""
    from .fused_sets import metric_values
    from .schema import FUSED_METRIC_CE, METRIC_CE
    from .training.collator import source_wins as mince_source_wins

    if len(dataset) == 0:
        return 0, 0
    wins = mince_source_wins(metric_values(dataset, METRIC_CE), metric_values(dataset, FUSED_METRIC_CE))
    return int(wins.sum()), len(dataset)


def loss_curve(trainer_state: Path, keys: tuple[str, ...] = ("loss", "lm_loss", "fuse_loss")) -> dict:
    """First and last logged values of ``keys`` (loss, lm_loss and fuse_loss), and the number of steps."""
    state = json.loads(trainer_state.read_text(encoding="utf-8"))
    logs = [entry for entry in state.get("log_history", []) if "loss" in entry]
    curve = {"steps": state.get("global_step", 0)}
    for key in keys:
        values = [entry[key] for entry in logs if key in entry]
        if values:
            curve[key] = [values[0], values[-1]]
    return curve


def summarize(steps: list[Step]) -> dict:
    """Per stage: steps run and skipped, seconds, outputs, rows; per pair: alignment and training figures."""
    rows_of: dict[str, int] = {}
    for step in steps:
        if is_dataset(step.output):
            rows_of[step.output] = len(load_rows(step.output))

    stages: dict[str, dict] = {}
    for step in steps:
        entry = stages.setdefault(step.stage, {"ran": 0, "skipped": 0, "seconds": 0.0, "outputs": 0, "rows": None})
        entry[step.status] = entry.get(step.status, 0) + 1
        entry["seconds"] += step.seconds
        entry["outputs"] += 1
        if step.output in rows_of:
            entry["rows"] = (entry["rows"] or 0) + rows_of[step.output]

    pairs: dict[str, dict] = {}

    def pair(model: str) -> dict:
        return pairs.setdefault(model, {"vocabulary": None, "aligned_rows": 0, "kept_rows": 0, "carried": 0,
                                        "positions": 0, "source_won": 0, "mince_rows": 0, "training": None})

    for step in steps:
        match = SPLIT_UNIT.match(step.unit)
        if step.stage in ALIGN_STAGES and match and step.output in rows_of:
            entry = pair(match["model"])
            entry["vocabulary"] = ALIGN_STAGES[step.stage]
            entry["aligned_rows"] += rows_of[step.output]
            carried, total = positions_carrying_source(load_rows(step.output))
            entry["carried"] += carried
            entry["positions"] += total
        elif step.stage == "filter_nan" and match and step.output in rows_of:
            entry = pair(match["model"])
            entry["kept_rows"] += rows_of[step.output]
            won, rows = source_wins(load_rows(step.output))
            entry["source_won"] += won
            entry["mince_rows"] += rows
        elif step.stage == "pairwise_fusion":
            state = Path(step.output).parent / "trainer_state.json"
            if state.is_file():
                pair(step.unit)["training"] = loss_curve(state)
    for entry in pairs.values():
        entry["alignment_quality"] = entry["carried"] / entry["positions"] if entry["positions"] else None
        entry["source_share"] = entry["source_won"] / entry["mince_rows"] if entry["mince_rows"] else None
    return {"stages": stages, "pairs": pairs}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def curve(training: dict | None, key: str) -> str:
    if not training or key not in training:
        return "-"
    first, last = training[key]
    return f"{first:.3f} -> {last:.3f}"


HELDOUT_ROWS = (("before", "pivot, before training"), ("sft", "pivot after SFT (lm_loss_weight 1.0)"),
                ("fused", "pivot after fusion"), ("teacher", "teacher (its own tokens)"))


def format_heldout(heldout: dict) -> list[str]:
    """The held-out table: reply CE and CE against the teacher's aligned distributions, per model."""
    models = heldout["models"]
    known = dict(HELDOUT_ROWS)
    rows = [[known.get(label, label), _nats(m["reply_ce"]), _nats(m["teacher_ce"])] for label, m in
            sorted(models.items(), key=lambda item: list(known).index(item[0]) if item[0] in known else len(known))]
    lines = ["", f"Held-out conversations ({heldout['rows']}, never trained on)",
             table(["model", "reply CE", "CE vs teacher's distributions"], rows),
             "  reply CE: mean next-token cross-entropy (nats) over the reply tokens; CE vs teacher: over the reply "
             "positions carrying the teacher's aligned distribution."]
    if "sft" in models and "fused" in models:
        sft, fused = models["sft"], models["fused"]
        for key, what in (("reply_ce", "reply CE"), ("teacher_ce", "CE vs teacher")):
            if sft[key] is not None and fused[key] is not None:
                delta = fused[key] - sft[key]
                verdict = "fusion beats SFT" if delta < 0 else "fusion does NOT beat SFT"
                lines.append(f"  {what}: fused - SFT = {delta:+.4f} ({verdict})")
    return lines


def _nats(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_summary(summary: dict, answer: dict | None = None, heldout: dict | None = None) -> str:
    stage_rows = [[stage, f"{s['ran']}/{s['skipped']}", f"{s['seconds']:.0f}", str(s["outputs"]),
                   "-" if s["rows"] is None else str(s["rows"])]
                  for stage, s in summary["stages"].items()]
    parts = ["Stages", table(["stage", "ran/skipped", "time (s)", "outputs", "rows"], stage_rows)]
    pair_rows = []
    for model, p in summary["pairs"].items():
        quality = "-" if p["alignment_quality"] is None else f"{100 * p['alignment_quality']:.1f}%"
        share = "-" if p["source_share"] is None else f"{p['source_won']}/{p['mince_rows']} ({100 * p['source_share']:.0f}%)"
        steps = str(p["training"]["steps"]) if p["training"] else "-"
        pair_rows.append([model, p["vocabulary"] or "-", f"{p['aligned_rows']} -> {p['kept_rows']}", quality, share,
                          steps, curve(p["training"], "lm_loss"), curve(p["training"], "fuse_loss")])
    parts += ["", "Pairs (pivot + source)",
              table(["source", "vocabulary", "rows (aligned -> kept)", "source distribution at", "MinCE: source won",
                      "train steps", "LM loss", "fuse loss"], pair_rows),
              "  source distribution at: pivot positions whose fused entry is the source's distribution, not "
              "ONE-HOT or EMPTY.",
              "  MinCE: source won: rows where the source's metric_ce beats the pivot's (bfloat16, ties to the "
              "pivot); they train toward the source's distribution, the other rows toward the pivot's own.",
              "  LM and fuse loss: first and last logged values of the pairwise fusion."]
    if heldout is not None:
        parts += format_heldout(heldout)
    if answer is not None:
        parts += ["", f"Merged model {answer['model']}", f"  Q: {answer['question']}", f"  A: {answer['answer']}"]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusechat.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    generate = sub.add_parser("generate", help="one greedy answer of a model folder")
    generate.add_argument("model")
    generate.add_argument("--out", required=True, help="JSON file receiving {model, question, answer}")
    generate.add_argument("--question", default=DEMO_QUESTION)
    generate.add_argument("--max_new_tokens", type=int, default=32)
    summary = sub.add_parser("summary", help="print the summary table of a run")
    summary.add_argument("--steps", required=True, help="logs/steps.tsv written by the drivers")
    summary.add_argument("--answer", default=None, help="the JSON file written by 'generate'")
    summary.add_argument("--heldout", default=None, help="the JSON file written by 'python -m fusechat.heldout measure'")
    summary.add_argument("--json", default=None, help="also write the summary as JSON here")
    return parser


def _read_json_input(path: str | None, what: str):
    if not path:
        return None
    if not Path(path).is_file():
        raise InputError(f"{what} not found: {path}")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        answer = generate_answer(args.model, args.question, args.max_new_tokens)
        write_json(args.out, {"model": args.model, "question": args.question, "answer": answer})
        print(answer)
    elif args.command == "summary":
        summary = summarize(read_steps(args.steps))
        answer = _read_json_input(args.answer, "answer file")
        heldout = _read_json_input(args.heldout, "held-out measures")
        for key, value in (("answer", answer), ("heldout", heldout)):
            if value is not None:
                summary[key] = value
        if args.json:
            write_json(args.json, summary)
        print(format_summary(summary, answer, heldout))


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
