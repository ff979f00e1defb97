"""Held-out measures: does fusion transfer more of the teacher than plain SFT does?

On conversations that training never saw, two figures per model folder:

* reply CE: the mean next-token cross-entropy over the reply tokens (positions t whose next label
  labels[t + 1] is not -100, pooled over all rows), as the LM loss of docs/design.md 8 defines it;
* CE against the teacher: at the reply positions whose aligned entry carries the teacher's
  distribution (not ONE-HOT, not EMPTY, docs/design.md 6.3), the mean of -sum_k p_k log q(id_k), with
  p = softmax of the teacher's top-k logits and q the model's next-token distribution: the fuse
  loss of docs/design.md 8 toward the teacher alone.

The rows come from the drivers' own outputs for a held-out corpus: the pivot's set aligned with the
teacher (align_diff_vocab.sh / align_same_vocab.sh), and the teacher's representation set for the
teacher's own reply CE (in its own tokens).

    python -m fusechat.heldout split data.json --train train.json --heldout heldout.json --every 5
    python -m fusechat.heldout measure --aligned SET --models before=DIR,sft=DIR,fused=DIR \\
        [--teacher DIR --teacher_set SET] --out heldout.json
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import InputError, run_cli
from .schema import FUSED_INDICES, FUSED_LOGITS
from .kernels.losses import next_label_mask, next_token_ids, target_probabilities

TEACHER_LABEL = "teacher"


# ----------------------------------------------------------------------------------------------
# The measures (pure)
# ----------------------------------------------------------------------------------------------

@dataclass
class Totals:
    reply_nll: float = 0.0
    reply_tokens: int = 0
    teacher_nll: float = 0.0
    teacher_positions: int = 0

    def add(self, other: "Totals") -> None:
        self.reply_nll += other.reply_nll
        self.reply_tokens += other.reply_tokens
        self.teacher_nll += other.teacher_nll
        self.teacher_positions += other.teacher_positions

    def means(self) -> dict:
        return {"reply_ce": self.reply_nll / self.reply_tokens if self.reply_tokens else None,
                "teacher_ce": self.teacher_nll / self.teacher_positions if self.teacher_positions else None,
                **asdict(self)}


def row_totals(log_probs: torch.Tensor, labels: list[int], carried: list[bool] | None = None,
               target_logits: list[list[float]] | None = None, target_ids: list[list[int]] | None = None) -> Totals:
    """Sums and counts of one row. log_probs: [T, V] float32 log-softmax of the model at each position.

    ``carried`` (per position: the entry carries the teacher's distribution) and the teacher's
    top-k lists are given for the CE against the teacher; without them only the reply CE counts.
    """
    labels_t = torch.tensor([labels])
    replies = next_label_mask(labels_t)[0]
    nll = -log_probs.gather(-1, next_token_ids(labels_t)[0].unsqueeze(-1)).squeeze(-1)
    totals = Totals(reply_nll=float(nll[replies].sum()), reply_tokens=int(replies.sum()))
    if carried is None:
        return totals
    positions = [t for t in range(len(labels)) if carried[t] and replies[t]]
    if not positions:
        return totals
    width = max(len(target_ids[t]) for t in positions)
    logits = torch.zeros(len(positions), width)
    ids = torch.zeros(len(positions), width, dtype=torch.long)
    valid = torch.zeros(len(positions), width, dtype=torch.bool)
    for row, t in enumerate(positions):
        k = len(target_ids[t])
        logits[row, :k] = torch.tensor(target_logits[t], dtype=torch.float32)
        ids[row, :k] = torch.tensor(target_ids[t], dtype=torch.long)
        valid[row, :k] = True
    probs = target_probabilities(logits, valid)
    student = log_probs[positions].gather(-1, ids).masked_fill(~valid, 0.0)
    totals.teacher_nll = float(-(probs * student).sum())
    totals.teacher_positions = len(positions)
    return totals


# ----------------------------------------------------------------------------------------------
# Models over saved sets
# ----------------------------------------------------------------------------------------------

def load_set(path: str, what: str):
    from .schema import train_split
    from .storage import load_dataset_dir

    return train_split(load_dataset_dir(path, what), path)


@torch.no_grad()
def measure_model(model_dir: str, dataset, with_teacher: bool, where: str) -> dict:
    """The held-out measures of one model folder over the rows of a saved set (one row per forward)."""
    from tqdm import tqdm

    from .kernels.distribution import carried_flags
    from .modeling import check_model_path, load_causal_lm, output_vocab_size

    check_model_path(model_dir, "--models")
    model = load_causal_lm(model_dir).eval()
    vocab = output_vocab_size(model)
    columns = ["input_ids", "labels"] + ([FUSED_LOGITS, FUSED_INDICES] if with_teacher else [])
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise InputError(f"{where}: no column {missing[0]!r} (expected an aligned set)")
    totals = Totals()
    for row in tqdm(dataset.select_columns(columns), desc=f"held-out {Path(model_dir).name}", leave=False):
        ids = row["input_ids"]
        if max(ids) >= vocab:
            raise InputError(f"{where}: token id {max(ids)} is outside the vocabulary of {model_dir} "
                             f"({vocab} ids): the set was tokenized for another model")
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        if with_teacher:
            carried = carried_flags(ids, row[FUSED_LOGITS], row[FUSED_INDICES])
            totals.add(row_totals(log_probs, row["labels"], carried, row[FUSED_LOGITS], row[FUSED_INDICES]))
        else:
            totals.add(row_totals(log_probs, row["labels"]))
    return totals.means()


def measure(aligned: str, models: dict[str, str], teacher: str | None = None,
            teacher_set: str | None = None) -> dict:
    """{rows, models: {label: measures}}; the teacher's own reply CE under ``teacher`` when given."""
    dataset = load_set(aligned, "aligned held-out set")
    result = {"aligned": aligned, "rows": len(dataset),
              "models": {label: measure_model(path, dataset, True, aligned) for label, path in models.items()}}
    if teacher:
        if not teacher_set:
            raise InputError("--teacher needs --teacher_set (the teacher's representation set of the held-out rows)")
        own = load_set(teacher_set, "teacher's held-out set")
        result["models"][TEACHER_LABEL] = measure_model(teacher, own, False, teacher_set)
    return result


# ----------------------------------------------------------------------------------------------
# Held-out split of a corpus
# ----------------------------------------------------------------------------------------------

def heldout_split(records: list, every: int) -> tuple[list, list]:
    """(training records, held-out records): every ``every``-th record is held out, corpus order kept."""
    if every < 2:
        raise InputError(f"--every must be at least 2, got {every}")
    heldout = [r for i, r in enumerate(records) if i % every == every - 1]
    if not heldout:
        raise InputError(f"the corpus has {len(records)} records: too few to hold out every {every}th")
    return [r for i, r in enumerate(records) if i % every != every - 1], heldout


def parse_models(value: str) -> dict[str, str]:
    models = {}
    for item in value.split(","):
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise InputError(f"--models: expected LABEL=FOLDER[,LABEL=FOLDER...], got {item!r}")
        models[label] = path
    return models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusechat.heldout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="write the training and the held-out part of a corpus")
    split.add_argument("corpus")
    split.add_argument("--train", required=True)
    split.add_argument("--heldout", required=True)
    split.add_argument("--every", type=int, default=5, help="hold out every N-th record (default 5)")
    run = sub.add_parser("measure", help="reply CE and CE against the teacher of model folders")
    run.add_argument("--aligned", required=True, help="the pivot's held-out set aligned with the teacher")
    run.add_argument("--models", required=True, help="LABEL=FOLDER,... (models of the pivot's vocabulary)")
    run.add_argument("--teacher", default=None, help="the teacher's folder (its own reply CE)")
    run.add_argument("--teacher_set", default=None, help="the teacher's representation set of the held-out rows")
    run.add_argument("--out", required=True, help="JSON file receiving the measures")
    return parser


def main(argv: list[str] | None = None) -> None:
    from .data import read_corpus
    from .storage import check_output_file, write_json

    args = build_parser().parse_args(argv)
    if args.command == "split":
        for flag in ("train", "heldout"):
            check_output_file(getattr(args, flag), f"--{flag}", [args.corpus])
        train, heldout = heldout_split(read_corpus(args.corpus), args.every)
        write_json(args.train, train)
        write_json(args.heldout, heldout)
        print(f"{len(train)} training records -> {args.train}; {len(heldout)} held out -> {args.heldout}")
    else:
        check_output_file(args.out, "--out", [args.aligned, args.teacher, args.teacher_set,
                                              *parse_models(args.models).values()])
        result = measure(args.aligned, parse_models(args.models), args.teacher, args.teacher_set)
        write_json(args.out, result)
        for label, m in result["models"].items():
            teacher = "-" if m["teacher_ce"] is None else f"{m['teacher_ce']:.4f}"
            print(f"{label}: reply CE {m['reply_ce']:.4f}, CE against the teacher {teacher}")


def cli(argv: list[str] | None = None) -> int:
    """Entry point of python -m fusechat.heldout (the drivers' helper)."""
    return run_cli(main, argv, prog="python -m fusechat.heldout")


if __name__ == "__main__":
    raise SystemExit(cli())
