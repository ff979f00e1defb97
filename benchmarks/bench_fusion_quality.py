"""Does fusion beat SFT on conversations training never saw? Pivot + SmolLM2-135M-Instruct (teacher).

For each pivot size, scripts/demo.sh (SOURCES = the teacher only, MERGE=0) prepares the data the
way the demo does: every 5th conversation of data/fusechat_sample.json held out, representations,
alignment with the teacher, filter_nan. Then scripts/pairwise_fusion.sh trains the pivot for the
same steps with lm_loss_weight 1.0 (SFT: the fuse loss weighs nothing), 0.9 (the published value)
and 0.5, for each seed, on the same rows and batches; fusechat.heldout measures every checkpoint on
the held-out conversations: reply CE and CE against the teacher's aligned distributions. The
baseline of each row is the SFT run of the same pivot and seed.

    python benchmarks/bench_fusion_quality.py --work_dir /tmp/fusion_quality --steps 80

Reruns reuse every finished step (the drivers skip existing outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEACHER = "smollm2-135m-instruct"
# (name, hidden size, layers, initializer range): the demo's fixture pivot and a wider, deeper one.
PIVOTS = {
    "openchat_3.5-tiny": None,  # the fixture (hidden 64, 2 layers, init range 0.3)
    "openchat_3.5-h256": (256, 4, 0.02),
}


def build_pivot(name: str, models: Path) -> Path:
    from fusechat import fixtures

    out = models / name
    if PIVOTS[name] is not None and name not in fixtures.TINY_MODELS:
        hidden, layers, init = PIVOTS[name]
        fixtures.TINY_MODELS[name] = fixtures.TinyModelSpec(name, "openchat", "mistral", hidden, layers, seed=1,
                                                            template="openchat_3.5", initializer_range=init)
    return fixtures.build_tiny_model(name, out)


def cached_fixture(name: str) -> Path:
    from fusechat import fixtures

    return fixtures.build_tiny_model(name)


def run(cmd: list[str], env: dict, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        if subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"bench_fusion_quality: {' '.join(map(str, cmd[:1]))} failed; see {log}")


def ckpt(work: Path, pivot: str, seed: int, weight: float) -> Path:
    return work / "checkpoints" / f"{pivot}_seed{seed}_w{weight}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="/tmp/fusechat_fusion_quality")
    parser.add_argument("--pivots", default=",".join(PIVOTS))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--weights", default="1.0,0.9,0.5", help="lm_loss_weight values; 1.0 is the SFT baseline")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--learning_rate", default="1e-3")
    args = parser.parse_args()

    from fusechat.heldout import measure

    work = Path(args.work_dir)
    (work / "models").mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    weights = [float(w) for w in args.weights.split(",")]
    if 1.0 not in weights:
        weights.insert(0, 1.0)
    # The demo's settings, given to scripts/pairwise_fusion.sh too (alone it has the published defaults).
    base_env = dict(os.environ, WORK_DIR=str(work), SOURCES=TEACHER, TEACHER=TEACHER, MERGE="0",
                    MAX_STEPS=str(args.steps), TRAIN_BATCH_SIZE=str(args.batch_size),
                    MODEL_MAX_LENGTH=str(args.max_length), LEARNING_RATE=args.learning_rate, GPUS="",
                    SPLIT_NUM="1", GRAD_ACCUM="1", WARMUP_RATIO="0", SAVE_STRATEGY="no", NUM_WORKERS="1",
                    HF_HUB_OFFLINE="1", DEMO="tiny", CONV_TEMP="openchat_3.5")
    teacher = work / "models" / TEACHER  # converted once into the fixture cache, linked here
    if not teacher.exists():
        teacher.symlink_to(cached_fixture(TEACHER), target_is_directory=True)
    results = {}
    started = time.time()
    for pivot in args.pivots.split(","):
        build_pivot(pivot, work / "models")
        env = dict(base_env, PIVOT=pivot)
        first = seeds[0]
        # The demo's run prepares the data and trains the first seed's SFT and 0.9 runs.
        demo_env = dict(env, LOG_DIR=str(work / "logs" / pivot), TRAIN_EXTRA_ARGS=f"--seed {first}",
                        CKPT_DIR=str(ckpt(work, pivot, first, 0.9)), SFT_CKPT_DIR=str(ckpt(work, pivot, first, 1.0)),
                        LM_LOSS_WEIGHT="0.9")
        print(f"[{pivot}] data, SFT and fusion (seed {first}) through scripts/demo.sh ...", flush=True)
        run([str(REPO / "scripts" / "demo.sh")], demo_env, work / "logs" / f"{pivot}_demo.log")
        summary = json.loads((work / "logs" / pivot / "demo_summary.json").read_text())
        runs = {}
        for seed in seeds:
            for weight in weights:
                folder = ckpt(work, pivot, seed, weight)
                train_env = dict(env, LOG_DIR=str(work / "logs" / f"{pivot}_seed{seed}_w{weight}"),
                                 CKPT_DIR=str(folder), LM_LOSS_WEIGHT=str(weight), TRAIN_EXTRA_ARGS=f"--seed {seed}")
                print(f"[{pivot}] seed {seed}, lm_loss_weight {weight} ...", flush=True)
                run([str(REPO / "scripts" / "pairwise_fusion.sh")], train_env,
                    work / "logs" / f"{pivot}_seed{seed}_w{weight}.log")
                runs[f"seed{seed}_w{weight}"] = str(folder / f"{pivot}_{TEACHER}_pairwise_fusion_ckpt")
        heldout = summary["heldout"]
        measured = measure(heldout["aligned"], runs)
        pair = summary["pairs"][TEACHER]
        results[pivot] = {"alignment_share": pair["alignment_quality"], "source_share": pair["source_share"],
                          "rows": heldout["rows"], "before": heldout["models"]["before"],
                          "teacher": heldout["models"]["teacher"], "runs": measured["models"]}
        (work / f"fusion_quality_{pivot}.json").write_text(json.dumps(results[pivot], indent=2))
    elapsed = time.time() - started
    (work / "fusion_quality.json").write_text(json.dumps(results, indent=2))
    print_table(results, seeds, weights, args)
    print(f"\n{elapsed:.0f} s in all; figures in {work / 'fusion_quality.json'}")


def print_table(results: dict, seeds: list[int], weights: list[float], args) -> None:
    print(f"\nHeld-out conversations, pivot + {TEACHER}: {args.steps} steps, batch {args.batch_size}, "
          f"max length {args.max_length}, lr {args.learning_rate}")
    header = ["pivot", "seed", "lm_loss_weight", "reply CE", "- SFT", "CE vs teacher", "- SFT", "fusion vs SFT"]
    rows = []
    for pivot, r in results.items():
        for seed in seeds:
            sft = r["runs"][f"seed{seed}_w1.0"]
            for weight in weights:
                m = r["runs"][f"seed{seed}_w{weight}"]
                if weight == 1.0:
                    rows.append([pivot, seed, "1.0 (SFT)", f"{m['reply_ce']:.4f}", "", f"{m['teacher_ce']:.4f}", "", ""])
                    continue
                d_reply, d_teacher = m["reply_ce"] - sft["reply_ce"], m["teacher_ce"] - sft["teacher_ce"]
                verdict = "/".join(("better" if d < 0 else "NOT better") for d in (d_reply, d_teacher))
                rows.append([pivot, seed, weight, f"{m['reply_ce']:.4f}", f"{d_reply:+.4f}", f"{m['teacher_ce']:.4f}",
                             f"{d_teacher:+.4f}", verdict])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for cells in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
    print("  fusion vs SFT: reply CE / CE vs teacher lower than the same seed's SFT run ('better') or not.")
    for pivot, r in results.items():
        print(f"  {pivot}: before training reply CE {r['before']['reply_ce']:.4f}, CE vs teacher "
              f"{r['before']['teacher_ce']:.4f}; teacher's own reply CE {r['teacher']['reply_ce']:.4f}; "
              f"teacher's distribution at {100 * r['alignment_share']:.1f}% of pivot positions; "
              f"MinCE source share {100 * r['source_share']:.0f}% of rows; {r['rows']} held-out conversations")


if __name__ == "__main__":
    main()
