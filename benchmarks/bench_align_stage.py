"""Every data stage on the sample corpus with the tiny fixtures: saved outputs, a comparison of two
runs, and the time of the whole align stage (token pass + distribution pass) against another tree.

    python benchmarks/bench_align_stage.py run OUT [--models DIR]     # every stage's outputs into OUT
    python benchmarks/bench_align_stage.py compare OUT_A OUT_B        # identical? (exit 1 if not)
    python benchmarks/bench_align_stage.py time --reference TREE [--repeats 3] [--max_length 2048]

``run`` drives the released entry points (``FuseChat/train/*.py``) of the tree this file lives in,
in subprocesses: representations of the pivot and both sources (two splits), replace_model, the
token pass of align_token_and_vocab for hard, soft and default (with the tokenized set holding
``base_to_blending_mapping``), the distribution passes (default with the matrix, reading the
tokenized set and not; soft at token level; hard; ``--not_align``), filter_nan and fuse_multi.
Run it on two trees (``--models`` the same fixture folder) and ``compare`` the outputs: every
saved dataset (features, rows, values), mapping file and count matrix must be equal.

``run`` then trains the pivot a few steps on CPU (FuseChat/train/train.py, the published flags
CPU subset) on the filtered aligned set (pairwise fusion) and on the fuse_multi set (MinCE over
two sources), and runs FuseLLM end to end through scripts/demo_fusellm.sh on its tiny models:
long-text split, top-k capture of the three models, both vocabulary mappings, the chained token
and distribution alignment, packing and a few MinCE training steps. Every logged training loss is
saved as ``*_losses.json`` (trainer_state's log_history without the timings); ``compare`` reads
the FuseLLM outputs in their stage folders under ``fusellm/``.

``time`` runs the align stage of the published pipeline (token pass over both splits, then one
distribution pass per split, ``--align_type default --use_token_alignment_matrix``) with this tree
and with ``--reference`` (another checkout's root) on the same representation sets, alternating,
and prints the best wall time of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "fusechat_sample.json"
PIVOT, SAME, DIFF = "openchat_3.5-tiny", "starling-tiny", "qwen1.5-chat-tiny"
SPLITS = 2


def script(tree: Path, name: str, *args, quiet: bool = True) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), HF_HUB_OFFLINE="1")
    command = [sys.executable, str(tree / "FuseChat" / "train" / f"{name}.py"), *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=quiet, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr if quiet else ''}")


def fixture_models(folder: Path) -> Path:
    if not all((folder / name / "config.json").exists() for name in (PIVOT, SAME, DIFF)):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        subprocess.run([sys.executable, "-m", "fusechat.fixtures", "--out", str(folder),
                        "--models", f"{PIVOT},{SAME},{DIFF}"], env=env, check=True, capture_output=True)
    return folder


def representations(tree: Path, models: Path, out: Path, max_length: int, names=(PIVOT, SAME, DIFF)) -> None:
    for name in names:
        for i in range(SPLITS):
            script(tree, "get_data_representation", "--model_name_or_path", models / name, "--data_path", CORPUS,
                   "--tknz_dataset_path", out / f"{name}_tknz_split{i}", "--dataset_save_dir",
                   out / f"{name}_representation_split{i}", "--get_representation", "--mask_instruction",
                   "--save_per_token_metric", "--no_assert", "--model_max_length", max_length,
                   "--dataset_split_num", SPLITS, "--dataset_index", i, "--top_k_logits", 10, "--batch_size", 8)


def split_list(out: Path, name: str, kind: str) -> str:
    return ",".join(str(out / f"{name}_{kind}_split{i}") for i in range(SPLITS))


def token_pass(tree: Path, models: Path, out: Path, align_type: str) -> list:
    """The token pass over both splits; returns the flags the distribution passes share with it."""
    files = ["--token_alignment_matrix_file", out / f"{align_type}_matrix.npz",
             "--blending_to_base_file", out / f"{align_type}_blending_to_base.json"]
    common = ["--base_model_name_or_path", models / PIVOT, "--blending_model_name_or_path", models / DIFF,
              "--align_type", align_type, "--batch_size", 16, *files]
    script(tree, "align_token_and_vocab", *common, "--do_token_alignment",
           "--base_dataset_dir", split_list(out, PIVOT, "tknz"), "--blending_dataset_dir", split_list(out, DIFF, "tknz"),
           "--aligned_dataset_tknz_save_dir", out / f"{align_type}_tknz_aligned")
    return common


def distribution_pass(tree: Path, out: Path, common: list, i: int, save: str, *extra) -> None:
    script(tree, "align_token_and_vocab", *common, "--do_distribution_alignment", *extra,
           "--base_dataset_dir", out / f"{PIVOT}_representation_split{i}",
           "--blending_dataset_dir", out / f"{DIFF}_representation_split{i}", "--aligned_dataset_save_dir", out / save)


def run(args) -> None:
    tree, out = ROOT, Path(args.out).resolve()
    models = fixture_models(Path(args.models).resolve())
    out.mkdir(parents=True, exist_ok=True)
    representations(tree, models, out, 128)
    for i in range(SPLITS):
        script(tree, "replace_model", "--dataset_dir", out / f"{PIVOT}_representation_split{i}",
               "--replace_dataset_dir", out / f"{SAME}_representation_split{i}",
               "--dataset_save_dir", out / f"replaced_split{i}")
    by_type = {align_type: token_pass(tree, models, out, align_type) for align_type in ("hard", "soft", "default")}
    tknz = lambda align_type: ("--aligned_dataset_tknz_save_dir", out / f"{align_type}_tknz_aligned")  # noqa: E731
    for i in range(SPLITS):
        distribution_pass(tree, out, by_type["default"], i, f"default_aligned_split{i}",
                          "--use_token_alignment_matrix", *tknz("default"))
    distribution_pass(tree, out, by_type["default"], 0, "default_recomputed_split0", "--use_token_alignment_matrix")
    distribution_pass(tree, out, by_type["default"], 1, "default_no_matrix_split1", *tknz("default"))
    distribution_pass(tree, out, by_type["soft"], 0, "soft_token_level_split0", "--metric_level", "token",
                      *tknz("soft"))
    distribution_pass(tree, out, by_type["hard"], 1, "hard_aligned_split1", *tknz("hard"))
    distribution_pass(tree, out, by_type["hard"], 0, "not_aligned_split0", "--not_align")
    for i in range(SPLITS):
        script(tree, "filter_nan", "--input_data_dir", out / f"default_aligned_split{i}",
               "--output_data_dir", out / f"fnan_split{i}")
    script(tree, "fuse_multi", "--dataset_dir", f"{out / 'replaced_split0'},{out / 'default_aligned_split0'}",
           "--dataset_save_dir", out / "fused_split0")
    for name, data in (("pairwise", out / "fnan_split0"), ("fuse_multi", out / "fused_split0")):
        fusechat_train(tree, models / PIVOT, data, out / f"train_{name}")
    fusellm(tree, models, out / "fusellm")
    print(f"outputs in {out}")


def save_losses(state: Path, to: Path) -> None:
    """The logged losses of a training run (log_history without the timing entries)."""
    history = json.loads(state.read_text())["log_history"]
    timings = ("runtime", "per_second", "total_flos")
    kept = [{k: v for k, v in entry.items() if not any(t in k for t in timings)} for entry in history]
    to.write_text(json.dumps(kept, indent=1))


def fusechat_train(tree: Path, model: Path, data: Path, out: Path) -> None:
    """A few MinCE steps of train.py on CPU; keeps the losses only."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        script(tree, "train", "--model_name_or_path", model, "--data_path", data, "--output_dir", tmp,
               "--max_steps", 3, "--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 2,
               "--learning_rate", "1e-3", "--lr_scheduler_type", "cosine", "--warmup_ratio", 0,
               "--logging_steps", 1, "--save_strategy", "no", "--model_max_length", 128,
               "--conv_temp", "openchat_3.5", "--lazy_preprocess", "True", "--do_train", "--do_fuse",
               "--fuse_with_ref_model", "True", "--fuse_loss_type", "ce", "--fuse_temperature", "1.0",
               "--lm_loss_weight", "0.9", "--dataloader_num_workers", 0, "--remove_unused_columns", "False",
               "--seed", 42, "--use_cpu", "True", "--report_to", "none")
        save_losses(Path(tmp) / "trainer_state.json", out.with_name(out.name + "_losses.json"))


def fusellm(tree: Path, models: Path, out: Path) -> None:
    """FuseLLM's stages through its demo driver; the checkpoint's weights are replaced by its losses."""
    import shutil

    env = dict(os.environ, WORK_DIR=str(out), MODELS_DIR=str(models), PYTHONPATH=str(tree / "src"),
               HF_HUB_OFFLINE="1", GPUS="", OMP_NUM_THREADS="1")
    done = subprocess.run([str(tree / "scripts" / "demo_fusellm.sh")], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"demo_fusellm.sh failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    for ckpt in (out / "checkpoints").iterdir():
        save_losses(ckpt / "trainer_state.json", out / f"{ckpt.name}_losses.json")
    for name in ("checkpoints", "logs"):  # weights and timings: not outputs that must stay equal
        shutil.rmtree(out / name)


def compare_folders(a: Path, b: Path) -> list[str]:
    """The differences between two ``run`` outputs, one line each (empty: identical)."""
    from datasets import load_from_disk
    from scipy import sparse

    problems = []
    names_a, names_b = sorted(p.name for p in a.iterdir()), sorted(p.name for p in b.iterdir())
    if names_a != names_b:
        problems.append(f"different outputs: {sorted(set(names_a) ^ set(names_b))}")
    for name in sorted(set(names_a) & set(names_b)):
        pa_, pb_ = a / name, b / name
        if pa_.is_dir() and not (pa_ / "dataset_dict.json").exists():
            problems += [f"{name}/{line}" for line in compare_folders(pa_, pb_)]
        elif pa_.is_dir() and (pa_ / "dataset_dict.json").exists():
            sa, sb = load_from_disk(str(pa_)), load_from_disk(str(pb_))
            if sorted(sa) != sorted(sb):
                problems.append(f"{name}: splits differ: {sorted(sa)} vs {sorted(sb)}")
                continue
            for split in sorted(sa):
                da, db = sa[split], sb[split]
                if da.features != db.features:
                    problems.append(f"{name}[{split}]: features differ: {da.features} vs {db.features}")
                elif not da.with_format("arrow")[:].equals(db.with_format("arrow")[:]):
                    problems.append(f"{name}[{split}]: values differ ({len(da)} vs {len(db)} rows)")
        elif name.endswith(".npz"):
            ma, mb = sparse.load_npz(pa_), sparse.load_npz(pb_)
            if ma.shape != mb.shape or (ma != mb).nnz or ma.dtype != mb.dtype:
                problems.append(f"{name}: count matrices differ")
        elif name.endswith(".json"):
            if json.loads(pa_.read_text()) != json.loads(pb_.read_text()):
                problems.append(f"{name}: contents differ")
        elif pa_.is_file() and pa_.read_bytes() != pb_.read_bytes():
            problems.append(f"{name}: bytes differ")
    return problems


def compare(args) -> None:
    problems = compare_folders(Path(args.a), Path(args.b))
    for line in problems:
        print(line)
    count = sum(1 for p in Path(args.a).rglob("*") if (p / "dataset_dict.json").exists() or
                p.suffix in (".json", ".npz") and not any((q / "dataset_dict.json").exists() for q in p.parents))
    print(f"{count} outputs compared: " + ("identical" if not problems else "DIFFERENT"))
    sys.exit(1 if problems else 0)


def time_align_stage(tree: Path, models: Path, out: Path) -> float:
    start = time.perf_counter()
    common = token_pass(tree, models, out, "default")
    for i in range(SPLITS):
        distribution_pass(tree, out, common, i, f"default_aligned_split{i}", "--use_token_alignment_matrix",
                          "--aligned_dataset_tknz_save_dir", out / "default_tknz_aligned")
    return time.perf_counter() - start


def time_stage(args) -> None:
    models = fixture_models(Path(args.models).resolve())
    reference = Path(args.reference).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-align-") as tmp:
        sets = Path(tmp) / "sets"
        representations(ROOT, models, sets, args.max_length, (PIVOT, DIFF))
        times: dict[str, list[float]] = {"this tree": [], "reference": []}
        for _ in range(args.repeats):
            for label, tree in (("reference", reference), ("this tree", ROOT)):
                out = Path(tempfile.mkdtemp(dir=tmp))
                for entry in sets.iterdir():  # the stage reads the sets from its output folder
                    (out / entry.name).symlink_to(entry)
                times[label].append(time_align_stage(tree, models, out))
        best = {label: min(values) for label, values in times.items()}
        print(f"align stage (token pass + {SPLITS} distribution passes, default + matrix, sample corpus, "
              f"model_max_length {args.max_length}), best of {args.repeats}:")
        print(f"  reference {best['reference']:.2f} s   this tree {best['this tree']:.2f} s   "
              f"ratio {best['reference'] / best['this tree']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run")
    p.add_argument("out")
    p.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "fusechat-bench-models"))
    p.set_defaults(func=run)
    p = commands.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=compare)
    p = commands.add_parser("time")
    p.add_argument("--reference", required=True, help="root of the checkout to compare with")
    p.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "fusechat-bench-models"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max_length", type=int, default=2048)
    p.set_defaults(func=time_stage)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
