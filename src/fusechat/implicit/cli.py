"""Console scripts of implicit fusion (DESIGN.md 13.7): each parses flags and calls the library.

fusechat-imf-decode, -post-process, -annotate, -build, -sft, -dpo, -wrpo, -convert.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--prompts", required=True, help="prompts.jsonl (wrpo rows: the wrpo_prompts.jsonl of the split)")
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
        if source in scored:
            raise InputError(f"--scored: source {source!r} is given twice ({path})")
        scored[source] = rows
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


def build_cli() -> int:
    return run_cli(build_main, sys.argv[1:], prog="fusechat-imf-build")
