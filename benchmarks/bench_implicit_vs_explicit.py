"""Implicit fusion on real small models, offline, on a CPU: FuseChat-3.0 (SFT then DPO) and WRPO.

Target SmolLM2-135M-Instruct; sources: the real models given by --sources (fixture names of
``fusechat.fixtures``; default the target itself, whose best samples make a best-of-N
self-distillation, and gemma-3-270m, a base model prompted through the project's gemma template). Prompts: generated arithmetic word problems and
one-line Python functions, with gold answers, tests and replies; every 5th prompt is held out. The
reward is the verdict of the math and code verifiers (no reward model).

Per seed (the seed drives the prompts' sampling, the build split and training), it reports on the
held-out prompts the accuracy of greedy answers and the reply CE (nats per gold-reply token) of:
the target before training, after SFT, after SFT + DPO, and after WRPO (its own SFT on a third of the
prompts, then WRPO on the rest), with each CE's ratio to the untrained target's measured in the same
run. Beside them, explicit fusion of the same models on the same rows: FuseChat's pairwise fusion
(scripts/pipeline.sh, MERGE=0) of the target with --explicit-source on the implicit SFT set (the
selected best responses, as ShareGPT conversations under one ChatML template), trained like that SFT
(epochs, batch, length, learning rate, schedule) with lm_loss_weight 1.0 (the route's own SFT) and 0.9
(published): the two differ only by the fuse loss toward the source's aligned distributions.

    python benchmarks/bench_implicit_vs_explicit.py --seeds 1,2 --work work/bench_implicit
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fusechat.errors import run_cli
from fusechat.fixtures import build_tiny_model
from fusechat.implicit import cli
from fusechat.implicit.evaluate import evaluate_model
from fusechat.eval.jsonl import read_jsonl
from fusechat.implicit.formats import sft_to_sharegpt, write_jsonl
from fusechat.implicit.tasks import heldout_split, make_tasks
from fusechat.storage import write_json

TARGET = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]


def stage(main, *argv) -> None:
    if run_cli(main, [str(a) for a in argv], prog=main.__name__) != 0:
        raise SystemExit(f"stage {main.__name__} failed")


def run_seed(seed: int, args, work: Path, sources: dict[str, str], target: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    prompts, gold = make_tasks(args.math, args.code, seed=0)  # the same prompts and held-out split for every seed
    train, held = heldout_split(prompts)
    write_jsonl(work / "prompts.jsonl", train)
    sampling = ["--temperature", 0.8, "--top-p", 0.95, "--max-tokens", args.max_tokens, "--batch-size", 16]
    seeds = ",".join(str(seed * 100 + k) for k in range(args.samples))
    train_flags = ["--max-length", 192, "--batch-size", 4, "--seed", seed]
    times, scored = {}, []

    def timed(name, main, *argv):
        """Run a stage; a training stage whose set came out empty is skipped (reported as 'no rows')."""
        if "--data" in argv and not read_jsonl(argv[argv.index("--data") + 1]):
            print(f"seed {seed}: {name}: no rows in {argv[argv.index('--data') + 1]}, skipped")
            return
        out = Path(argv[argv.index("--out") + 1])
        if out.exists():  # written atomically, so complete: a rerun on the same --work resumes
            return
        start = time.monotonic()
        stage(main, *argv)
        times[name] = times.get(name, 0.0) + time.monotonic() - start

    for name, (folder, conv_temp) in sources.items():
        template = ["--conv-temp", conv_temp] if conv_temp else []
        timed("decode", cli.decode_main, "--model", folder, "--source", name, "--prompts", work / "prompts.jsonl",
              "--seeds", seeds, "--out", work / f"samples/{name}.jsonl", *sampling, *template)
        timed("annotate", cli.annotate_main, "--prompts", work / "prompts.jsonl", "--samples",
              work / f"samples/{name}.jsonl", "--out", work / f"scored/{name}.jsonl", "--reward-model", "verdict",
              "--answer", "boxed-or-last-number")
        scored.append(str(work / f"scored/{name}.jsonl"))
    scored_list = ",".join(scored)
    # FuseChat-3.0: verdict rewards are 1 or 0, so the math band must take a margin of 1.
    timed("build", cli.build_main, "--prompts", work / "prompts.jsonl", "--scored", scored_list, "--out",
          work / "build", "--margin", "0.01,1", "--seed", seed)
    timed("sft", cli.sft_main, "--model", target, "--data", work / "build/sft.jsonl", "--out", work / "sft",
          "--learning-rate", 2e-5, "--epochs", 2, *train_flags)
    timed("dpo", cli.dpo_main, "--model", work / "sft", "--data", work / "build/dpo.jsonl", "--out", work / "dpo",
          "--learning-rate", 5e-6, "--beta", 0.1, "--epochs", 2, *train_flags)
    # WRPO: its own SFT on a third, the SFT model sampled on the rest, then WRPO.
    timed("build", cli.build_main, "--mode", "wrpo", "--prompts", work / "prompts.jsonl", "--scored", scored_list,
          "--out", work / "wrpo_split", "--seed", seed)
    timed("sft", cli.sft_main, "--mode", "fusechat3", "--model", target, "--data", work / "wrpo_split/sft.jsonl",
          "--out", work / "wrpo_sft", "--learning-rate", 2e-5, "--epochs", 2, *train_flags)
    if not (work / "wrpo_sft/config.json").is_file():
        raise SystemExit(f"seed {seed}: no WRPO SFT set, so no target-SFT model to sample")
    timed("decode", cli.decode_main, "--model", work / "wrpo_sft", "--source", "target-SFT", "--prompts",
          work / "wrpo_split/wrpo_prompts.jsonl", "--seeds", seeds, "--out", work / "samples/target-SFT.jsonl",
          *sampling)
    timed("annotate", cli.annotate_main, "--prompts", work / "wrpo_split/wrpo_prompts.jsonl", "--samples",
          work / "samples/target-SFT.jsonl", "--out", work / "scored/target-SFT.jsonl", "--reward-model", "verdict",
          "--answer", "boxed-or-last-number")
    timed("build", cli.build_main, "--mode", "wrpo", "--prompts", work / "prompts.jsonl",
          "--scored", scored_list, "--target-scored", work / "scored/target-SFT.jsonl", "--out", work / "wrpo_rows",
          "--seed", seed)
    timed("wrpo", cli.wrpo_main, "--model", work / "wrpo_sft", "--data", work / "wrpo_rows/wrpo.jsonl", "--out",
          work / "wrpo", "--learning-rate", 5e-6, "--beta", 0.1, "--alpha", 0.1, "--epochs", 2,
          "--max-prompt-length", 128, *train_flags)

    explicit = explicit_fusion(seed, args, work, target) if args.explicit_source else {}

    rows = {name: len(read_jsonl(work / path)) for name, path in
            (("sft", "build/sft.jsonl"), ("dpo", "build/dpo.jsonl"), ("wrpo_sft", "wrpo_split/sft.jsonl"),
             ("wrpo", "wrpo_rows/wrpo.jsonl"))}
    results = {}
    start = time.monotonic()
    for name, folder in (("before", target), ("SFT", work / "sft"), ("SFT+DPO", work / "dpo"),
                         ("WRPO (SFT on 1/3)", work / "wrpo_sft"), ("WRPO", work / "wrpo"), *explicit.items()):
        if not Path(folder, "config.json").is_file():
            results[name] = {"accuracy": math.nan, "reply_ce": math.nan}
            continue
        results[name] = evaluate_model(str(folder), held, gold, max_new_tokens=args.max_tokens,
                                       answer_rule="boxed-or-last-number")
    times["evaluate"] = time.monotonic() - start
    return {"seed": seed, "rows": rows, "results": results, "times_s": times, "heldout": len(held)}


def explicit_fusion(seed: int, args, work: Path, target: str) -> dict[str, Path]:
    """FuseChat's pairwise fusion of the target with ``args.explicit_source`` on the implicit SFT rows:
    the published stages through scripts/pipeline.sh (representations, alignment, filter_nan, training),
    then the same training with lm_loss_weight 1.0. Returns {row label: checkpoint folder}."""
    rows = read_jsonl(work / "build/sft.jsonl")
    if not rows:
        print(f"seed {seed}: explicit fusion: no SFT rows, skipped")
        return {}
    root = work / "explicit"
    corpus = root / "corpus.json"
    (root / "models").mkdir(parents=True, exist_ok=True)
    if not corpus.exists():
        write_json(corpus, [sft_to_sharegpt(row) for row in rows], indent=1)  # atomic: exists means complete
    for name, folder in ((TARGET, target), (args.explicit_source, build_tiny_model(args.explicit_source))):
        if not (root / "models" / name).exists():
            (root / "models" / name).symlink_to(folder, target_is_directory=True)
    env = dict(os.environ, DATA_PATH=str(corpus), WORK_DIR=str(root), PIVOT=TARGET, SOURCES=args.explicit_source,
               CONV_TEMP="chatml", MERGE="0", GPUS="", SPLIT_NUM="1", NUM_WORKERS="1", REP_BATCH_SIZE="8",
               MODEL_MAX_LENGTH="192", TRAIN_BATCH_SIZE="4", GRAD_ACCUM="1", NUM_EPOCHS="2", LEARNING_RATE="2e-5",
               WARMUP_RATIO="0.1", SAVE_STRATEGY="no", TRAIN_EXTRA_ARGS=f"--seed {seed}", HF_HUB_OFFLINE="1")
    checkpoints = {}
    for label, weight, driver in (("explicit fusion (0.9)", "0.9", "pipeline.sh"),
                                  ("explicit SFT (1.0)", "1.0", "pairwise_fusion.sh")):
        ckpt = root / f"checkpoints_w{weight}"
        log = root / f"w{weight}.log"
        start = time.monotonic()
        with log.open("w") as handle:
            done = subprocess.run([str(REPO / "scripts" / driver)], stdout=handle, stderr=subprocess.STDOUT,
                                  env=dict(env, CKPT_DIR=str(ckpt), LM_LOSS_WEIGHT=weight)).returncode == 0
        if not done:
            raise SystemExit(f"seed {seed}: explicit fusion ({driver}, lm_loss_weight {weight}) failed; see {log}")
        print(f"seed {seed}: {label}: {time.monotonic() - start:.0f} s", flush=True)
        checkpoints[label] = ckpt / f"{TARGET}_{args.explicit_source}_pairwise_fusion_ckpt"
    return checkpoints


def print_table(runs: list[dict]) -> None:
    names = list(runs[0]["results"])
    print(f"\nheld-out prompts: {runs[0]['heldout']} (same for every seed); rows per seed: "
          + "; ".join(f"seed {r['seed']}: {r['rows']}" for r in runs))
    print(f"{'model':<20}" + "".join(f"  seed {r['seed']}: acc   CE    CE/before" for r in runs) + "   mean acc  mean CE")
    for name in names:
        line = f"{name:<20}"
        for run in runs:
            res, base = run["results"][name], run["results"]["before"]["reply_ce"]
            line += f"  {res['accuracy']:>12.2f} {res['reply_ce']:6.3f} {res['reply_ce'] / base:8.3f}  "
        accs = [r["results"][name]["accuracy"] for r in runs]
        ces = [r["results"][name]["reply_ce"] for r in runs]
        print(line + f"   {sum(accs) / len(accs):7.2f}  {sum(ces) / len(ces):7.3f}")
    for run in runs:
        print(f"seed {run['seed']} stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in run["times_s"].items()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--sources", default=f"{TARGET},gemma-3-270m:gemma",
                        help="comma-separated fixture names of real models, each with :TEMPLATE when its tokenizer "
                             "has no chat template (gemma-3-270m is a base model: the project's gemma template)")
    parser.add_argument("--math", type=int, default=40, help="math prompts (a fifth held out)")
    parser.add_argument("--code", type=int, default=20, help="code prompts (a fifth held out)")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt and source")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--explicit-source", default="gemma-3-270m",
                        help="the source of the explicit pairwise fusion beside implicit fusion ('' : none)")
    parser.add_argument("--work", default="work/bench_implicit")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    target = str(build_tiny_model(TARGET))
    sources = {}
    for item in args.sources.split(","):
        name, _, conv_temp = item.partition(":")
        sources[name] = (str(build_tiny_model(name)), conv_temp or None)
    work = Path(args.work)
    started = time.monotonic()
    runs = []
    for seed in args.seeds.split(","):  # the table so far after every seed
        runs.append(run_seed(int(seed), args, work / f"seed{seed}", sources, target))
        print_table(runs)
        print(f"total {math.ceil((time.monotonic() - started) / 60)} min; sources: {', '.join(sources)}", flush=True)
        write_json(work / "results.json", runs)
    if not args.keep:
        for seed in args.seeds.split(","):
            shutil.rmtree(work / f"seed{seed}", ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
