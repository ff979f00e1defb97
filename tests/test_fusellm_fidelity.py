"""FuseLLM stages against the release where a library default differs from it (docs/differences_fusellm_fidelity.md)."""

import pytest

from fusechat import fixtures
from fusechat.fusellm.common import encode_documents, load_stage_tokenizer

TEXTS = [" The cat sat.", "The cat", "  two spaces", " 1 2", "x\n\n y ", "héllo wörld 🙂", " "]


@pytest.mark.parametrize("model,model_file", [("llama-2-7b-tiny", fixtures.MISTRAL_V1),
                                              ("open_llama_7b_v2-tiny", fixtures.MISTRAL_V3)])
def test_sentencepiece_documents_encode_as_the_released_slow_tokenizer(model, model_file):
    """The release's slow LlamaTokenizer is sentencepiece itself: a document that starts with a space
    keeps it as a token of its own ('▁', then '▁The'). The oracle is sentencepiece on the model file."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(fixtures.sentencepiece_model_file(model_file)))
    tokenizer = load_stage_tokenizer(str(fixtures.build_tiny_model(model)))
    encoded = encode_documents(tokenizer, TEXTS, 64)
    for text, ids in zip(TEXTS, encoded):
        # 12.2: the text, then the EOS string, which becomes the single EOS id.
        assert tokenizer.convert_ids_to_tokens(ids) == sp.encode(text, out_type=str) + [tokenizer.eos_token], text
    assert tokenizer.convert_ids_to_tokens(encoded[0])[:2] == ["▁", "▁The"]
