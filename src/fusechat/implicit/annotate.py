"""S2, scoring samples: a reward model's score and a verifier's verdict per response (docs/design.md 13.2).

Reward models:
* a model folder: ``AutoModelForSequenceClassification``; its input is the RM tokenizer's chat template
  over [user prompt, assistant response], no system message, no truncation; the score is
  ``output.score`` when the model returns one (ArmoRM), else the first logit, as float32;
* ``verdict``: no reward model, the verdict is the reward (1.0 correct, 0.0 wrong, null unverified);
* ``table:FILE``: a JSON object from response text to score (a stand-in for tests and replays).

A NaN score, a failed scoring or an empty response becomes null (never selected) and is logged with
its prompt_id; a reward model that scores nothing (every score null) is an error.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from . import verify

logger = logging.getLogger(__name__)
VERIFIERS = ("auto", "none", "math", "code")


class HFRewardModel:
    """A sequence-classification reward model, one score per (prompt, response)."""

    def __init__(self, path: str, batch_size: int = 8, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification

        from ..modeling import check_model_path, from_pretrained, load_tokenizer

        check_model_path(path, "--reward-model")
        self.name = path
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"--reward-model {path}: its tokenizer has no chat template")
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        self.model = from_pretrained(AutoModelForSequenceClassification, path, "reward model", dtype=dtype,
                                     trust_remote_code=trust_remote_code)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def score(self, pairs: list[tuple[list[dict], str]]) -> list[float]:
        import torch

        texts = [self.tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}],
                                                    tokenize=False) for messages, response in pairs]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], add_special_tokens=False, padding=True,
                                   return_tensors="pt").to(self.model.device)
            with torch.inference_mode():
                output = self.model(**batch)
            value = getattr(output, "score", None)
            value = output.logits[:, 0] if value is None else value.reshape(len(batch["input_ids"]), -1)[:, 0]
            scores.extend(value.float().cpu().tolist())
        return scores


class TableRewardModel:
    """Scores looked up by response text (a stand-in reward model)."""

    def __init__(self, path: str):
        from ..storage import read_json

        self.name = f"table:{path}"
        self.table = read_json(path, "--reward-model table:", "a JSON object from response text to score")
        if not isinstance(self.table, dict):
            raise InputError(f"--reward-model table:{path}: expected a JSON object from response text to score")

    def score(self, pairs: list[tuple[list[dict], str]]) -> list[float]:
        missing = [response for _, response in pairs if response not in self.table]
        if missing:
            raise InputError(f"--reward-model {self.name}: no score for the response {missing[0][:60]!r}")
        return [float(self.table[response]) for _, response in pairs]


def load_reward_model(spec: str, batch_size: int = 8, trust_remote_code: bool = False):
    """``verdict`` (None here: the verdicts become the scores), ``table:FILE``, or a model folder."""
    if spec == "verdict":
        return None
    if spec.startswith("table:"):
        return TableRewardModel(spec[len("table:"):])
    return HFRewardModel(spec, batch_size, trust_remote_code)


def verdicts_for(row: dict, prompt: dict, verifier: str, answer_rule: str, timeout: float,
                 outcomes: Counter) -> list[bool | None]:
    """The verdict of each response: the prompt's domain decides the verifier under ``auto``."""
    kind = prompt["domain"] if verifier == "auto" else verifier
    reference = prompt.get("reference") or {}
    if kind == "math" and "answer" in reference:
        found = [verify.check_math(r, reference["answer"], answer_rule) for r in row["responses"]]
        outcomes.update("math correct" if ok else "math wrong" for ok in found)
        return found
    if kind == "code" and "tests" in reference:
        results = [verify.check_code(r, reference["tests"], timeout) for r in row["responses"]]
        for i, outcome in enumerate(results):
            outcomes[f"code {outcome}"] += 1
            if outcome == "timeout":
                logger.warning("prompt_id %s, response %d: the tests ran past %.0f s and were stopped",
                               row["prompt_id"], i, timeout)
        return [outcome == "pass" for outcome in results]
    if verifier in ("math", "code") and prompt["domain"] == verifier:
        raise InputError(f"prompt_id {prompt['prompt_id']!r}: --verifier {verifier} needs a reference with "
                         f"{'an answer' if verifier == 'math' else 'tests'}")
    return [None] * len(row["responses"])


def clean_score(value, row: dict, index: int, counts: Counter) -> float | None:
    if value is None or not math.isfinite(value):
        counts["null scores"] += 1
        logger.warning("prompt_id %s, response %d: the reward model returned %s; the score is null",
                       row["prompt_id"], index, value)
        return None
    return float(value)


def annotate(rows: list[dict], prompts: list[dict], reward_model, verifier: str = "auto",
             answer_rule: str = "boxed", timeout: float = verify.CODE_TIMEOUT) -> tuple[list[dict], Counter]:
    """``rows`` with ``rm_scores`` and ``verdicts`` added, and counts of outcomes."""
    if verifier not in VERIFIERS:
        raise InputError(f"--verifier must be one of {VERIFIERS}, got {verifier!r}")
    by_id = {p["prompt_id"]: p for p in prompts}
    counts: Counter = Counter()
    scored = []
    for row in tqdm(rows, desc="scoring"):
        prompt = by_id[row["prompt_id"]]
        verdicts = verdicts_for(row, prompt, verifier, answer_rule, timeout, counts)
        if reward_model is None:
            raw = [None if v is None else float(v) for v in verdicts]
        else:
            raw = reward_model.score([(prompt["messages"], r) for r in row["responses"]])
        scores = []
        for i, (value, response) in enumerate(zip(raw, row["responses"])):
            if not response.strip():
                counts["empty responses"] += 1
                scores.append(None)
            elif reward_model is None and value is None:
                counts["unverified (no score)"] += 1
                scores.append(None)
            else:
                scores.append(clean_score(value, row, i, counts))
        scored.append({**row, "rm_scores": scores, "verdicts": verdicts})
    if all(s is None for row in scored for s in row["rm_scores"]):
        name = "the verdicts" if reward_model is None else f"reward model {reward_model.name}"
        raise InputError(f"{name} gave no usable score for any of the {sum(len(r['responses']) for r in rows)} "
                         "responses (NaN, empty or unverifiable); nothing written")
    return scored, counts


def report_path(out: str) -> Path:
    return Path(f"{out}.report.json")


def report_record(counts: Counter, reward_name: str, verifier: str, answer_rule: str, timeout: float) -> dict:
    return {"reward_model": reward_name, "verifier": verifier, "math_checker": verify.MATH_CHECKER,
            "answer_rule": answer_rule, "code_timeout_s": timeout, "counts": dict(sorted(counts.items()))}
