"""What fusion buys on real models: SmolLM2-135M-Instruct (pivot) fused with gemma-3-270m (source).

FuseChat part. scripts/demo.sh (DEMO=real, MERGE=0) prepares the data as the demo does: every 5th
conversation of data/fusechat_sample.json held out, representations of both models under one ChatML
template, the token alignment (262,144 x 49,152 counts, MS mapping), the distribution alignment,
filter_nan. Then scripts/pairwise_fusion.sh trains the pivot on the same rows, batches and steps with
lm_loss_weight 1.0 (SFT: no fuse loss, the baseline), 0.9 (published) and 0.5, for each seed, and
fusechat.heldout measures every checkpoint on the held-out conversations: reply CE, and CE against
gemma's aligned distributions. The effect of fusion is the run's figure minus the same seed's SFT
figure, printed beside the spread between seeds (how much the SFT figure itself moves with the seed).
Last, the pivot before training, SFT and fused (0.9), of the first seed, answer ten MT-Bench-style
questions greedily, side by side.

FuseLLM part: ``benchmarks/real_fusion_fusellm.py``'s ``run(seeds, out_dir)`` (held-out perplexity of
the pivot before, after CLM and after FuseLLM), when that module is present.

    python benchmarks/bench_real_fusion.py --work_dir /tmp/real_fusion            # both parts
    python benchmarks/bench_real_fusion.py --steps 10 --skip_fusellm              # a quicker FuseChat look

Reruns reuse every finished step (the drivers skip existing outputs).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIVOT, TEACHER = "smollm2-135m-instruct", "gemma-3-270m"
QUESTIONS = [
    "What is the difference between a list and a tuple in Python?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis to a ten-year-old in three sentences.",
    "What are three tips for a job interview?",
    "If a train travels 120 km in 1.5 hours, what is its average speed?",
    "Write a Python function that returns the factorial of n.",
    "What causes the seasons on Earth?",
    "Give me a short recipe for pancakes.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
]


def run(cmd: list[str], env: dict, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        if subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"bench_real_fusion: {' '.join(map(str, cmd[:1]))} failed; see {log}")


def ckpt_root(work: Path, seed: int, weight: float) -> Path:
    return work / "checkpoints" / f"seed{seed}_w{weight}"


def fusechat_part(args, work: Path, seeds: list[int], weights: list[float]) -> dict:
    from fusechat import fixtures
    from fusechat.heldout import measure

    (work / "models").mkdir(parents=True, exist_ok=True)
    for name in (PIVOT, TEACHER):  # converted once into the fixture cache, linked here
        if not (work / "models" / name).exists():
            (work / "models" / name).symlink_to(fixtures.build_tiny_model(name), target_is_directory=True)
    env = dict(os.environ, DEMO="real", WORK_DIR=str(work), PIVOT=PIVOT, SOURCES=TEACHER, TEACHER=TEACHER,
               MERGE="0", MAX_STEPS=str(args.steps), TRAIN_BATCH_SIZE=str(args.batch_size),
               MODEL_MAX_LENGTH=str(args.max_length), LEARNING_RATE=args.learning_rate, GPUS="", SPLIT_NUM="1",
               HF_HUB_OFFLINE="1")
    first = seeds[0]
    demo_env = dict(env, LOG_DIR=str(work / "logs" / "demo"), TRAIN_EXTRA_ARGS=f"--seed {first}",
                    CKPT_DIR=str(ckpt_root(work, first, 0.9)), SFT_CKPT_DIR=str(ckpt_root(work, first, 1.0)),
                    LM_LOSS_WEIGHT="0.9")
    print(f"data, SFT and fusion (seed {first}) through scripts/demo.sh ...", flush=True)
    run([str(REPO / "scripts" / "demo.sh")], demo_env, work / "logs" / "demo.log")
    summary = json.loads((work / "logs" / "demo" / "demo_summary.json").read_text())
    runs = {}
    for seed in seeds:
        for weight in weights:
            root = ckpt_root(work, seed, weight)
            print(f"seed {seed}, lm_loss_weight {weight} ...", flush=True)
            run([str(REPO / "scripts" / "pairwise_fusion.sh")],
                dict(env, LOG_DIR=str(work / "logs" / root.name), CKPT_DIR=str(root), LM_LOSS_WEIGHT=str(weight),
                     TRAIN_EXTRA_ARGS=f"--seed {seed}"), work / "logs" / f"{root.name}.log")
            runs[f"seed{seed}_w{weight}"] = str(root / f"{PIVOT}_{TEACHER}_pairwise_fusion_ckpt")
    heldout = summary["heldout"]
    measured = measure(heldout["aligned"], runs)["models"]
    answers = greedy_answers({"pivot": str(work / "models" / PIVOT), "SFT": runs[f"seed{first}_w1.0"],
                              "fused 0.9": runs[f"seed{first}_w0.9"]}, args.answer_tokens)
    pair = summary["pairs"][TEACHER]
    return {"alignment_share": pair["alignment_quality"], "source_share": pair["source_share"],
            "rows": heldout["rows"], "before": heldout["models"]["before"], "teacher": heldout["models"]["teacher"],
            "runs": measured, "answers": answers}


def greedy_answers(models: dict[str, str], max_new_tokens: int) -> dict[str, list[str]]:
    """Each model's greedy answer to every question, prompted with the ChatML template it was trained with."""
    from fusechat.eval.generate import load_generator

    answers = {}
    for label, path in models.items():
        generator = load_generator(path, conv_temp="chatml", dtype="float32")
        answers[label] = generator.generate([[("user", q)] for q in QUESTIONS], temperature=0.0,
                                            max_new_tokens=max_new_tokens)
        del generator
    return answers


def effect_rows(result: dict, seeds: list[int], weights: list[float]) -> list[list[str]]:
    """One row per lm_loss_weight: mean reply CE and CE vs teacher over the seeds, the effect (minus the
    same seed's SFT, averaged), and the spread between seeds of the SFT figure (max - min)."""
    runs = result["runs"]
    rows = [["pivot before", "", f"{result['before']['reply_ce']:.4f}", "", f"{result['before']['teacher_ce']:.4f}",
             "", ""]]
    spread = {key: max(runs[f"seed{s}_w1.0"][key] for s in seeds) - min(runs[f"seed{s}_w1.0"][key] for s in seeds)
              for key in ("reply_ce", "teacher_ce")}
    for weight in weights:
        cells = [f"{'SFT' if weight == 1.0 else 'fused'} (lm_loss_weight {weight})", str(len(seeds))]
        for key in ("reply_ce", "teacher_ce"):
            values = [runs[f"seed{s}_w{weight}"][key] for s in seeds]
            cells.append(f"{statistics.mean(values):.4f}")
            if weight == 1.0:
                cells.append(f"seed spread {spread[key]:.4f}")
            else:
                effect = statistics.mean(runs[f"seed{s}_w{weight}"][key] - runs[f"seed{s}_w1.0"][key] for s in seeds)
                cells.append(f"{effect:+.4f} (spread {spread[key]:.4f})")
        rows.append(cells)
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for cells in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())


def report_fusechat(result: dict, seeds: list[int], weights: list[float], args) -> None:
    print(f"\nFuseChat, held-out conversations ({result['rows']}, never trained on): pivot {PIVOT}, source "
          f"{TEACHER}; {args.steps} steps, batch {args.batch_size}, max length {args.max_length}, "
          f"lr {args.learning_rate}, seeds {','.join(map(str, seeds))}")
    print_table(["model", "seeds", "reply CE", "vs SFT", "CE vs teacher", "vs SFT"],
                [row[:6] for row in effect_rows(result, seeds, weights)])
    print(f"  teacher's own reply CE {result['teacher']['reply_ce']:.4f}; teacher's distribution at "
          f"{100 * result['alignment_share']:.1f}% of pivot positions; MinCE source share "
          f"{100 * result['source_share']:.0f}% of rows. Lower is better; 'vs SFT' is the mean over seeds of "
          "(run - same seed's SFT), beside the SFT figure's spread between seeds.")
    print("\nGreedy answers (first seed):")
    for k, question in enumerate(QUESTIONS):
        print(f"\nQ{k + 1}: {question}")
        for label, answers in result["answers"].items():
            print(f"  [{label}] {' '.join(answers[k].split())}")


def fusellm_part(seeds: list[int], out_dir: Path):
    """The FuseLLM rows of benchmarks/real_fusion_fusellm.py, None when that module is not there."""
    path = REPO / "benchmarks" / "real_fusion_fusellm.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("real_fusion_fusellm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(seeds, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/fusechat_real_fusion")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--weights", default="1.0,0.9,0.5", help="lm_loss_weight values; 1.0 is the SFT baseline")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--learning_rate", default="2e-5")
    parser.add_argument("--answer_tokens", type=int, default=48)
    parser.add_argument("--skip_fusellm", action="store_true")
    parser.add_argument("--skip_fusechat", action="store_true")
    args = parser.parse_args()

    work = Path(args.work_dir)
    seeds = [int(s) for s in args.seeds.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    if 1.0 not in weights:
        weights.insert(0, 1.0)
    started = time.time()
    results = {}
    if not args.skip_fusechat:
        results["fusechat"] = fusechat_part(args, work / "fusechat", seeds, weights)
        (work / "fusechat.json").write_text(json.dumps(results["fusechat"], indent=2, ensure_ascii=False))
        print(f"FuseChat part: {time.time() - started:.0f} s", flush=True)
    fusellm_rows = None if args.skip_fusellm else fusellm_part(seeds, work / "fusellm")
    if "fusechat" in results:
        report_fusechat(results["fusechat"], seeds, weights, args)
    if fusellm_rows is not None:
        print("\nFuseLLM (benchmarks/real_fusion_fusellm.py):")
        for row in fusellm_rows:
            print(f"  {row}")
    elif not args.skip_fusellm:
        print("\nFuseLLM part: benchmarks/real_fusion_fusellm.py is not in this checkout; skipped")
    print(f"\n{time.time() - started:.0f} s in all; figures under {work}")


if __name__ == "__main__":
    main()
