"""Answer generation for chat benchmarks (docs/design.md 10): MT-Bench here, AlpacaEval reuses the generator.

A model folder's prompt format is ``--conv-temp NAME`` (one of :mod:`fusechat.templates`) when
given, else the tokenizer's own chat template; a folder with neither is an error. Prompts are
batched with left padding; decoding is greedy at temperature 0 and sampled otherwise, and stops at
the template's closing token or the model's end-of-sequence tokens. MT-Bench answers are written
to FastChat's ``model_answer`` format one question at a time, so a rerun skips what is done.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import queue as queue_module
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..errors import InputError
from ..modeling import check_model_path, load_causal_lm, load_tokenizer, model_turn_separator, read_model_config
from ..storage import atomic_file, check_writable
from ..templates import ASSISTANT, TEMPLATES, USER, generation_prompt_ids, get_template, model_family
from .jsonl import JsonlAppender, read_jsonl_if_exists
from .questions import category_temperature, load_questions, validate_answer

logger = logging.getLogger(__name__)
GREEDY_BELOW = 1e-4  # temperatures under this decode greedily, as FastChat does
DTYPE_TO_HALF = {"float32": "none", "float16": "fp16", "bfloat16": "bf16"}

Messages = list[tuple[str, str]]  # (user|assistant, text), alternating, ending with a user turn


@dataclass(frozen=True)
class PromptFormat:
    """How one model turns a conversation into prompt ids, and where its replies end."""

    name: str
    prompt_ids: Callable[[Messages], list[int]] = field(compare=False)
    stop_token_ids: frozenset[int]
    stop_strings: tuple[str, ...] = ()


def resolve_prompt_format(tokenizer, conv_temp: str | None, model_path: str = "",
                          separator: str | None = None) -> PromptFormat:
    """``conv_temp`` if given, else the tokenizer's chat template, else the template of the model's
    family (``templates.FAMILIES``); none of them is an :class:`InputError`.

    With ``conv_temp`` turns close with ``separator``, by default the model's (``modeling.model_turn_separator``).
    """
    stop_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if not conv_temp and not getattr(tokenizer, "chat_template", None) and model_path:
        family = model_family(read_model_config(model_path), tokenizer.get_vocab())
        conv_temp = family.template if family else None
        if conv_temp:
            logger.info("%s: no chat template; using %s, the template of its family", model_path, conv_temp)
    if conv_temp:
        template = get_template(conv_temp)
        if model_path:
            separator = model_turn_separator(model_path, tokenizer, separator)
        separator = separator or tokenizer.eos_token or ""
        close = template.close_token(separator)
        close_ids = tokenizer.encode(close, add_special_tokens=False) if close else []
        stop_strings: tuple[str, ...] = ()
        if len(close_ids) == 1:
            stop_ids.add(close_ids[0])
        elif close:  # a closing marker that is no single token is matched as text
            stop_strings = (close,)
        return PromptFormat(template.name, lambda messages: generation_prompt_ids(tokenizer, template, messages,
                                                                                   separator=separator),
                            frozenset(stop_ids), stop_strings)
    if getattr(tokenizer, "chat_template", None):
        def chat_template_ids(messages: Messages) -> list[int]:
            chat = [{"role": role, "content": text} for role, text in messages]
            # The chat template writes BOS itself when the model wants one.
            text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        return PromptFormat("chat_template", chat_template_ids, frozenset(stop_ids))
    families = ", ".join(sorted({t.name for t in TEMPLATES.values()}))
    raise InputError(f"{model_path or 'model'}: the tokenizer has no chat template; pass --conv-temp NAME "
                     f"(one of: {families})")


def truncate_at_stop(token_ids: list[int], stop_token_ids) -> list[int]:
    """The tokens before the first stop token."""
    for position, token in enumerate(token_ids):
        if token in stop_token_ids:
            return token_ids[:position]
    return token_ids


def truncate_at_strings(text: str, stop_strings) -> str:
    cut = min((text.find(s) for s in stop_strings if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def eos_ids(generation_config) -> set[int]:
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


class ChatGenerator:
    """Batched chat generation with one model."""

    def __init__(self, model, tokenizer, prompt_format: PromptFormat, batch_size: int = 8):
        if batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.prompt_format = PromptFormat(
            prompt_format.name, prompt_format.prompt_ids,
            prompt_format.stop_token_ids | eos_ids(model.generation_config), prompt_format.stop_strings)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _generation_config(self, temperature: float, max_new_tokens: int, **sampling):
        config = copy.deepcopy(self.model.generation_config)
        sample = temperature >= GREEDY_BELOW
        config.update(do_sample=sample, temperature=temperature if sample else None,
                      max_new_tokens=max_new_tokens, eos_token_id=sorted(self.prompt_format.stop_token_ids),
                      pad_token_id=self.pad_token_id,
                      **{key: value for key, value in sampling.items() if value is not None and sample})
        return config

    def generate(self, conversations: list[Messages], temperature: float, max_new_tokens: int,
                 seed: int = 0) -> list[str]:
        """One reply per conversation, in input order. Longest prompts are batched together."""
        return [text for text, _ in self.generate_with_finish(conversations, temperature, max_new_tokens, seed)]

    def generate_with_finish(self, conversations: list[Messages], temperature: float, max_new_tokens: int,
                             seed: int = 0, **sampling) -> list[tuple[str, str]]:
        """``(reply, finish_reason)`` per conversation: "stop" when a stop token or string ended it, "length"
        when it ran to ``max_new_tokens``. ``sampling``: further generation settings (top_p, top_k,
        repetition_penalty; None leaves the model's own)."""
        import torch

        if temperature < 0:
            raise InputError(f"temperature must be at least 0, got {temperature}")

        prompts = [self.prompt_format.prompt_ids(messages) for messages in conversations]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        config = self._generation_config(temperature, max_new_tokens, **sampling)
        device = self.model.device
        replies: list[tuple[str, str]] = [("", "stop")] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(prompts[i]) for i in batch)
            # Left padding: every prompt ends at the same column, where generation starts.
            input_ids = torch.tensor([[self.pad_token_id] * (width - len(prompts[i])) + prompts[i] for i in batch],
                                     device=device)
            attention_mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch],
                                          device=device)
            torch.manual_seed(seed)
            with torch.inference_mode():
                output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                             generation_config=config)
            for row, index in enumerate(batch):
                generated = output[row, width:].tolist()
                new_tokens = truncate_at_stop(generated, self.prompt_format.stop_token_ids)
                text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
                cut = truncate_at_strings(text, self.prompt_format.stop_strings)
                stopped = len(new_tokens) < len(generated) or len(cut) < len(text)
                replies[index] = (cut.strip(), "stop" if stopped or len(generated) < max_new_tokens else "length")
        return replies


def load_generator(model_path: str, conv_temp: str | None = None, dtype: str | None = None,
                   num_gpus: int = 1, batch_size: int = 8, separator: str | None = None) -> ChatGenerator:
    """Tokenizer and prompt format first (a missing template fails before the weights load), then the model.

    ``dtype`` is float32|float16|bfloat16; by default float16 on a GPU and float32 on the CPU, as FastChat.
    """
    import torch

    tokenizer = load_tokenizer(model_path, padding_side="left")
    prompt_format = resolve_prompt_format(tokenizer, conv_temp, model_path, separator)
    cuda = torch.cuda.is_available()
    dtype = dtype or ("float16" if cuda else "float32")
    if dtype not in DTYPE_TO_HALF:
        raise InputError(f"--dtype must be one of {sorted(DTYPE_TO_HALF)}, got {dtype!r}")
    device_map = "auto" if cuda and num_gpus > 1 else None
    model = load_causal_lm(model_path, load_in_half=DTYPE_TO_HALF[dtype], device_map=device_map)
    if device_map is None:
        model.to("cuda" if cuda else "cpu")
    model.eval()
    return ChatGenerator(model, tokenizer, prompt_format, batch_size)


# --- MT-Bench ---------------------------------------------------------------------------------


def answer_record(question_id, model_id: str, choices: list[list[str]]) -> dict:
    """One line of FastChat's ``model_answer`` file."""
    return {
        "question_id": question_id,
        "answer_id": uuid.uuid4().hex[:22],
        "model_id": model_id,
        "choices": [{"index": i, "turns": turns} for i, turns in enumerate(choices)],
        "tstamp": time.time(),
    }


def answer_questions(generator: ChatGenerator, questions: list[dict], model_id: str, max_new_tokens: int,
                     num_choices: int, on_answer: Callable[[dict], None], show_progress: bool = True) -> None:
    """Answer every turn of every question; ``on_answer`` receives each finished answer record.

    Questions of one temperature are batched together; turn k of a batch is generated after turn
    k-1, with the model's own earlier replies in the conversation. Choice i samples with seed i.
    """
    by_temperature: dict[float, list[dict]] = {}
    for q in questions:
        by_temperature.setdefault(category_temperature(q["category"]), []).append(q)
    progress = tqdm(total=len(questions), desc=f"answering ({model_id})", unit="question", disable=not show_progress)
    for temperature, group in by_temperature.items():
        for start in range(0, len(group), generator.batch_size):
            batch = group[start:start + generator.batch_size]
            choices = [[[] for _ in range(num_choices)] for _ in batch]
            for choice in range(num_choices):
                histories: list[Messages] = [[] for _ in batch]
                for turn in range(max(len(q["turns"]) for q in batch)):
                    active = [i for i, q in enumerate(batch) if turn < len(q["turns"])]
                    for i in active:
                        histories[i].append((USER, batch[i]["turns"][turn]))
                    replies = generator.generate([histories[i] for i in active], temperature, max_new_tokens,
                                                 seed=choice)
                    for i, reply in zip(active, replies):
                        histories[i].append((ASSISTANT, reply))
                        choices[i][choice].append(reply)
            for q, answer in zip(batch, choices):
                on_answer(answer_record(q["question_id"], model_id, answer))
            progress.update(len(batch))
    progress.close()


def split_for_workers(questions: list, num_gpus_per_model: int, num_gpus_total: int) -> list[list]:
    """One share of the questions per model copy (``total // per_model`` of them), dealt round-robin.

    Round-robin keeps every category spread over all copies, which balances their load; FastChat
    shuffles randomly for the same reason.
    """
    if num_gpus_per_model < 1 or num_gpus_total < num_gpus_per_model or num_gpus_total % num_gpus_per_model:
        raise InputError(f"--num-gpus-total ({num_gpus_total}) must be a positive multiple of "
                         f"--num-gpus-per-model ({num_gpus_per_model})")
    workers = num_gpus_total // num_gpus_per_model
    return [share for share in (questions[i::workers] for i in range(workers)) if share]


def sort_answer_file(path: str | os.PathLike) -> None:
    """Rewrite the answers sorted by question id, one per question (the last written wins)."""
    answers = {r["question_id"]: r for r in read_jsonl_if_exists(path)}
    with atomic_file(path) as handle:
        for qid in sorted(answers, key=lambda q: (isinstance(q, str), q)):
            handle.write(json.dumps(answers[qid]) + "\n")


def _worker(gpu_ids: list[int], load_kwargs: dict, questions: list[dict], answer_kwargs: dict, results) -> None:
    """Runs in a child process that sees only its own GPUs; sends answers back to the single writer."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
    try:
        generator = load_generator(**load_kwargs)
        answer_questions(generator, questions, on_answer=lambda record: results.put(("answer", record)),
                         show_progress=False, **answer_kwargs)
        results.put(("done", None))
    except InputError as exc:
        results.put(("input_error", str(exc)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put(("error", traceback.format_exc()))


def _run_workers(shares: list[list[dict]], num_gpus_per_model: int, load_kwargs: dict, answer_kwargs: dict,
                 appender: JsonlAppender, total: int) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = []
    for index, share in enumerate(shares):
        gpus = list(range(index * num_gpus_per_model, (index + 1) * num_gpus_per_model))
        process = context.Process(target=_worker, args=(gpus, load_kwargs, share, answer_kwargs, results))
        process.start()
        processes.append(process)
    running = len(processes)
    try:
        with tqdm(total=total, desc=f"answering ({answer_kwargs['model_id']})", unit="question") as progress:
            while running:
                try:
                    kind, payload = results.get(timeout=10)
                except queue_module.Empty:
                    if not any(p.is_alive() for p in processes):
                        raise RuntimeError("an answer-generation worker died without reporting") from None
                    continue
                if kind == "answer":
                    appender.write(payload)
                    progress.update(1)
                elif kind == "done":
                    running -= 1
                elif kind == "input_error":
                    raise InputError(payload)
                else:
                    raise RuntimeError(f"answer-generation worker failed:\n{payload}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def generate_mt_bench_answers(model_path: str, model_id: str, question_file: str | os.PathLike,
                              answer_file: str | os.PathLike, conv_temp: str | None = None, separator: str | None = None,
                              max_new_token: int = 1024, num_choices: int = 1, num_gpus_per_model: int = 1,
                              num_gpus_total: int = 1, dtype: str | None = None, batch_size: int = 8,
                              question_begin: int | None = None, question_end: int | None = None) -> int:
    """Answer the questions not yet in ``answer_file``; returns how many were answered.

    Answers are appended as they finish; at the end the file is rewritten sorted by question id.
    """
    if max_new_token < 1 or num_choices < 1:
        raise InputError("--max-new-token and --num-choices must be at least 1")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    check_model_path(model_path, "--model-path")
    check_writable(answer_file, "--answer-file")
    questions = load_questions(question_file, question_begin, question_end)
    done = {validate_answer(answer_file, n, r)["question_id"]
            for n, r in enumerate(read_jsonl_if_exists(answer_file), 1)}
    pending = [q for q in questions if q["question_id"] not in done]
    shares = split_for_workers(pending, num_gpus_per_model, num_gpus_total)
    if done:
        logger.info("%s: %d of %d questions already answered", answer_file, len(questions) - len(pending),
                    len(questions))
    if pending:
        load_kwargs = dict(model_path=model_path, conv_temp=conv_temp, separator=separator, dtype=dtype,
                           num_gpus=num_gpus_per_model, batch_size=batch_size)
        answer_kwargs = dict(model_id=model_id, max_new_tokens=max_new_token, num_choices=num_choices)
        with JsonlAppender(answer_file) as appender:
            if len(shares) == 1:
                generator = load_generator(**load_kwargs)
                answer_questions(generator, pending, on_answer=appender.write, **answer_kwargs)
            else:
                _run_workers(shares, num_gpus_per_model, load_kwargs, answer_kwargs, appender, len(pending))
    if Path(answer_file).exists():
        sort_answer_file(answer_file)
    return len(pending)
