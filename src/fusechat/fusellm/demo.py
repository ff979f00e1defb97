"""The summary of a FuseLLM run (scripts/demo_fusellm.sh, scripts/fusellm_pipeline.sh).

    python -m fusechat.fusellm.demo summary --steps logs/steps.tsv [--json out.json]

Per stage: steps run/skipped, time, outputs and rows (all splits). Per source: the share of pivot
positions whose aligned entry carries the source's distribution (not the ONE-HOT fallback on the
current pivot token, not EMPTY). Per teacher: how many packed training rows it wins under MinCE
(bf16 rewards, ties to the pivot, then the sources in order). Any number of sources. Training: first and last logged losses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..kernels.distribution import carried_positions
from ..demo import curve, is_dataset, loss_curve, read_steps, table
from ..errors import run_cli
from ..storage import load_dataset_dir, write_json
from .distill import PIVOT, mince_choice, source_teachers, teacher_columns, teacher_name, teacher_rewards

LOSS_KEYS = ("loss", "lm_loss", "distill_loss")


def splits_of(path: str) -> dict:
    """{split name: Dataset} of a saved set (a single Dataset counts as "train")."""
    from datasets import Dataset

    loaded = load_dataset_dir(path, "dataset")
    return {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)


def carried_share(datasets, source: str) -> tuple[int, int]:
    """(pivot positions carrying source ``source``'s distribution, pivot positions)."""
    logits_column, ids_column, _ = teacher_columns(source)
    carried = total = 0
    for dataset in datasets:
        for batch in dataset.select_columns(["input_ids", logits_column, ids_column]).iter(256):
            for ids, logits, indices in zip(batch["input_ids"], batch[logits_column], batch[ids_column]):
                carried += carried_positions(ids, logits, indices, onehot_offset=0)
                total += len(ids)
    return carried, total


def mince_wins(datasets, teachers: tuple[str, ...]) -> list[int]:
    """Packed rows won by each of ``teachers`` (the pivot first, then sources) under MinCE among them."""
    wins = [0] * len(teachers)
    for dataset in datasets:
        if len(dataset) == 0:
            continue
        metrics = np.stack([np.asarray(dataset[teacher_columns(t)[2]], dtype=np.float64) for t in teachers], -1)
        for choice in mince_choice(teacher_rewards(metrics), pivot_is_candidate=PIVOT in teachers).tolist():
            wins[choice] += 1
    return wins


def summarize(steps) -> dict:
    stages: dict[str, dict] = {}
    final_aligned, packed_train = [], []  # the last alignment (the one with the most sources), packed train splits
    most_sources = 0
    training = None
    for step in steps:
        entry = stages.setdefault(step.stage, {"ran": 0, "skipped": 0, "seconds": 0.0, "outputs": 0, "rows": None})
        entry[step.status] = entry.get(step.status, 0) + 1
        entry["seconds"] += step.seconds
        entry["outputs"] += 1
        if is_dataset(step.output):
            splits = splits_of(step.output)
            entry["rows"] = (entry["rows"] or 0) + sum(len(d) for d in splits.values())
            if step.stage == "fusellm_align" and "aligned_representation" in step.output:
                count = len(source_teachers(next(iter(splits.values())).column_names))
                if count > most_sources:
                    most_sources, final_aligned = count, []
                if count == most_sources:
                    final_aligned.extend(splits.values())
            if step.stage == "fusellm_pack" and "train" in splits:
                packed_train.append(splits["train"])
        if step.stage == "fusellm_train":
            state = Path(step.output).parent / "trainer_state.json"
            if state.is_file():
                training = loss_curve(state, LOSS_KEYS)
    sources = {}
    source_names = source_teachers(final_aligned[0].column_names) if final_aligned else ()
    for source in source_names:
        carried, total = carried_share(final_aligned, source)
        sources[teacher_name(source)] = {"carried": carried, "positions": total,
                                         "share": carried / total if total else None}
    teachers = (PIVOT,) + source_names
    wins = mince_wins(packed_train, teachers)
    return {"stages": stages, "sources": sources,
            "mince_wins": {teacher_name(t): n for t, n in zip(teachers, wins)}, "training": training}


def format_summary(summary: dict) -> str:
    stage_rows = [[stage, f"{s['ran']}/{s['skipped']}", f"{s['seconds']:.0f}", str(s["outputs"]),
                   "-" if s["rows"] is None else str(s["rows"])] for stage, s in summary["stages"].items()]
    parts = ["Stages", table(["stage", "ran/skipped", "time (s)", "outputs", "rows (all splits)"], stage_rows)]
    source_rows = [[name, f"{s['carried']}/{s['positions']}",
                    "-" if s["share"] is None else f"{100 * s['share']:.1f}%"] for name, s in summary["sources"].items()]
    parts += ["", "Alignment: pivot positions carrying the source's distribution (not ONE-HOT, not EMPTY)",
              table(["source", "positions", "share"], source_rows)]
    wins = summary["mince_wins"]
    total = sum(wins.values())
    parts += ["", f"MinCE: packed training rows won by each teacher (of {total})",
              table(["teacher", "rows", "share"],
                     [[name, str(n), f"{100 * n / total:.0f}%" if total else "-"] for name, n in wins.items()])]
    training = summary["training"]
    steps = str(training["steps"]) if training else "-"
    parts += ["", f"Training ({steps} optimizer steps): first -> last logged value",
              table(["loss", "distill loss", "LM loss"],
                     [[curve(training, "loss"), curve(training, "distill_loss"), curve(training, "lm_loss")]])]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fusechat.fusellm.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="print the summary of a FuseLLM run")
    summary.add_argument("--steps", required=True, help="logs/steps.tsv written by the drivers")
    summary.add_argument("--json", default=None, help="also write the summary as JSON here")
    args = parser.parse_args(argv)
    result = summarize(read_steps(args.steps))
    if args.json:
        write_json(args.json, result)
    print(format_summary(result))


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
