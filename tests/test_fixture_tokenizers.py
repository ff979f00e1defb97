"""The fixture tokenizers against their ground truth, on the whole sample corpus.

Mistral family: the ``sentencepiece`` package itself on the same ``.model`` file. Qwen1.5: a small
merges-based byte-level BPE written here over the same ranks (merge the adjacent pair whose
merged bytes have the lowest rank, leftmost first, until none is in the vocabulary; a pre-token
that is itself in the vocabulary is still built merge by merge).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from fusechat import fixtures

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fusechat_sample.json"
# Code-like runs of spaces. (A text that starts with a space differs: transformers' Metaspace adds no
# word-start marker there, SentencePiece does; the real models' fast tokenizers share this, and a
# rendered conversation never starts a stretch with a space.)
SPACES = ["def f(x):\n    return x\n\n\n        if y:  \t pass   ", "a    left", "two  spaces  ", "#!/usr/bin/env"]


def corpus_texts() -> list[str]:
    records = json.loads(CORPUS.read_text(encoding="utf-8"))
    return [m["value"] for r in records for m in r["conversations"]] + SPACES


@pytest.fixture(scope="module")
def texts():
    return corpus_texts()


def sentencepiece_processor(model_file: str):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(fixtures.sentencepiece_model_file(model_file)))


def legacy_sentencepiece_ids(sp, text: str, added: dict[str, int], bos: int) -> list[int]:
    """The released (slow, legacy) tokenizers: BOS, then every stretch between added tokens encoded by
    SentencePiece on its own (so each stretch gets its word-start marker)."""
    import re

    ids = [bos]
    pattern = "(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")"
    for piece in re.split(pattern, text):
        if piece in added:
            ids.append(added[piece])
        elif piece:
            ids.extend(sp.encode(piece))
    return ids


@pytest.mark.parametrize("kind,model_file", [("openchat", fixtures.MISTRAL_V1), ("solar", fixtures.MISTRAL_V1),
                                             ("mistral", fixtures.MISTRAL_V1),
                                             ("internlm2", fixtures.MISTRAL_V3)])
def test_sentencepiece_family_matches_sentencepiece(kind, model_file, texts):
    tok = fixtures.load_tokenizer(kind)
    sp = sentencepiece_processor(model_file)
    mismatched = [t for t in texts if tok(t, add_special_tokens=False)["input_ids"] != sp.encode(t)]
    assert mismatched == []
    # Runs of spaces split as SentencePiece splits them (the merges follow the piece scores).
    assert tok.convert_ids_to_tokens(tok("a    left", add_special_tokens=False)["input_ids"]) == \
        ["▁a", "▁▁▁", "▁left"]


def test_special_tokens_and_eos():
    openchat, solar, mistral, internlm2 = (fixtures.load_tokenizer(k) for k in
                                           ("openchat", "solar", "mistral", "internlm2"))
    assert (len(openchat), openchat.eos_token, openchat.eos_token_id) == (32002, "<|end_of_turn|>", 32000)
    assert openchat.convert_tokens_to_ids("<|pad_0|>") == 32001
    assert (len(solar), solar.eos_token, solar.eos_token_id) == (32002, "<|im_end|>", 32000)
    assert solar.convert_tokens_to_ids("<|im_start|>") == 32001
    assert (len(mistral), mistral.eos_token, mistral.eos_token_id) == (32000, "</s>", 2)
    assert (internlm2.eos_token, internlm2.eos_token_id) == ("</s>", 2)
    assert internlm2.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"]) == [32772, 32773]


def test_whole_conversations_encode_like_legacy_sentencepiece(texts):
    """Rendered conversations (added tokens between the turns) as the legacy slow tokenizer encodes them."""
    tok = fixtures.load_tokenizer("openchat")
    sp = sentencepiece_processor(fixtures.MISTRAL_V1)
    added = {"<|end_of_turn|>": 32000, "<|pad_0|>": 32001}
    records = json.loads(CORPUS.read_text(encoding="utf-8"))
    for record in records:
        text = "".join(("GPT4 Correct User: " if m["from"] == "human" else "GPT4 Correct Assistant: ")
                       + m["value"] + "<|end_of_turn|>" for m in record["conversations"])
        assert tok(text)["input_ids"] == legacy_sentencepiece_ids(sp, text, added, 1), record["id"]
    # docs/design.md 3: the OpenChat prompt of "Hello".
    assert tok("GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:")["input_ids"] == \
        [1, 420, 6316, 28781, 3198, 3123, 1247, 28747, 22557, 32000, 420, 6316, 28781, 3198, 3123, 21631, 28747]


def learned_merges(ranks: dict[bytes, int]) -> dict[tuple[bytes, bytes], int]:
    """Per multi-byte token, the pair that tokens of lower rank split it into (BPE training's merge)."""
    merges = {}
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            found = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1)
                     if ranks.get(parts[i] + parts[i + 1], rank) < rank]
            if not found:
                break
            _, i = min(found)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges[(parts[0], parts[1])] = rank
    return merges


def bpe_oracle(ranks: dict[bytes, int], merges: dict[tuple[bytes, bytes], int], piece: bytes) -> list[int]:
    """GPT-2 style BPE: apply the learned merge of lowest rank among adjacent pairs until none applies."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        found = [(merges[(parts[i], parts[i + 1])], i) for i in range(len(parts) - 1)
                 if (parts[i], parts[i + 1]) in merges]
        if not found:
            break
        _, i = min(found)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def qwen_oracle_ids(ranks, merges, text: str) -> list[int]:
    import regex

    ids = []
    for piece in regex.findall(fixtures.QWEN_SPLIT_PATTERN, unicodedata.normalize("NFC", text)):
        ids.extend(bpe_oracle(ranks, merges, piece.encode("utf-8")))
    return ids


def test_qwen_matches_a_merges_based_bpe(texts):
    tok = fixtures.load_tokenizer("qwen")
    ranks = fixtures.qwen_ranks()
    merges = learned_merges(ranks)
    assert len(merges) == 151387  # the line count of Qwen1.5's merges.txt
    hebrew = "\u05d5\u05bc"  # one token of the vocabulary that no chain of merges builds
    mismatched = [t for t in texts + [hebrew] if tok(t, add_special_tokens=False)["input_ids"] !=
                  qwen_oracle_ids(ranks, merges, t)]
    assert mismatched == []
    # tiktoken (ignore_merges) would return the vocabulary entry whole; Qwen1.5 gives three tokens.
    assert hebrew.encode() in ranks
    assert tok(hebrew, add_special_tokens=False)["input_ids"] == [ranks[b"\xd7\x95"], ranks[b"\xd6"], ranks[b"\xbc"]]
    # "#!/" is one token: ("#!", "/") is its own learned merge.
    assert tok("#!/", add_special_tokens=False)["input_ids"] == [ranks[b"#!/"]]
    assert tok.convert_tokens_to_ids(fixtures.QWEN_SPECIAL_TOKENS) == [151643, 151644, 151645]
    assert tok("hi<|im_end|>", add_special_tokens=True)["input_ids"] == [ranks[b"hi"], 151645]  # no BOS


def test_unknown_kind_is_named():
    from fusechat.errors import InputError

    with pytest.raises(InputError, match="'nope'"):
        fixtures.build_tokenizer("nope")


@pytest.mark.parametrize("name,added", [("openchat_3.5-tiny", "<|end_of_turn|>"), ("nous-hermes-2-solar-tiny", "<|im_end|>"),
                                        ("mixtral-instruct-tiny", "</s>")])
def test_model_folders_keep_the_legacy_word_start_after_added_tokens(name, added):
    """A reload of a saved model folder still encodes a word after an added token with its "▁"."""
    from transformers import AutoTokenizer

    folder = fixtures.build_tiny_model(name)
    assert json.loads((folder / "tokenizer_config.json").read_text())["legacy"] is True
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok(f"Hi{added}GPT4", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["▁Hi", added, "▁G", "PT", "4"]


def test_same_vocabulary_ignores_added_tokens():
    """docs/design.md 5's same-vocabulary sources: Starling, SOLAR and Mixtral against OpenChat; not InternLM2, Qwen."""
    from fusechat.modeling import shares_vocabulary

    pivot = fixtures.load_tokenizer("openchat")
    assert [shares_vocabulary(pivot, fixtures.load_tokenizer(kind))
            for kind in ("openchat", "solar", "mistral", "internlm2", "qwen")] == [True, True, True, False, False]
