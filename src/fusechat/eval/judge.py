"""MT-Bench single-answer grading with an LLM judge over an OpenAI-compatible API (docs/design.md 10).

Each question gives two matches per model: turn 1 with the single-turn prompt and turn 2 with
its multi-turn form. Questions in the reference categories (math, reasoning, coding) use the
reference-based prompt and the judge's reference answers
(``reference_answer/{judge_model}.jsonl``). The verdict's score is the number in ``[[rating]]``
(or ``[rating]``), -1 when there is none. Judgments are appended to
``model_judgment/{judge_model}_single.jsonl`` as they finish; a rerun skips the matches already
judged, so an interrupted run loses nothing finished.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from .jsonl import JsonlAppender, read_jsonl, read_jsonl_if_exists
from .questions import NEED_REF_CATEGORIES, load_answers

logger = logging.getLogger(__name__)

PROMPT_FIELDS = ("name", "type", "system_prompt", "prompt_template", "output_format")
MULTI_TURN_SUFFIX = "-multi-turn"
DEFAULT_PROMPT, DEFAULT_REF_PROMPT = "single-v1", "single-math-v1"
DEFAULT_API_BASE = "https://api.openai.com/v1"
RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
RETRY_STATUS = {408, 409, 429} | set(range(500, 600))
MIN_SCORE, MAX_SCORE, MISSING_SCORE = 1, 10, -1


# --- prompts, matches, scores (pure) ------------------------------------------------------------


def load_judge_prompts(path: str | os.PathLike) -> dict[str, dict]:
    prompts = {}
    for lineno, record in enumerate(read_jsonl(path, "judge prompt file"), 1):
        missing = [f for f in PROMPT_FIELDS if f not in record]
        if missing:
            raise InputError(f"{path}: judge prompt on line {lineno} lacks {', '.join(map(repr, missing))}")
        prompts[record["name"]] = record
    return prompts


@dataclass(frozen=True)
class Judge:
    model_name: str
    prompt: dict
    ref_based: bool = False
    multi_turn: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_name, self.prompt["name"])


def make_single_judges(judge_model: str, prompts: dict[str, dict], prompt_name: str = DEFAULT_PROMPT,
                       ref_prompt_name: str = DEFAULT_REF_PROMPT) -> dict[str, Judge]:
    """The four single-grading judges: ``default``, ``math`` (reference-based) and their multi-turn forms."""
    wanted = {
        "default": (prompt_name, False, False),
        "math": (ref_prompt_name, True, False),
        "default-mt": (prompt_name + MULTI_TURN_SUFFIX, False, True),
        "math-mt": (ref_prompt_name + MULTI_TURN_SUFFIX, True, True),
    }
    judges = {}
    for key, (name, ref_based, multi_turn) in wanted.items():
        if name not in prompts:
            raise InputError(f"judge prompt {name!r} not found; the judge prompt file has: {', '.join(sorted(prompts))}")
        prompt = prompts[name]
        if prompt["type"] != "single" or prompt["output_format"] != "[[rating]]":
            raise InputError(f"judge prompt {name!r} is not a single-answer grading prompt "
                             f"(type {prompt['type']!r}, output format {prompt['output_format']!r})")
        judges[key] = Judge(judge_model, prompt, ref_based, multi_turn)
    return judges


@dataclass(frozen=True)
class Match:
    question: dict
    model: str
    answer: dict
    judge: Judge
    ref_answer: dict | None = None

    @property
    def turn(self) -> int:
        return 2 if self.judge.multi_turn else 1

    @property
    def key(self) -> tuple:
        return match_key(self.question["question_id"], self.model, self.judge.key, self.turn)


def match_key(question_id, model: str, judge, turn: int) -> tuple:
    return (question_id, model, tuple(judge), turn)


def make_single_matches(questions: list[dict], answers: dict[str, dict], judges: dict[str, Judge],
                        ref_answers: dict) -> list[Match]:
    """Every (question, model, turn) to grade, in FastChat's order: turn 1 then turn 2.

    A model without an answer to a question, or a reference question without a reference
    answer, is an :class:`InputError`.
    """
    matches = []
    for multi_turn in (False, True):
        for q in questions:
            if multi_turn and len(q["turns"]) != 2:
                continue
            needs_ref = q["category"] in NEED_REF_CATEGORIES
            judge = judges[("math" if needs_ref else "default") + ("-mt" if multi_turn else "")]
            ref = None
            if needs_ref:
                if q["question_id"] not in ref_answers:
                    raise InputError(f"no reference answer for question {q['question_id']} "
                                     f"(category {q['category']!r}) from judge {judge.model_name!r}")
                ref = ref_answers[q["question_id"]]
                if multi_turn and len(ref["choices"][0]["turns"]) < 2:
                    raise InputError(f"the reference answer to question {q['question_id']} has no second turn")
            for model, model_answers in answers.items():
                if q["question_id"] not in model_answers:
                    raise InputError(f"model {model!r} has no answer to question {q['question_id']}")
                answer = model_answers[q["question_id"]]
                if len(answer["choices"][0]["turns"]) < len(q["turns"]):
                    raise InputError(f"model {model!r} answered {len(answer['choices'][0]['turns'])} of the "
                                     f"{len(q['turns'])} turns of question {q['question_id']}")
                matches.append(Match(q, model, answer, judge, ref))
    return matches


def user_prompt(match: Match) -> str:
    """The judge prompt's template filled with the question, the answer and the reference."""
    q_turns, a_turns = match.question["turns"], match.answer["choices"][0]["turns"]
    fields = {}
    if match.ref_answer is not None:
        ref_turns = match.ref_answer["choices"][0]["turns"]
        fields["ref_answer_1"] = ref_turns[0]
        if match.judge.multi_turn:
            fields["ref_answer_2"] = ref_turns[1]
    if match.judge.multi_turn:
        fields.update(question_1=q_turns[0], question_2=q_turns[1], answer_1=a_turns[0], answer_2=a_turns[1])
    else:
        fields.update(question=q_turns[0], answer=a_turns[0])
    try:
        return match.judge.prompt["prompt_template"].format(**fields)
    except (KeyError, IndexError) as exc:
        raise InputError(f"judge prompt {match.judge.prompt['name']!r} uses an unknown field {exc}") from exc


def judge_messages(match: Match) -> list[dict]:
    return [{"role": "system", "content": match.judge.prompt["system_prompt"]},
            {"role": "user", "content": user_prompt(match)}]


def parse_rating(judgment: str) -> int | float:
    """The score in ``[[rating]]``, else in ``[rating]``; -1 when the verdict has neither or its
    rating is outside MT-Bench's scale [1, 10] (a ``[[42]]`` would otherwise weigh in the mean)."""
    found = RATING.search(judgment) or RATING_BACKUP.search(judgment)
    if not found:
        return MISSING_SCORE
    text = found.group(1)
    score = float(text) if "." in text else int(text)
    return score if MIN_SCORE <= score <= MAX_SCORE else MISSING_SCORE


def judgment_record(match: Match, prompt: str, judgment: str, score) -> dict:
    """One line of FastChat's ``model_judgment/{judge}_single.jsonl``."""
    return {
        "question_id": match.question["question_id"],
        "model": match.model,
        "judge": list(match.judge.key),
        "user_prompt": prompt,
        "judgment": judgment,
        "score": score,
        "turn": match.turn,
        "tstamp": time.time(),
    }


# --- the HTTP client ------------------------------------------------------------------------------


class JudgeAPIError(InputError):
    """The judge endpoint refused a request or stayed unreachable through every retry."""


@dataclass(frozen=True)
class ChatCompletionsClient:
    """``POST {base_url}/chat/completions``, retried with exponential backoff on 429, 5xx and
    connection errors; every request is bounded by ``timeout`` and the number of attempts by
    ``max_retries + 1``."""

    base_url: str
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 8
    backoff: float = 1.0
    max_backoff: float = 60.0

    def _url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _shown_url(self) -> str:
        """The endpoint as messages show it: without a user name or key written into the URL."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self._url())
        if "@" not in parts.netloc:
            return self._url()
        return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self._url(), data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * 2 ** attempt
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.max_backoff)

    def complete(self, model: str, messages: list[dict], temperature: float = 0.0, max_tokens: int = 2048) -> str:
        body = json.dumps({"model": model, "messages": messages, "n": 1, "temperature": temperature,
                           "max_tokens": max_tokens}).encode("utf-8")
        last_error = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                reply = self._post(body)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                if exc.code not in RETRY_STATUS:
                    raise JudgeAPIError(f"judge endpoint {self._shown_url()} answered HTTP {exc.code}: {detail}") from exc
                last_error, retry_after = f"HTTP {exc.code}: {detail}", exc.headers.get("Retry-After")
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except json.JSONDecodeError as exc:
                last_error = f"a reply that is not JSON ({exc})"
            else:
                try:
                    content = reply["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError) as exc:
                    raise JudgeAPIError(f"judge endpoint {self._shown_url()} sent a reply without "
                                        f"choices[0].message.content: {str(reply)[:500]}") from exc
                if content is None:  # a refusal or a filtered reply: a verdict without a rating
                    logger.warning("judge endpoint %s sent content null (finish_reason %r); recorded as a verdict "
                                   "without a rating", self._shown_url(), reply["choices"][0].get("finish_reason"))
                    return ""
                return content
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                logger.warning("judge request failed (%s); retry %d of %d in %.1f s", last_error, attempt + 1,
                               self.max_retries, delay)
                time.sleep(delay)
        raise JudgeAPIError(f"judge endpoint {self._shown_url()} failed after {self.max_retries + 1} attempts; "
                            f"last error: {last_error}")


def client_from_settings(api_base: str | None = None, api_key: str | None = None, **kwargs) -> ChatCompletionsClient:
    """Flags first, then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``, then OpenAI's own endpoint."""
    base = api_base or os.environ.get("OPENAI_BASE_URL") or DEFAULT_API_BASE
    key = api_key or os.environ.get("OPENAI_API_KEY")
    client = ChatCompletionsClient(base, key, **kwargs)
    if client._shown_url() != client._url():
        raise InputError(f"--openai-api-base {client._shown_url().removesuffix('/chat/completions')}: the URL holds "
                         "a user name or key; give the key with --openai-api-key or $OPENAI_API_KEY instead")
    return client


# --- running the matches --------------------------------------------------------------------------


def judged_keys(output_file: str | os.PathLike) -> set[tuple]:
    keys = set()
    for lineno, r in enumerate(read_jsonl_if_exists(output_file), 1):
        try:
            keys.add(match_key(r["question_id"], r["model"], r["judge"], r["turn"]))
        except (KeyError, TypeError) as exc:
            raise InputError(f"{output_file}: judgment on line {lineno} lacks {exc}") from exc
    return keys


def play_single(match: Match, client: ChatCompletionsClient, max_tokens: int = 2048) -> dict:
    prompt = user_prompt(match)
    judgment = client.complete(match.judge.model_name, judge_messages(match), temperature=0.0, max_tokens=max_tokens)
    return judgment_record(match, prompt, judgment, parse_rating(judgment))


@dataclass
class JudgingSummary:
    total: int
    skipped: int
    judged: int
    malformed: int  # verdicts without a rating in [1, 10] (score -1)


def drop_missing_scores(output_file: str | os.PathLike) -> int:
    """Remove the verdicts without a rating from ``output_file`` (so they are judged again); returns
    how many were removed."""
    from ..storage import atomic_file

    records = read_jsonl_if_exists(output_file)
    kept = [r for r in records if r.get("score") != MISSING_SCORE]
    if len(kept) < len(records):
        with atomic_file(output_file) as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)
    return len(records) - len(kept)


def run_judging(matches: list[Match], client: ChatCompletionsClient, output_file: str | os.PathLike,
                parallel: int = 1, max_tokens: int = 2048, rejudge_missing: bool = False) -> JudgingSummary:
    """Judge the matches not yet in ``output_file``, ``parallel`` requests at a time.

    Each judgment is appended the moment it arrives. On the first failure no new request is
    started, the ones in flight finish and are kept, and the error is raised. With
    ``rejudge_missing``, earlier verdicts without a rating are removed and judged again.
    """
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, got {parallel}")
    if rejudge_missing:
        removed = drop_missing_scores(output_file)
        if removed:
            logger.info("%s: judging %d verdict(s) without a rating again", output_file, removed)
    done = judged_keys(output_file)
    pending = [m for m in matches if m.key not in done]
    summary = JudgingSummary(len(matches), len(matches) - len(pending), 0, 0)
    if not pending:
        return summary
    failure: BaseException | None = None
    with JsonlAppender(output_file) as appender, ThreadPoolExecutor(parallel) as pool, \
            tqdm(total=len(pending), desc="judging", unit="judgment") as progress:
        queue = iter(pending)
        running = set()

        def submit_next() -> None:
            match = next(queue, None)
            if match is not None:
                running.add(pool.submit(play_single, match, client, max_tokens))

        for _ in range(parallel):
            submit_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.discard(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                    continue
                record = future.result()
                appender.write(record)
                summary.judged += 1
                summary.malformed += record["score"] == MISSING_SCORE
                progress.update(1)
                if failure is None:
                    submit_next()
    if failure is not None:
        raise failure
    return summary


def load_reference_answers(reference_dir: str | os.PathLike, judge_model: str, questions: list[dict]) -> dict:
    """``{question_id: answer}`` from ``{reference_dir}/{judge_model}.jsonl``.

    The file may be absent only when no question needs a reference.
    """
    path = Path(reference_dir) / f"{judge_model}.jsonl"
    if path.is_file():
        return load_answers(path, f"reference answers of {judge_model!r}")
    needing = [q["question_id"] for q in questions if q["category"] in NEED_REF_CATEGORIES]
    if needing:
        raise InputError(f"reference answers not found: {path} (questions {needing[:5]}{'...' if len(needing) > 5 else ''} "
                         f"in {', '.join(NEED_REF_CATEGORIES)} are judged against them)")
    return {}
