"""S3, building the training sets from scored samples (docs/design.md 13.2, 13.6.2 A1-A5).

FuseChat-3.0 mode: per prompt, the SFT row is the best response over every source and sample, the
DPO pair is one source's best against the same source's worst; SFT and DPO prompts are disjoint.
WRPO mode: a random third of the prompts gives the SFT set (best source response); the other two
thirds are sampled again from the target-SFT model, and each WRPO row pairs the best source
response with the target's best and worst samples.

Ties go to the first candidate in (source order, sample order). A null score (NaN, failed scoring,
empty response) is never selected. Every prompt left out is counted under a reason.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

from .formats import assistant, prompt_text

MARGIN_SLACK = 1e-9  # the band's ends are inclusive; this absorbs float error in score differences
PAIR_SOURCE_RULES = ("best", "largest-margin", "random")


@dataclass(frozen=True)
class Candidate:
    source: str
    index: int  # sample index within the source
    text: str
    score: float
    verdict: bool | None


@dataclass(frozen=True)
class BuildSettings:
    margin: tuple[float, float] = (0.01, 0.1)
    if_sft_share: float = 0.4
    dpo_share: float = 0.6
    pair_source: str = "best"
    seed: int = 42
    drop_truncated: bool = False


def share_count(n: int, share: float) -> int:
    """round(n * share), halves rounded up: 51,098 x 0.4 gives 20,439."""
    return math.floor(n * share + 0.5)


def seeded_split(ids: list[str], first_share: float, seed: int) -> tuple[set[str], set[str]]:
    """Shuffle ``ids`` (in their given order) with ``seed``; the first share, the rest."""
    order = list(ids)
    random.Random(seed).shuffle(order)
    cut = share_count(len(order), first_share)
    return set(order[:cut]), set(order[cut:])


def candidates(scored_rows: list[tuple[str, dict]], drop_truncated: bool, counts: dict) -> list[list[Candidate]]:
    """Per source (in the given order), its selectable samples: a score, a non-empty text."""
    per_source = []
    for source, row in scored_rows:
        kept = []
        for i, text in enumerate(row["responses"]):
            if row["finish_reasons"][i] == "length":
                counts["truncated_responses"] += 1
                if drop_truncated:
                    continue
            if row["rm_scores"][i] is None or not text.strip():
                counts["unselectable_responses"] += 1
                continue
            kept.append(Candidate(source, i, text, float(row["rm_scores"][i]), row["verdicts"][i]))
        per_source.append(kept)
    return per_source


def best(items: list[Candidate]) -> Candidate | None:
    """Highest score; the first on ties."""
    top = None
    for c in items:
        if top is None or c.score > top.score:
            top = c
    return top


def worst(items: list[Candidate]) -> Candidate | None:
    """Lowest score; the first on ties."""
    low = None
    for c in items:
        if low is None or c.score < low.score:
            low = c
    return low


def in_band(margin: float, band: tuple[float, float] | None) -> bool:
    return band is None or band[0] - MARGIN_SLACK <= margin <= band[1] + MARGIN_SLACK


def source_pair(samples: list[Candidate], domain: str, band) -> tuple[Candidate, Candidate] | None:
    """One source's DPO pair: best vs worst (if, zh); best correct vs worst incorrect (math, code)."""
    if domain in ("math", "code"):
        chosen, rejected = best([c for c in samples if c.verdict is True]), worst([c for c in samples if c.verdict is False])
    else:
        chosen, rejected = best(samples), worst(samples)
    if chosen is None or rejected is None:
        return None
    return (chosen, rejected) if in_band(chosen.score - rejected.score, band) else None


def choose_pair(pairs: list[tuple[Candidate, Candidate]], rule: str, rng: random.Random):
    """A1: several sources have a pair; ``best``: highest chosen score, then larger margin, then source order."""
    if not pairs:
        return None
    if rule == "random":
        return pairs[rng.randrange(len(pairs))]
    margin = [c.score - r.score for c, r in pairs]
    if rule == "largest-margin":
        key = [(m, c.score) for m, (c, _) in zip(margin, pairs)]
    else:
        key = [(c.score, m) for m, (c, _) in zip(margin, pairs)]
    top = 0
    for i in range(1, len(pairs)):
        if key[i] > key[top]:  # strictly greater: the earlier source wins ties
            top = i
    return pairs[top]


def sft_row(prompt: dict, c: Candidate) -> dict:
    return {"prompt_id": prompt["prompt_id"], "domain": prompt["domain"],
            "messages": [*prompt["messages"], assistant(c.text)], "source": c.source, "rm_score": c.score}


def dpo_row(prompt: dict, pair: tuple[Candidate, Candidate]) -> dict:
    chosen, rejected = pair
    return {"prompt_id": prompt["prompt_id"], "domain": prompt["domain"], "prompt": prompt["messages"],
            "chosen": [assistant(chosen.text)], "rejected": [assistant(rejected.text)], "source": chosen.source,
            "score_chosen": chosen.score, "score_rejected": rejected.score}


def _scored_by_prompt(prompts, scored: dict[str, list[dict]]) -> dict[str, list[tuple[str, dict]]]:
    by_prompt: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for source, rows in scored.items():  # dict order = the fixed source order
        for row in rows:
            by_prompt[row["prompt_id"]].append((source, row))
    return by_prompt


def new_report() -> dict:
    return {"counts": defaultdict(int), "dropped": defaultdict(list)}


def finish_report(report: dict) -> dict:
    return {"counts": dict(sorted(report["counts"].items())),
            "dropped": {reason: ids for reason, ids in sorted(report["dropped"].items())}}


def build_fusechat3(prompts: list[dict], scored: dict[str, list[dict]], settings: BuildSettings):
    """``(sft_rows, dpo_rows, report)`` of FuseChat-3.0 mode; ``scored`` maps source -> scored rows, in
    the fixed source order."""
    report = new_report()
    counts, dropped = report["counts"], report["dropped"]
    by_prompt = _scored_by_prompt(prompts, scored)
    rng = random.Random(settings.seed)
    sft, dpo = {}, {}
    pairs, best_correct = {}, {}
    sampled = []
    for prompt in prompts:
        pid, domain = prompt["prompt_id"], prompt["domain"]
        if pid not in by_prompt:
            dropped["not sampled"].append(pid)
            continue
        per_source = candidates(by_prompt[pid], settings.drop_truncated, counts)
        flat = [c for samples in per_source for c in samples]
        if not flat:
            dropped["no scored response"].append(pid)
            continue
        sampled.append(prompt)
        if domain in ("math", "code"):
            best_correct[pid] = best([c for c in flat if c.verdict is True])
        else:
            best_correct[pid] = best(flat)
        band = None if domain == "code" else settings.margin  # A5: no band for code
        if domain != "zh":
            found = [p for p in (source_pair(s, domain, band) for s in per_source) if p is not None]
            pairs[pid] = choose_pair(found, settings.pair_source, rng)

    # The split (A3): 'if' prompts at random; math/code among those with a valid pair; zh all SFT.
    if_ids = [p["prompt_id"] for p in sampled if p["domain"] == "if"]
    if_sft, _ = seeded_split(if_ids, settings.if_sft_share, settings.seed)
    paired = [p["prompt_id"] for p in sampled if p["domain"] in ("math", "code") and pairs.get(p["prompt_id"])]
    to_dpo, _ = seeded_split(paired, settings.dpo_share, settings.seed)
    for prompt in sampled:
        pid, domain = prompt["prompt_id"], prompt["domain"]
        goes_to_dpo = (domain == "if" and pid not in if_sft) or pid in to_dpo
        if goes_to_dpo:
            if pairs.get(pid) is None:
                dropped["no same-source pair in the margin band" if domain == "if" else "no pair"].append(pid)
            else:
                dpo[pid] = dpo_row(prompt, pairs[pid])
            continue
        chosen = best_correct[pid]
        if chosen is None:
            dropped["all responses fail" if domain == "code" else "no correct response"].append(pid)
        else:
            sft[pid] = sft_row(prompt, chosen)
    for rows, name in ((sft, "sft_rows"), (dpo, "dpo_rows")):
        for row in rows.values():
            counts[f"{name}.{row['domain']}"] += 1
    order = [p["prompt_id"] for p in prompts]
    return ([sft[p] for p in order if p in sft], [dpo[p] for p in order if p in dpo], finish_report(report))


def best_source_response(prompt: dict, scored_rows, settings: BuildSettings, counts) -> Candidate | None:
    """y_ws: the best response over every source and sample; for math and code, the best correct one
    (as FuseChat-3.0's SFT rows: a verified-wrong answer is never the response to imitate)."""
    flat = [c for s in candidates(scored_rows, settings.drop_truncated, counts) for c in s]
    if prompt["domain"] in ("math", "code"):
        flat = [c for c in flat if c.verdict is True]
    return best(flat)


def build_wrpo_split(prompts: list[dict], scored: dict[str, list[dict]], settings: BuildSettings,
                     sft_share: float = 1 / 3):
    """``(sft_rows, wrpo_prompts, report)``: the best source response on a random third of the prompts,
    and the other prompts, to be sampled from the target-SFT model."""
    report = new_report()
    counts, dropped = report["counts"], report["dropped"]
    by_prompt = _scored_by_prompt(prompts, scored)
    usable = []
    top = {}
    for prompt in prompts:
        pid = prompt["prompt_id"]
        top[pid] = best_source_response(prompt, by_prompt.get(pid, []), settings, counts)
        if pid not in by_prompt:
            dropped["not sampled"].append(pid)
        elif top[pid] is None:
            dropped["no scored (for math and code: correct) source response"].append(pid)
        else:
            usable.append(prompt)
    sft_ids, _ = seeded_split([p["prompt_id"] for p in usable], sft_share, settings.seed)
    sft = [sft_row(p, top[p["prompt_id"]]) for p in usable if p["prompt_id"] in sft_ids]
    rest = [p for p in usable if p["prompt_id"] not in sft_ids]
    counts["sft_rows"], counts["wrpo_prompts"] = len(sft), len(rest)
    return sft, rest, finish_report(report)


def build_wrpo_rows(prompts: list[dict], scored: dict[str, list[dict]], target_scored: list[dict],
                    settings: BuildSettings):
    """``(wrpo_rows, report)`` for the prompts of ``target_scored``: y_ws = best source response; y_wt, y_l =
    best and worst target sample. ``prompts`` is the whole prompt set the source files were made from."""
    report = new_report()
    counts, dropped = report["counts"], report["dropped"]
    by_prompt = _scored_by_prompt(prompts, scored)
    target = {row["prompt_id"]: row for row in target_scored}
    rows = []
    for prompt in prompts:  # the prompts the target-SFT model was sampled on (the split's two thirds)
        pid = prompt["prompt_id"]
        if pid not in target:
            continue
        ws = best_source_response(prompt, by_prompt.get(pid, []), settings, counts)
        if ws is None:
            dropped["no scored (for math and code: correct) source response"].append(pid)
            continue
        if len(set(target[pid]["responses"])) == 1:
            dropped["all target samples identical"].append(pid)
            continue
        (mine,) = candidates([("target", target[pid])], settings.drop_truncated, counts)
        wt, low = best(mine), worst(mine)
        if wt is None:
            dropped["no scored target sample"].append(pid)
            continue
        if wt.index == low.index:
            counts["tied target scores (y_wt = y_l)"] += 1
        rows.append({"prompt_id": pid, "prompt": prompt["messages"], "chosen_source": [assistant(ws.text)],
                     "chosen_target": [assistant(wt.text)], "rejected": [assistant(low.text)],
                     "source_of_ws": ws.source, "scores": {"ws": ws.score, "wt": wt.score, "l": low.score}})
    counts["wrpo_rows"] = len(rows)
    return rows, finish_report(report)


__all__ = ["BuildSettings", "build_fusechat3", "build_wrpo_split", "build_wrpo_rows", "prompt_text"]
