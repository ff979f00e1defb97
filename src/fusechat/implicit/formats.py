"""The files of implicit fusion (docs/design.md 13.1): reading them strictly, writing them atomically, and
converting to and from the released row shapes.

Project files are JSON lines, one object per line, every id a string:

* ``prompts.jsonl``  {prompt_id, domain, dataset, messages: [user], reference}
* ``samples/<source>.jsonl``  {prompt_id, source, responses, finish_reasons, seeds, sampling, template}
* ``scored/<source>.jsonl``  the same plus rm_scores [float|null] and verdicts [bool|null]
* ``sft.jsonl``  {prompt_id, domain, messages: [user, assistant], source, rm_score}
* ``dpo.jsonl``  {prompt_id, domain, prompt: [user], chosen: [assistant], rejected: [assistant], source,
  score_chosen, score_rejected}
* ``wrpo.jsonl``  {prompt_id, prompt: [user], chosen_source, chosen_target, rejected, source_of_ws,
  scores: {ws, wt, l}}

Readers check every record and raise :class:`InputError` naming the file, the record and the field.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import InputError
from ..eval.jsonl import read_jsonl
from ..storage import atomic_file

DOMAINS = ("if", "math", "code", "zh")
FINISH_REASONS = ("stop", "length")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens")


def _where(path, index: int, record: dict | None = None) -> str:
    pid = record.get("prompt_id") if isinstance(record, dict) else None
    return f"{path} record {index + 1}" + (f" (prompt_id {pid!r})" if isinstance(pid, str) else "")


def _require(condition: bool, path, index: int, record: dict, message: str) -> None:
    if not condition:
        raise InputError(f"{_where(path, index, record)}: {message}")


def _is_message(obj, role: str | None = None) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("content"), str) and isinstance(obj.get("role"), str)
            and (role is None or obj["role"] == role))


def _check_ids(path, records: list[dict]) -> None:
    """Every record has a string prompt_id, used once."""
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        pid = record.get("prompt_id")
        _require(pid is not None, path, index, record, "no prompt_id (every record needs a string prompt_id)")
        _require(isinstance(pid, str) and pid != "", path, index, record,
                 f"prompt_id must be a non-empty string, got {pid!r}")
        if pid in seen:
            raise InputError(f"{path}: prompt_id {pid!r} is used twice (records {seen[pid] + 1} and {index + 1})")
        seen[pid] = index


def write_jsonl(path: str | os.PathLike, records) -> None:
    """All ``records`` as JSON lines, replacing ``path`` only when complete."""
    with atomic_file(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- prompts ------------------------------------------------------------------------------------


def check_prompt(path, index: int, record: dict) -> None:
    _require(record.get("domain") in DOMAINS, path, index, record,
             f"domain must be one of {', '.join(DOMAINS)}, got {record.get('domain')!r}")
    messages = record.get("messages")
    _require(isinstance(messages, list) and messages and all(_is_message(m) for m in messages)
             and messages[-1]["role"] == "user", path, index, record,
             "messages must be a non-empty list of {role, content} ending with a user message")
    reference = record.get("reference")
    if record["domain"] == "math" and reference is not None:
        _require(isinstance(reference, dict) and isinstance(reference.get("answer"), str), path, index, record,
                 "a math reference is {\"answer\": str}")
    if record["domain"] == "code" and reference is not None:
        _require(isinstance(reference, dict) and isinstance(reference.get("tests"), str), path, index, record,
                 "a code reference is {\"tests\": str, \"entry_point\": str|null}")


def read_prompts(path: str | os.PathLike) -> list[dict]:
    """The records of a ``prompts.jsonl``, in file order."""
    records = read_jsonl(path, "prompt file")
    if not records:
        raise InputError(f"prompt file {path} holds no records")
    _check_ids(path, records)
    for index, record in enumerate(records):
        check_prompt(path, index, record)
    return records


def prompt_text(prompt: dict) -> str:
    return prompt["messages"][-1]["content"]


# --- samples and scores -------------------------------------------------------------------------


def check_samples(path, index: int, record: dict, scored: bool) -> None:
    _require(isinstance(record.get("source"), str) and record["source"], path, index, record,
             "source must be a non-empty string")
    responses = record.get("responses")
    _require(isinstance(responses, list) and responses and all(isinstance(r, str) for r in responses),
             path, index, record, "responses must be a non-empty list of strings")
    n = len(responses)
    finish = record.get("finish_reasons")
    _require(isinstance(finish, list) and len(finish) == n and all(f in FINISH_REASONS for f in finish),
             path, index, record, f"finish_reasons must list one of {FINISH_REASONS} per response ({n})")
    seeds = record.get("seeds")
    _require(isinstance(seeds, list) and len(seeds) == n and all(isinstance(s, int) for s in seeds),
             path, index, record, f"seeds must list one integer per response ({n})")
    _require(isinstance(record.get("template"), str), path, index, record, "template must be a string")
    _require(isinstance(record.get("sampling"), dict), path, index, record, "sampling must be an object")
    if scored:
        scores = record.get("rm_scores")
        _require(isinstance(scores, list) and len(scores) == n
                 and all(s is None or isinstance(s, (int, float)) and math.isfinite(s) for s in scores),
                 path, index, record, f"rm_scores must list one finite number or null per response ({n})")
        verdicts = record.get("verdicts")
        _require(isinstance(verdicts, list) and len(verdicts) == n
                 and all(v is None or isinstance(v, bool) for v in verdicts),
                 path, index, record, f"verdicts must list true, false or null per response ({n})")


def read_samples(path: str | os.PathLike, prompts: list[dict] | None = None, scored: bool = False) -> list[dict]:
    """The records of a samples (or, with ``scored``, a scored) file, checked against ``prompts``:
    every prompt_id must be one of theirs, and the prompt text must be in the rendered template, so a
    file made from another prompt set is refused."""
    what = "score file" if scored else "samples file"
    records = read_jsonl(path, what)
    if not records:
        raise InputError(f"{what} {path} holds no records")
    _check_ids(path, records)
    for index, record in enumerate(records):
        check_samples(path, index, record, scored)
    if prompts is not None:
        check_against_prompts(path, records, prompts)
    return records


def check_against_prompts(path, records: list[dict], prompts: list[dict]) -> None:
    by_id = {p["prompt_id"]: p for p in prompts}
    for index, record in enumerate(records):
        prompt = by_id.get(record["prompt_id"])
        if prompt is None:
            raise InputError(f"{_where(path, index, record)}: prompt_id not in the prompt file; this file was made "
                             "from another prompt set")
        if prompt_text(prompt).strip() not in record["template"]:
            raise InputError(f"{_where(path, index, record)}: its rendered prompt does not contain this prompt "
                             "set's text for that id; this file was made from another prompt set")


def sources_of(records: list[dict], path) -> str:
    """The one source a samples/scored file holds."""
    sources = sorted({r["source"] for r in records})
    if len(sources) != 1:
        raise InputError(f"{path}: a samples file holds one source, found {', '.join(sources)}")
    return sources[0]


# --- training sets ------------------------------------------------------------------------------


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def _check_turns(path, index, record, key: str, role: str, count: int | None = 1) -> None:
    turns = record.get(key)
    _require(isinstance(turns, list) and turns and all(_is_message(t) for t in turns)
             and (count is None or len(turns) == count) and turns[-1]["role"] == role,
             path, index, record, f"{key} must be a list of messages ending with a {role} message")


def read_sft(path) -> list[dict]:
    records = read_jsonl(path, "SFT set")
    _check_ids(path, records)
    for index, record in enumerate(records):
        _check_turns(path, index, record, "messages", "assistant", None)
    return records


def read_dpo(path) -> list[dict]:
    records = read_jsonl(path, "DPO set")
    _check_ids(path, records)
    for index, record in enumerate(records):
        _check_turns(path, index, record, "prompt", "user", None)
        _check_turns(path, index, record, "chosen", "assistant")
        _check_turns(path, index, record, "rejected", "assistant")
    return records


def read_wrpo(path) -> list[dict]:
    records = read_jsonl(path, "WRPO set")
    _check_ids(path, records)
    for index, record in enumerate(records):
        _check_turns(path, index, record, "prompt", "user", None)
        for key in ("chosen_source", "chosen_target", "rejected"):
            _check_turns(path, index, record, key, "assistant")
    return records


# --- released shapes ----------------------------------------------------------------------------


def sft_to_sharegpt(row: dict) -> dict:
    """An SFT row in the ShareGPT shape of docs/design.md 2 (the FastChat training path)."""
    roles = {"user": "human", "assistant": "gpt"}
    return {"id": row["prompt_id"],
            "conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in row["messages"]]}


def wrpo_to_release(row: dict) -> dict:
    """The released WRPO training row: one prompt dict; chosen = [y_ws, y_wt], in that order."""
    return {"prompt_id": row["prompt_id"], "prompt": row["prompt"][-1],
            "chosen": [row["chosen_source"][0], row["chosen_target"][0]], "rejected": row["rejected"]}


def wrpo_from_release(row: dict, where: str) -> dict:
    prompt, chosen, rejected = row.get("prompt"), row.get("chosen"), row.get("rejected")
    if not (_is_message(prompt, "user") and isinstance(chosen, list) and len(chosen) == 2
            and all(_is_message(c, "assistant") for c in chosen) and isinstance(rejected, list)
            and len(rejected) == 1 and _is_message(rejected[0], "assistant")):
        raise InputError(f"{where}: not a released WRPO row (prompt: one user message; chosen: [source, target] "
                         "assistant messages; rejected: one assistant message)")
    return {"prompt_id": str(row.get("prompt_id")), "prompt": [prompt], "chosen_source": [chosen[0]],
            "chosen_target": [chosen[1]], "rejected": rejected, "source_of_ws": None,
            "scores": {"ws": None, "wt": None, "l": None}}


def _last_assistant(turns, where: str) -> tuple[list[dict], dict]:
    """(the messages before, the final assistant message) of a released chosen/rejected value."""
    if isinstance(turns, str):
        return [], assistant(turns)
    if isinstance(turns, list) and turns and all(_is_message(t) for t in turns) and turns[-1]["role"] == "assistant":
        return turns[:-1], turns[-1]
    raise InputError(f"{where}: chosen/rejected must be a string or a list of messages ending with an assistant one")


def import_released(records: list, path) -> tuple[str, list[dict]]:
    """Released FuseChat-3.0 rows (``messages``, or ``prompt``/``chosen``/``rejected``) as ("sft", rows)
    or ("dpo", rows); any other shape is an error."""
    if not records or not all(isinstance(r, dict) for r in records):
        raise InputError(f"{path}: expected a non-empty list of JSON objects")
    first = records[0]
    if "messages" in first:
        kind = "sft"
    elif {"prompt", "chosen", "rejected"} <= set(first):
        kind = "dpo"
    else:
        raise InputError(f"{path}: unknown row shape (fields {sorted(first)}); expected 'messages' (SFT) or "
                         "'prompt', 'chosen', 'rejected' (DPO)")
    rows = []
    for index, record in enumerate(records):
        where = f"{path} row {index + 1}"
        pid = str(record.get("prompt_id", record.get("id", index)))
        domain = record.get("domain") if record.get("domain") in DOMAINS else "if"
        if kind == "sft":
            messages = record.get("messages")
            if not (isinstance(messages, list) and len(messages) >= 2 and all(_is_message(m) for m in messages)
                    and messages[-1]["role"] == "assistant"):
                raise InputError(f"{where}: messages must be a list of messages ending with an assistant one")
            rows.append({"prompt_id": pid, "domain": domain, "messages": messages, "source": record.get("source"),
                         "rm_score": record.get("rm_score")})
            continue
        before, chosen = _last_assistant(record.get("chosen"), where)
        _, rejected = _last_assistant(record.get("rejected"), where)
        prompt = record.get("prompt")
        prompt = [user(prompt)] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else before
        if not (prompt and all(_is_message(m) for m in prompt) and prompt[-1]["role"] == "user"):
            raise InputError(f"{where}: no user prompt found")
        rows.append({"prompt_id": pid, "domain": domain, "prompt": prompt, "chosen": [chosen],
                     "rejected": [rejected], "source": record.get("source"),
                     "score_chosen": record.get("score_chosen"), "score_rejected": record.get("score_rejected")})
    if len({r["prompt_id"] for r in rows}) != len(rows):
        raise InputError(f"{path}: a prompt_id is used twice")
    return kind, rows


def read_json_rows(path: str | os.PathLike, what: str) -> list:
    """A JSON list file, or JSON lines."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    text = p.read_text(encoding="utf-8").lstrip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p}: not valid JSON ({exc})") from None
    return read_jsonl(p, what)
