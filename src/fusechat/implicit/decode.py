"""S1, sampling N responses per prompt from one source model (docs/design.md 13.2; [S] decode.py).

Each of the N samples is one pass over every prompt with its own seed. The prompt is the model's own
chat template applied to the user turn with the generation prompt (or ``--conv-temp NAME``). The
backend is transformers' ``generate`` (any device) or vLLM (GPU, when installed); vLLM's samples
differ from transformers' for the same seed, so the backend goes into the file's ``sampling`` record.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from .formats import prompt_text

logger = logging.getLogger(__name__)
BACKENDS = ("hf", "vllm")
DEFAULT_SEEDS = (13, 21, 42, 79, 100)


def conversation(prompt: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in prompt["messages"]]


def rendered_prompt(tokenizer, prompt_format, prompt: dict) -> str:
    """The text the model is prompted with (the file's ``template`` field)."""
    if prompt_format.name == "chat_template":
        return tokenizer.apply_chat_template(prompt["messages"], add_generation_prompt=True, tokenize=False)
    return tokenizer.decode(prompt_format.prompt_ids(conversation(prompt)))


def sampling_record(temperature, top_p, top_k, repetition_penalty, max_tokens, backend: str) -> dict:
    return {"temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
            "max_tokens": max_tokens, "backend": backend}


def sample_hf(model_path: str, prompts: list[dict], seeds, sampling: dict, conv_temp: str | None,
              batch_size: int) -> tuple[list[list[tuple[str, str]]], list[str]]:
    """Per seed, ``(reply, finish_reason)`` per prompt; and the rendered prompts."""
    from ..eval.generate import load_generator

    generator = load_generator(model_path, conv_temp=conv_temp, batch_size=batch_size)
    conversations = [conversation(p) for p in prompts]
    per_seed = []
    for seed in tqdm(seeds, desc="seeds"):
        per_seed.append(generator.generate_with_finish(
            conversations, sampling["temperature"], sampling["max_tokens"], seed=seed, top_p=sampling["top_p"],
            top_k=sampling["top_k"], repetition_penalty=sampling["repetition_penalty"]))
    templates = [rendered_prompt(generator.tokenizer, generator.prompt_format, p) for p in prompts]
    return per_seed, templates


def sample_vllm(model_path: str, prompts: list[dict], seeds, sampling: dict):
    """The same with vLLM: ``SamplingParams(seed=...)`` per pass, the model's chat template."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise InputError("--backend vllm: vLLM is not installed (pip install vllm); use --backend hf") from None
    llm = LLM(model=model_path, seed=seeds[0])
    tokenizer = llm.get_tokenizer()
    templates = [tokenizer.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
                 for p in prompts]
    per_seed = []
    for seed in seeds:
        params = SamplingParams(n=1, seed=seed, temperature=sampling["temperature"],
                                top_p=sampling["top_p"] if sampling["top_p"] is not None else 1.0,
                                top_k=sampling["top_k"] if sampling["top_k"] is not None else -1,
                                repetition_penalty=sampling["repetition_penalty"] or 1.0,
                                max_tokens=sampling["max_tokens"])
        outputs = llm.generate([{"prompt": t} for t in templates], params)
        per_seed.append([(o.outputs[0].text.strip(), "length" if o.outputs[0].finish_reason == "length" else "stop")
                         for o in outputs])
    return per_seed, templates


def decode(model_path: str, prompts: list[dict], source: str, seeds, sampling: dict, backend: str = "hf",
           conv_temp: str | None = None, batch_size: int = 8) -> list[dict]:
    """One samples row per prompt: the N responses in seed order."""
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {BACKENDS}, got {backend!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds must differ from each other, got {list(seeds)}")
    if backend == "vllm":
        per_seed, templates = sample_vllm(model_path, prompts, list(seeds), sampling)
    else:
        per_seed, templates = sample_hf(model_path, prompts, list(seeds), sampling, conv_temp, batch_size)
    rows = []
    for i, prompt in enumerate(prompts):
        if prompt_text(prompt).strip() not in templates[i]:
            logger.warning("%s: the rendered prompt of %s does not contain its text", model_path, prompt["prompt_id"])
        rows.append({"prompt_id": prompt["prompt_id"], "source": source,
                     "responses": [per_seed[k][i][0] for k in range(len(seeds))],
                     "finish_reasons": [per_seed[k][i][1] for k in range(len(seeds))], "seeds": list(seeds),
                     "sampling": sampling, "template": templates[i]})
    truncated = sum(r["finish_reasons"].count("length") for r in rows)
    logger.info("%s: %d prompts x %d seeds, %d responses cut at max_tokens", source, len(rows), len(seeds), truncated)
    return rows


def default_source_name(model_path: str) -> str:
    return Path(model_path.rstrip("/")).name
