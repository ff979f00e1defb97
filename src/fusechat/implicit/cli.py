"""Console scripts of implicit fusion (docs/design.md 13.7): each parses flags and calls the library.

fusechat-imf-decode, -post-process, -annotate, -build, -sft, -dpo, -wrpo, -convert.
"""

from __future__ import annotations

import argparse
import math
import logging
import sys

from ..errors import InputError, run_cli
from ..storage import split_paths

logger = logging.getLogger("fusechat.implicit")


def _floats(value: str, flag: str, count: int) -> tuple[float, ...]:
    try:
        numbers = tuple(float(x) for x in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != count:
        raise InputError(f"{flag} takes {count} comma-separated numbers, got {value!r}")
    return numbers


def _share(value: float, flag: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{flag} must be between 0 and 1, got {value}")
    return value


# --- build --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusechat-imf-build", description=(
        "Build the SFT and DPO sets (--mode fusechat3), or the WRPO split and rows (--mode wrpo), from "
        "scored samples."))
    p.add_argument("--mode", choices=("fusechat3", "wrpo"), default="fusechat3")
    p.add_argument("--prompts", required=True, help="prompts.jsonl, the prompt set the score files were made from")
    p.add_argument("--scored", required=True, help="comma-separated scored/<source>.jsonl files, in source order")
    p.add_argument("--target-scored", default=None,
                   help="wrpo mode: the scored samples of the target-SFT model; builds wrpo.jsonl")
    p.add_argument("--out", required=True, help="output folder (sft.jsonl, dpo.jsonl / wrpo files, report.json)")
    p.add_argument("--margin", default="0.01,0.1", help="DPO reward-margin band LO,HI, both ends inclusive")
    p.add_argument("--if-sft-share", type=float, default=0.4, help="share of 'if' prompts that go to SFT")
    p.add_argument("--dpo-share", type=float, default=0.6, help="share of paired math/code prompts that go to DPO")
    p.add_argument("--wrpo-sft-share", type=float, default=1 / 3, help="wrpo mode: share of prompts for SFT")
    p.add_argument("--pair-source", choices=("best", "largest-margin", "random"), default="best")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--drop-truncated", action="store_true", help="leave out responses cut at max_tokens")
    return p


def read_scored_sources(paths: str, prompts: list[dict]) -> dict[str, list[dict]]:
    from .formats import read_samples, sources_of

    scored: dict[str, list[dict]] = {}
    for path in split_paths(paths):
        rows = read_samples(path, prompts, scored=True)
        source = sources_of(rows, path)
        if source in scored:  # one source sampled per domain (e.g. N = 5 for if, 8 for code): disjoint prompts
            overlap = {r["prompt_id"] for r in scored[source]} & {r["prompt_id"] for r in rows}
            if overlap:
                raise InputError(f"--scored {path}: source {source!r} already has prompt_id {sorted(overlap)[0]!r} "
                                 "from another file")
        scored[source] = scored.get(source, []) + rows
    if not scored:
        raise InputError("--scored: no score file given")
    return scored


def build_main(argv=None) -> None:
    from ..storage import atomic_dir, check_output_dir, write_json
    from .build import BuildSettings, build_fusechat3, build_wrpo_rows, build_wrpo_split
    from .formats import read_prompts, read_samples, sources_of, write_jsonl

    args = build_parser().parse_args(argv)
    low, high = _floats(args.margin, "--margin", 2)
    if low > high:
        raise InputError(f"--margin: LO {low} is above HI {high}")
    settings = BuildSettings((low, high), _share(args.if_sft_share, "--if-sft-share"),
                             _share(args.dpo_share, "--dpo-share"), args.pair_source, args.seed, args.drop_truncated)
    if args.target_scored and args.mode != "wrpo":
        raise InputError("--target-scored belongs to --mode wrpo")
    inputs = [args.prompts, *split_paths(args.scored), args.target_scored]
    check_output_dir(args.out, "--out", [p for p in inputs if p])
    prompts = read_prompts(args.prompts)
    scored = read_scored_sources(args.scored, prompts)
    outputs: dict[str, list[dict]] = {}
    if args.mode == "fusechat3":
        outputs["sft.jsonl"], outputs["dpo.jsonl"], report = build_fusechat3(prompts, scored, settings)
    elif args.target_scored:
        target = read_samples(args.target_scored, prompts, scored=True)
        sources_of(target, args.target_scored)
        outputs["wrpo.jsonl"], report = build_wrpo_rows(prompts, scored, target, settings)
    else:
        outputs["sft.jsonl"], outputs["wrpo_prompts.jsonl"], report = build_wrpo_split(
            prompts, scored, settings, _share(args.wrpo_sft_share, "--wrpo-sft-share"))
    report["settings"] = {"mode": args.mode, "margin": [low, high], "if_sft_share": settings.if_sft_share,
                          "dpo_share": settings.dpo_share, "pair_source": settings.pair_source,
                          "seed": settings.seed, "drop_truncated": settings.drop_truncated,
                          "sources": list(scored)}
    with atomic_dir(args.out) as tmp:
        for name, rows in outputs.items():
            write_jsonl(tmp / name, rows)
        write_json(tmp / "report.json", report)
    for name, rows in outputs.items():
        logger.info("%s: %d rows", name, len(rows))
    for reason, ids in report["dropped"].items():
        logger.info("dropped %d prompts: %s", len(ids), reason)


def build_cli(argv=None) -> int:
    return run_cli(build_main, argv, prog="fusechat-imf-build")


# --- decode -------------------------------------------------------------------------------------


def _optional_float(value: str):
    return None if value.lower() == "none" else float(value)


def _optional_int(value: str):
    return None if value.lower() == "none" else int(value)


def decode_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusechat-imf-decode", description=(
        "Sample N responses per prompt from one source model, one pass per seed."))
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--prompts", required=True, help="prompts.jsonl")
    p.add_argument("--out", required=True, help="samples/<source>.jsonl")
    p.add_argument("--source", default=None, help="source name written into the rows (default: the folder name)")
    p.add_argument("--domains", default=None, help="comma-separated domains to sample (default: all)")
    p.add_argument("--seeds", default="13,21,42,79,100", help="one sample per seed")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=_optional_float, default=0.95)
    p.add_argument("--top-k", type=_optional_int, default=None)
    p.add_argument("--repetition-penalty", type=_optional_float, default=None)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--conv-temp", default=None, help="a project template instead of the tokenizer's chat template")
    p.add_argument("--batch-size", type=int, default=8)
    return p


def decode_main(argv=None) -> None:
    from ..storage import check_output_file
    from .decode import decode, default_source_name, sampling_record
    from .formats import DOMAINS, read_prompts, write_jsonl

    args = decode_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in split_paths(args.seeds)]
    except ValueError:
        raise InputError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    if not seeds or args.max_tokens < 1:
        raise InputError("--seeds needs at least one seed and --max-tokens at least 1")
    check_output_file(args.out, "--out", [args.prompts, args.model])
    prompts = read_prompts(args.prompts)
    if args.domains:
        wanted = split_paths(args.domains)
        unknown = [d for d in wanted if d not in DOMAINS]
        if unknown:
            raise InputError(f"--domains: unknown domain {unknown[0]!r}; choose from {', '.join(DOMAINS)}")
        prompts = [p for p in prompts if p["domain"] in wanted]
        if not prompts:
            raise InputError(f"--domains {args.domains}: no prompt of these domains in {args.prompts}")
    sampling = sampling_record(args.temperature, args.top_p, args.top_k, args.repetition_penalty, args.max_tokens,
                               args.backend)
    rows = decode(args.model, prompts, args.source or default_source_name(args.model), seeds, sampling,
                  args.backend, args.conv_temp, args.batch_size)
    write_jsonl(args.out, rows)


def decode_cli(argv=None) -> int:
    return run_cli(decode_main, argv, prog="fusechat-imf-decode")


# --- post-process -------------------------------------------------------------------------------


def post_process_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusechat-imf-post-process", description=(
        "Merge samples files of one source by prompt_id (seeds in the order given); drop prompts whose "
        "responses are all identical, listing them in OUT.dropped.json."))
    p.add_argument("--prompts", required=True)
    p.add_argument("--samples", required=True, help="comma-separated samples files of one source")
    p.add_argument("--out", required=True)
    return p


def post_process_main(argv=None) -> None:
    from ..storage import check_output_file, write_json
    from .formats import read_prompts, read_samples, sources_of, write_jsonl
    from .post_process import merge_samples

    args = post_process_parser().parse_args(argv)
    paths = split_paths(args.samples)
    if not paths:
        raise InputError("--samples: no file given")
    check_output_file(args.out, "--out", [args.prompts, *paths])
    prompts = read_prompts(args.prompts)
    files = []
    for path in paths:
        rows = read_samples(path, prompts)
        sources_of(rows, path)
        files.append((path, rows))
    rows, identical = merge_samples(files)
    write_json(f"{args.out}.dropped.json", {"all responses identical": identical})
    write_jsonl(args.out, rows)
    logger.info("%d prompts kept, %d dropped (all responses identical, listed in %s.dropped.json)",
                len(rows), len(identical), args.out)


def post_process_cli(argv=None) -> int:
    return run_cli(post_process_main, argv, prog="fusechat-imf-post-process")


# --- annotate -----------------------------------------------------------------------------------


def annotate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusechat-imf-annotate", description=(
        "Score every response: a reward model (a folder, 'verdict' or 'table:FILE') and a verifier for math "
        "and code prompts. Writes scored/<source>.jsonl and OUT.report.json."))
    p.add_argument("--prompts", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--reward-model", required=True,
                   help="a sequence-classification model folder; 'verdict' (the verdict is the reward); "
                        "'table:FILE' (scores by response text)")
    p.add_argument("--verifier", choices=("auto", "none", "math", "code"), default="auto",
                   help="auto: math and code prompts with a reference are verified")
    p.add_argument("--answer", choices=("boxed", "boxed-or-last-number"), default="boxed",
                   help="how a math response's final answer is found")
    p.add_argument("--code-timeout", type=float, default=10.0, help="seconds per response's tests")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--trust-remote-code", action="store_true", help="for reward models such as ArmoRM")
    return p


def annotate_main(argv=None) -> None:
    from ..storage import check_output_file, write_json
    from .annotate import annotate, load_reward_model, report_path, report_record
    from .formats import read_prompts, read_samples, sources_of, write_jsonl

    args = annotate_parser().parse_args(argv)
    if args.code_timeout <= 0:
        raise InputError(f"--code-timeout must be positive, got {args.code_timeout}")
    check_output_file(args.out, "--out", [args.prompts, args.samples, args.reward_model.removeprefix("table:")])
    prompts = read_prompts(args.prompts)
    rows = read_samples(args.samples, prompts)
    sources_of(rows, args.samples)
    reward_model = load_reward_model(args.reward_model, args.batch_size, args.trust_remote_code)
    scored, counts = annotate(rows, prompts, reward_model, args.verifier, args.answer, args.code_timeout)
    name = args.reward_model if reward_model is None else reward_model.name
    write_json(report_path(args.out), report_record(counts, name, args.verifier, args.answer, args.code_timeout))
    write_jsonl(args.out, scored)
    logger.info("scored %d prompts: %s", len(scored), dict(sorted(counts.items())))


def annotate_cli(argv=None) -> int:
    return run_cli(annotate_main, argv, prog="fusechat-imf-annotate")


# --- training stages ----------------------------------------------------------------------------


def _train_parser(prog: str, description: str, learning_rate: float) -> argparse.ArgumentParser:
    from .training import add_train_flags

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model", required=True, help="model folder to start from")
    p.add_argument("--data", required=True, help="the training set")
    p.add_argument("--out", required=True, help="output folder: the trained model and metrics.json")
    add_train_flags(p, learning_rate)
    return p


def sft_parser() -> argparse.ArgumentParser:
    p = _train_parser("fusechat-imf-sft", "Supervised fine-tuning on sft.jsonl (TRL SFTTrainer).", 5e-6)
    p.add_argument("--mode", choices=("fusechat3", "wrpo"), default="fusechat3",
                   help="fusechat3: loss on replies only, no packing; wrpo: whole text, packed (as the released run)")
    return p


def _start_run(args, data_reader):
    from ..storage import check_output_dir
    from .training import load_policy, settings_from

    settings = settings_from(args)
    check_output_dir(args.out, "--out", [args.model, args.data])
    rows = data_reader(args.data)
    if not rows:
        raise InputError(f"--data {args.data}: no rows to train on")
    model, tokenizer = load_policy(args.model)
    return settings, rows, model, tokenizer


def _train_and_save(make_trainer, out: str, record: dict) -> None:
    from ..storage import atomic_dir
    from .training import save_run

    with atomic_dir(out) as tmp:
        trainer = make_trainer(str(tmp))
        trainer.train()
        save_run(trainer, tmp, record)
    logger.info("saved the trained model to %s", out)


def sft_main(argv=None) -> None:
    from .formats import read_sft
    from .sft import sft_trainer
    from .training import settings_record

    args = sft_parser().parse_args(argv)
    settings, rows, model, tokenizer = _start_run(args, read_sft)
    record = {"stage": "sft", "mode": args.mode, "model": args.model, "data": args.data, "rows": len(rows),
              **settings_record(settings)}
    _train_and_save(lambda out: sft_trainer(model, tokenizer, rows, args.mode, settings, out), args.out, record)


def sft_cli(argv=None) -> int:
    return run_cli(sft_main, argv, prog="fusechat-imf-sft")


def dpo_parser() -> argparse.ArgumentParser:
    p = _train_parser("fusechat-imf-dpo", "DPO on dpo.jsonl (TRL DPOTrainer); the reference is a frozen copy of "
                      "--model.", 1e-6)
    p.add_argument("--loss", choices=("sigmoid", "sigmoid_norm"), default="sigmoid",
                   help="sigmoid: DPO; sigmoid_norm: length-normalised DPO (FuseChat-3.0's Llama runs)")
    p.add_argument("--beta", type=float, default=0.01)
    return p


def dpo_main(argv=None) -> None:
    from .dpo import dpo_trainer
    from .formats import read_dpo
    from .training import settings_record

    args = dpo_parser().parse_args(argv)
    if args.beta <= 0:
        raise InputError(f"--beta must be positive, got {args.beta}")
    settings, rows, model, tokenizer = _start_run(args, read_dpo)
    record = {"stage": "dpo", "loss": args.loss, "beta": args.beta, "model": args.model, "data": args.data,
              "rows": len(rows), **settings_record(settings)}
    _train_and_save(lambda out: dpo_trainer(model, tokenizer, rows, args.loss, args.beta, settings, out),
                    args.out, record)


def dpo_cli(argv=None) -> int:
    return run_cli(dpo_main, argv, prog="fusechat-imf-dpo")


def wrpo_parser() -> argparse.ArgumentParser:
    p = _train_parser("fusechat-imf-wrpo", "WRPO on wrpo.jsonl or a released WRPO dataset folder; a released "
                      "config YAML gives the defaults (--config).", 3e-7)
    p.add_argument("--config", default=None, help="a released WRPO YAML (beta, alpha, is_dynamic, loss_type, ...)")
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=0.1, help="alpha at the end of the ramp")
    p.add_argument("--is-dynamic", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                   help="true: alpha ramps from 0 (the released default); false: alpha throughout")
    p.add_argument("--loss-type", choices=("wrpo", "sigmoid"), default="wrpo",
                   help="sigmoid: the mean of DPO(ws > l) and DPO(wt > l), the released baseline")
    p.add_argument("--max-prompt-length", type=int, default=1800)
    p.add_argument("--truncation", choices=("default", "reference"), default="default")
    return p


def read_wrpo_data(path: str) -> list[dict]:
    """wrpo.jsonl, or a released WRPO DatasetDict folder (its train split)."""
    from pathlib import Path

    from .formats import read_wrpo, wrpo_from_release

    if Path(path).is_dir():
        from ..storage import load_dataset_dir

        data = load_dataset_dir(path, "WRPO dataset")
        split = data["train"] if "train" in data else None
        if split is None:
            raise InputError(f"--data {path}: the dataset has no train split")
        return [wrpo_from_release(row, f"{path} train row {i + 1}") for i, row in enumerate(split)]
    return read_wrpo(path)


def wrpo_main(argv=None) -> None:
    from .config import apply_wrpo_yaml
    from ..modeling import load_causal_lm
    from .training import settings_record
    from .wrpo_trainer import WRPOSettings, wrpo_trainer

    parser = wrpo_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    notes = apply_wrpo_yaml(parser, argv)
    args = parser.parse_args(argv)
    for note in notes:
        logger.info("%s", note)
    wrpo = WRPOSettings(args.beta, args.alpha, args.is_dynamic, args.loss_type, args.max_length,
                        args.max_prompt_length, args.truncation)
    settings, rows, model, tokenizer = _start_run(args, read_wrpo_data)
    ref_model = load_causal_lm(args.model)  # the frozen reference: a second copy of the initial policy
    record = {"stage": "wrpo", **wrpo.__dict__, "model": args.model, "data": args.data, "rows": len(rows),
              **settings_record(settings)}
    _train_and_save(lambda out: wrpo_trainer(model, ref_model, tokenizer, rows, wrpo, settings, out),
                    args.out, record)


def wrpo_cli(argv=None) -> int:
    return run_cli(wrpo_main, argv, prog="fusechat-imf-wrpo")


# --- convert ------------------------------------------------------------------------------------

CONVERSIONS = {
    "sharegpt": "sft.jsonl -> the ShareGPT JSON of FuseChat's training path",
    "wrpo-release": "wrpo.jsonl -> the released WRPO DatasetDict folder (train, test)",
    "wrpo": "a released WRPO DatasetDict folder -> wrpo.jsonl",
    "imf": "released FuseChat-3.0 data (train.json: 'messages' or 'prompt'/'chosen'/'rejected') -> sft/dpo.jsonl",
}


def convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusechat-imf-convert", description="Convert to and from the released row "
                                "shapes: " + "; ".join(f"{k}: {v}" for k, v in CONVERSIONS.items()))
    p.add_argument("--to", required=True, choices=sorted(CONVERSIONS))
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--test-share", type=float, default=0.0, help="wrpo-release: share of rows in the test split")
    return p


def convert_main(argv=None) -> None:
    from ..storage import check_output_dir, check_output_file, write_json
    from . import formats

    args = convert_parser().parse_args(argv)
    if args.to == "wrpo-release":
        from datasets import Dataset, DatasetDict

        from ..storage import save_dataset_atomic

        check_output_dir(args.output, "output", [args.input])
        rows = [formats.wrpo_to_release(r) for r in formats.read_wrpo(args.input)]
        cut = len(rows) - math.floor(len(rows) * _share(args.test_share, "--test-share") + 0.5)
        save_dataset_atomic(DatasetDict({"train": Dataset.from_list(rows[:cut]),
                                         "test": Dataset.from_list(rows[cut:])}), args.output)
        return
    check_output_file(args.output, "output", [args.input])
    if args.to == "sharegpt":
        write_json(args.output, [formats.sft_to_sharegpt(r) for r in formats.read_sft(args.input)])
    elif args.to == "wrpo":
        formats.write_jsonl(args.output, read_wrpo_data(args.input))
    else:
        kind, rows = formats.import_released(formats.read_json_rows(args.input, "released data"), args.input)
        logger.info("%s: %d %s rows", args.input, len(rows), kind.upper())
        formats.write_jsonl(args.output, rows)


def convert_cli(argv=None) -> int:
    return run_cli(convert_main, argv, prog="fusechat-imf-convert")


STAGES = {"decode": decode_main, "post-process": post_process_main, "annotate": annotate_main,
          "build": build_main, "sft": sft_main, "dpo": dpo_main, "wrpo": wrpo_main, "convert": convert_main}


def main(argv=None) -> int:
    """``python -m fusechat.implicit STAGE ...``: the console scripts without an installed entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m fusechat.implicit {{{','.join(STAGES)}}} ...", file=sys.stderr)
        return 2
    return run_cli(STAGES[argv[0]], argv[1:], prog=f"fusechat-imf-{argv[0]}")
