"""FuseLLM's benchmarks that lm-evaluation-harness covers (docs/design.md 12.9), beside the published figures.

    python -m fusechat.fusellm.evaluation MODEL_DIR [--output_dir DIR] [--benchmarks BBH,ARC-easy,...]
        [--limit N] [--batch_size B] [--device cpu] [--include_path DIR --extra "Name=task:metric:shots"]

Each benchmark runs through lm_eval's Python API (the model is loaded once), with the paper's shot
counts: zero-shot ARC-easy/challenge, BoolQ, HellaSwag, OpenBookQA; BBH 3-shot chain-of-thought
(group ``bbh_cot_fewshot``, reported as the plain mean over its 27 tasks, as open-instruct
averages); TriviaQA, DROP and LAMBADA with their lm_eval defaults. Scores are percentages. A task
whose data cannot be loaded (the harness downloads from the Hugging Face Hub) is reported with the
reason and the others still run. ``--add_bos_token`` is off by default: harness v0.3.0, which
produced the published common-sense figures, encoded without special tokens.

Writes ``results.json`` (scores, errors, lm_eval's raw metrics) and ``table.md``: ours beside
FuseLLM-7B and Llama-2-7B of ``data/fusellm_published_results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, run_cli
from ..storage import atomic_file, write_json

logger = logging.getLogger(__name__)

PUBLISHED = Path(__file__).resolve().parents[3] / "data" / "fusellm_published_results.json"
COMPARED = ("FuseLLM-7B", "Llama-2-7B")


@dataclass(frozen=True)
class Benchmark:
    name: str  # as in the published table
    task: str  # lm_eval task or group
    metric: str  # lm_eval result key, "metric,filter"
    num_fewshot: int | None  # None: the task's default

    @classmethod
    def parse(cls, spec: str) -> "Benchmark":
        """``Name=task:metric:shots`` (shots may be empty for the task's default)."""
        try:
            name, rest = spec.split("=", 1)
            task, metric, shots = rest.rsplit(":", 2)
        except ValueError:
            raise InputError(f"--extra {spec!r}: expected Name=task:metric,filter:shots") from None
        return cls(name.strip(), task.strip(), metric.strip(), int(shots) if shots.strip() else None)


BENCHMARKS = (
    Benchmark("BBH", "bbh_cot_fewshot", "exact_match,get-answer", 3),
    Benchmark("ARC-easy", "arc_easy", "acc_norm,none", 0),
    Benchmark("ARC-challenge", "arc_challenge", "acc_norm,none", 0),
    Benchmark("BoolQ", "boolq", "acc,none", 0),
    Benchmark("HellaSwag", "hellaswag", "acc_norm,none", 0),
    Benchmark("OpenBookQA", "openbookqa", "acc_norm,none", 0),
    Benchmark("TriviaQA", "triviaqa", "exact_match,remove_whitespace", None),
    Benchmark("DROP", "drop", "em,none", None),
    Benchmark("LAMBADA", "lambada_openai", "acc,none", 0),
)
NOT_COVERED = {"MultiPL-E": "bigcode-evaluation-harness (multiple-<lang>)",
               "IWSLT2017": "OpenCompass (en-de); lm_eval has only en-ar",
               "SciBench": "OpenCompass"}


def select_benchmarks(names: str | None, extra: list[str]) -> list[Benchmark]:
    known = {b.name: b for b in BENCHMARKS}
    chosen = list(BENCHMARKS)
    if names is not None:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise InputError(f"--benchmarks: unknown {unknown}; choose from {', '.join(known)}")
        chosen = [known[n] for n in wanted]
    return chosen + [Benchmark.parse(spec) for spec in extra]


def load_task(benchmark: Benchmark, task_manager) -> str | None:
    """None when the task and its data load; otherwise the reason, for the table."""
    from lm_eval.tasks import get_task_dict

    try:
        get_task_dict([benchmark.task], task_manager)
    except Exception as exc:  # the harness raises whatever datasets/hub raise
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return (f"lm_eval task {benchmark.task!r} could not load its data ({type(exc).__name__}: {first_line}); "
                f"it downloads from the Hugging Face Hub: run with network access or a filled HF_DATASETS_CACHE")
    return None


def score_of(results: dict, benchmark: Benchmark) -> float:
    """The benchmark's score in percent; a group is the plain mean of its tasks (open-instruct's BBH average)."""
    per_task = results["results"]
    subtasks = results.get("group_subtasks", {}).get(benchmark.task) or []
    if subtasks:
        values = [per_task[t][benchmark.metric] for t in subtasks if benchmark.metric in per_task.get(t, {})]
        if not values:
            raise InputError(f"{benchmark.name}: no task of group {benchmark.task} reports {benchmark.metric}")
        return 100.0 * sum(values) / len(values)
    if benchmark.metric not in per_task.get(benchmark.task, {}):
        raise InputError(f"{benchmark.name}: lm_eval reported {sorted(per_task.get(benchmark.task, {}))} for "
                         f"{benchmark.task}, not {benchmark.metric}")
    return 100.0 * per_task[benchmark.task][benchmark.metric]


def evaluate(model_dir: str, benchmarks: list[Benchmark], *, batch_size: int = 1, device: str = "cpu",
             limit: int | None = None, include_path: str | None = None, add_bos_token: bool = False) -> dict:
    """{benchmark name: {"score": float} or {"error": str}, ...} plus lm_eval's raw results per benchmark."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task_manager = TaskManager(include_path=include_path)
    loadable = {b.name: load_task(b, task_manager) for b in benchmarks}
    out: dict = {"scores": {}, "raw": {}}
    for benchmark in benchmarks:
        if loadable[benchmark.name]:
            logger.error("%s: %s", benchmark.name, loadable[benchmark.name])
            out["scores"][benchmark.name] = {"error": loadable[benchmark.name]}
    runnable = [b for b in benchmarks if not loadable[b.name]]
    if not runnable:
        return out
    model = HFLM(pretrained=model_dir, device=device, batch_size=batch_size, add_bos_token=add_bos_token)
    for benchmark in runnable:
        logger.info("%s: lm_eval task %s, %s-shot", benchmark.name, benchmark.task,
                    "default" if benchmark.num_fewshot is None else benchmark.num_fewshot)
        results = simple_evaluate(model=model, tasks=[benchmark.task], num_fewshot=benchmark.num_fewshot,
                                  limit=limit, task_manager=task_manager, log_samples=False, bootstrap_iters=0)
        out["scores"][benchmark.name] = {"score": score_of(results, benchmark)}
        out["raw"][benchmark.name] = results["results"]
    return out


def load_published(path: Path = PUBLISHED) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"published results {path}: {exc}") from exc


def format_table(benchmarks: list[Benchmark], scores: dict, published: dict, model_name: str) -> str:
    def cell(value) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"

    header = ["benchmark", "lm_eval task", "shots", "metric", model_name, *COMPARED]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for b in benchmarks:
        result = scores.get(b.name, {})
        ours = cell(result.get("score")) if "score" in result else "n/a"
        if "error" in result:
            notes.append(f"- {b.name}: {result['error']}")
        shots = "default" if b.num_fewshot is None else str(b.num_fewshot)
        lines.append(f"| {b.name} | {b.task} | {shots} | {b.metric} | {ours} | "
                     + " | ".join(cell(published["models"].get(m, {}).get(b.name)) for m in COMPARED) + " |")
    for name, where in NOT_COVERED.items():
        lines.append(f"| {name} | (not in lm_eval: {where}) | | | | "
                     + " | ".join(cell(published["models"].get(m, {}).get(name)) for m in COMPARED) + " |")
    text = "\n".join(lines) + f"\n\nPublished figures: {published.get('source', '')}.\n"
    if notes:
        text += "\nNot run:\n" + "\n".join(notes) + "\n"
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="eval_fusellm", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--output_dir", help="default: MODEL_DIR/eval_fusellm")
    parser.add_argument("--benchmarks", help=f"comma-separated subset of {', '.join(b.name for b in BENCHMARKS)}")
    parser.add_argument("--extra", action="append", default=[], help="another task: Name=task:metric,filter:shots")
    parser.add_argument("--include_path", help="folder of custom lm_eval task YAML files")
    parser.add_argument("--limit", type=int, help="examples per task (debugging; published figures use all)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--add_bos_token", action="store_true", help="prepend BOS (harness v0.3.0 did not)")
    parser.add_argument("--published", default=str(PUBLISHED), help="JSON of the published figures")
    args = parser.parse_args(argv)

    if not (Path(args.model_dir) / "config.json").is_file():
        raise InputError(f"MODEL_DIR {args.model_dir}: no config.json (not a saved model folder)")
    published = load_published(Path(args.published))
    benchmarks = select_benchmarks(args.benchmarks, args.extra)
    result = evaluate(args.model_dir, benchmarks, batch_size=args.batch_size, device=args.device, limit=args.limit,
                      include_path=args.include_path, add_bos_token=args.add_bos_token)
    output_dir = Path(args.output_dir or Path(args.model_dir) / "eval_fusellm")
    output_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(benchmarks, result["scores"], published, Path(args.model_dir).name)
    write_json(output_dir / "results.json", {"model": args.model_dir, "limit": args.limit, **result})
    with atomic_file(output_dir / "table.md") as handle:
        handle.write(table)
    print(table)
    return result


def cli(argv: list[str] | None = None) -> int:
    """Entry point of fusellm-eval (python -m fusechat.fusellm.evaluation)."""
    return run_cli(main, argv, prog="eval_fusellm")


if __name__ == "__main__":
    raise SystemExit(cli())
