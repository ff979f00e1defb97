"""DTW token alignment (docs/design.md 6.1) against the literal oracle in token_alignment_oracle.py."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from token_alignment_oracle import literal_align_tokens, literal_cost_matrix

from fusechat import fixtures
from fusechat.kernels.dtw import (
    align_tokens, decoded_token_strings, token_alignment_spans, token_cost_matrix,
)
from fusechat.errors import InputError

SENTENCEPIECE, BYTE_LEVEL = "▁", "Ġ"
MARKERS = {"openchat": SENTENCEPIECE, "qwen": BYTE_LEVEL}

# --- random token lists ------------------------------------------------------------------------

# Small alphabets make many equal costs, so the tie order is exercised all the time; empty strings
# and bare markers exercise the "strips to nothing" rule.
token_strings = st.one_of(
    st.sampled_from(["", SENTENCEPIECE, BYTE_LEVEL, SENTENCEPIECE * 2, " ", "a", "ab", "ba"]),
    st.text(alphabet=["a", "b", " ", "中", SENTENCEPIECE, BYTE_LEVEL], max_size=5),
)
token_lists = st.lists(token_strings, min_size=1, max_size=40)
marker_pairs = st.sampled_from([
    (SENTENCEPIECE, BYTE_LEVEL), (BYTE_LEVEL, SENTENCEPIECE), (SENTENCEPIECE, SENTENCEPIECE), (BYTE_LEVEL, BYTE_LEVEL),
])


@settings(max_examples=150, deadline=None)
@given(base=token_lists, blending=token_lists, markers=marker_pairs)
def test_random_token_lists_match_the_oracle(base, blending, markers):
    base_marker, blending_marker = markers
    assert align_tokens(base, blending, base_marker, blending_marker) == literal_align_tokens(
        base, blending, base_marker, blending_marker
    )
    costs = token_cost_matrix(base, blending, base_marker, blending_marker)
    assert costs.dtype == np.int32 and costs.shape == (len(blending), len(base))
    assert costs.tolist() == literal_cost_matrix(base, blending, base_marker, blending_marker)


@settings(max_examples=30, deadline=None)
@given(base=token_lists, blending=token_lists, markers=marker_pairs)
def test_spans_are_the_matched_runs(base, blending, markers):
    first, last = token_alignment_spans(base, blending, *markers)
    expected = literal_align_tokens(base, blending, *markers)
    assert [(rows[0], rows[-1]) for rows in expected] == list(zip(first.tolist(), last.tolist()))


# --- hand-built cases ----------------------------------------------------------------------------

def test_left_wins_a_tie_with_up():
    # cost = 0 on equal letters, else 1.  D (rows = blending b,a,b; columns = base a,b,a):
    #   [1 1 2]
    #   [1 2 1]
    #   [2 1 2]
    # At (2,2): diagonal 2, left 1, up 1 -> left (2,1); there diagonal 1 < left 2, up 2 -> (1,0);
    # then up -> (0,0).  Visited (2,2) (2,1) (1,0) (0,0).  (Up before left would give
    # [[0], [0], [1, 2]].)
    assert align_tokens(["a", "b", "a"], ["b", "a", "b"], SENTENCEPIECE, BYTE_LEVEL) == [[0, 1], [2], [2]]


def test_diagonal_wins_a_three_way_tie():
    # All costs 0, so D is all 0: at (1,1) diagonal, left and up tie and the diagonal is taken.
    assert align_tokens(["x", "x"], ["x", "x"], SENTENCEPIECE, BYTE_LEVEL) == [[0], [1]]


def test_one_base_token_takes_every_blending_token():
    assert align_tokens(["hello"], ["he", "l", "lo"], SENTENCEPIECE, BYTE_LEVEL) == [[0, 1, 2]]


def test_one_blending_token_serves_every_base_token():
    assert align_tokens(["he", "l", "lo"], ["hello"], SENTENCEPIECE, BYTE_LEVEL) == [[0], [0], [0]]


def test_split_word_path():
    # base "▁hello" "▁world" vs blending "Ġhel" "lo" "Ġworld": markers stripped, costs
    #   [2 4]      D = [2 6]
    #   [3 4]          [5 6]
    #   [4 0]          [9 5]
    # (2,1): diagonal 5, left 9, up 6 -> (1,0); then up -> (0,0).
    base, blending = ["▁hello", "▁world"], ["Ġhel", "lo", "Ġworld"]
    assert token_cost_matrix(base, blending, SENTENCEPIECE, BYTE_LEVEL).tolist() == [[2, 4], [3, 4], [4, 0]]
    assert align_tokens(base, blending, SENTENCEPIECE, BYTE_LEVEL) == [[0, 1], [2]]


@pytest.mark.parametrize("blending_token, base_token, expected", [
    ("Ġab", "▁ab", 0),  # markers stripped on both sides
    ("aĠb", "a▁b", 0),  # every occurrence is stripped, not only a leading one
    ("Ġ", "a", 1),  # blending strips to nothing: "▁" against "a"
    ("Ġ", "▁", 0),  # both strip to nothing: "▁" against "▁"
    ("ab", "▁", 2),  # base strips to nothing: "ab" against "▁"
    ("ĠaĠ", "", 3),  # base is empty: "▁a▁" against ""
    ("", "▁x", 2),  # blending is empty: "" against "▁x"
    ("Ġ中文", "中", 1),
])
def test_cost_of_one_pair(blending_token, base_token, expected):
    costs = token_cost_matrix([base_token], [blending_token], SENTENCEPIECE, BYTE_LEVEL)
    assert costs.tolist() == [[expected]]


def test_equal_markers_leave_the_swapped_token_unchanged():
    # Same marker on both sides: "▁" strips to nothing and is compared raw against "ab".
    assert token_cost_matrix(["ab", "▁b"], ["▁"], SENTENCEPIECE, SENTENCEPIECE).tolist() == [[2, 1]]


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("base, blending, name", [([], ["a"], "base_tokens"), (["a"], [], "blending_tokens")])
def test_empty_side_is_an_error(base, blending, name):
    with pytest.raises(InputError, match=name):
        align_tokens(base, blending, SENTENCEPIECE, BYTE_LEVEL)


def test_empty_side_gives_an_empty_cost_matrix():
    assert token_cost_matrix([], ["a", "b"], SENTENCEPIECE, BYTE_LEVEL).shape == (2, 0)
    assert token_cost_matrix(["a"], [], SENTENCEPIECE, BYTE_LEVEL).shape == (0, 1)


def test_non_string_token_is_named():
    with pytest.raises(InputError, match=r"blending_tokens\[1\]"):
        align_tokens(["a"], ["a", 7], SENTENCEPIECE, BYTE_LEVEL)


def test_empty_marker_is_an_error():
    with pytest.raises(InputError, match="blending_marker"):
        align_tokens(["a"], ["a"], SENTENCEPIECE, "")


# --- real tokenizations ------------------------------------------------------------------------

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. \"It wasn't me,\" said the fox; nobody believed it.",
    "code": "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n"
            "    return fibonacci(n - 1) + fibonacci(n - 2)  # O(2**n)\n\nprint([fibonacci(k) for k in range(10)])\n",
    "chinese": "知识融合是一种将多个大型语言模型的能力整合到一个模型中的方法，它不需要重新训练所有模型。",
    "emoji": "Great job 🎉🎉! Let's celebrate 🥳👍🏽 with 🍕 and 🍺… 👨‍👩‍👧‍👦 ✔️",
    "long_words": "Pneumonoultramicroscopicsilicovolcanoconiosis, antidisestablishmentarianism and "
                  "supercalifragilisticexpialidocious: Donaudampfschifffahrtsgesellschaftskapitän.",
    "whitespace": "a  b   c\t\td\n\n\n    e     \n\t  f      g\r\n \u00a0 h" + " " * 17 + "end",
    "chat": "GPT4 Correct User: Hi, 你好 🙂<|end_of_turn|>GPT4 Correct Assistant: Hello!<|end_of_turn|>",
}


@pytest.fixture(scope="module")
def decoded(tokenizers):
    """text name -> tokenizer name -> decoded token strings of that tokenizer's encoding."""
    out = {}
    for text_name, text in TEXTS.items():
        out[text_name] = {}
        for tok_name, tok in tokenizers.items():
            ids = tok.encode(text)
            strings = decoded_token_strings(tok, ids)
            assert strings == [tok.decode([i]) for i in ids]
            out[text_name][tok_name] = strings
    return out


@pytest.mark.parametrize("text_name", list(TEXTS))
@pytest.mark.parametrize("base_name, blending_name", [("openchat", "qwen"), ("qwen", "openchat")])
def test_real_tokenizations_match_the_oracle(decoded, text_name, base_name, blending_name):
    base, blending = decoded[text_name][base_name], decoded[text_name][blending_name]
    markers = MARKERS[base_name], MARKERS[blending_name]
    assert align_tokens(base, blending, *markers) == literal_align_tokens(base, blending, *markers)


def test_long_mixed_sequence_matches_the_oracle(tokenizers):
    text = " ".join(TEXTS.values())
    for base_name, blending_name in [("openchat", "qwen"), ("qwen", "openchat")]:
        base_tok, blending_tok = tokenizers[base_name], tokenizers[blending_name]
        base = decoded_token_strings(base_tok, base_tok.encode(text))
        blending = decoded_token_strings(blending_tok, blending_tok.encode(text))
        markers = MARKERS[base_name], MARKERS[blending_name]
        assert len(base) > 150 and len(blending) > 150
        assert align_tokens(base, blending, *markers) == literal_align_tokens(base, blending, *markers)


@pytest.mark.parametrize("text_name", ["chinese", "emoji"])
def test_qwen_pivot_gets_one_to_many_matches(decoded, text_name):
    # OpenChat splits these into byte pieces that Qwen keeps whole: the case 6.3 handles as |M| > 1.
    matches = align_tokens(decoded[text_name]["qwen"], decoded[text_name]["openchat"], BYTE_LEVEL, SENTENCEPIECE)
    assert any(len(rows) > 1 for rows in matches)


# --- decoded token strings ----------------------------------------------------------------------

def test_decoded_strings_follow_added_tokens():
    tok = fixtures.load_tokenizer("openchat")  # a private copy: tokens are added to it
    assert decoded_token_strings(tok, [1, 22557]) == [tok.decode([1]), tok.decode([22557])]
    tok.add_tokens(["<extra_token_for_test>"])
    new_id = len(tok) - 1
    assert decoded_token_strings(tok, [new_id]) == [tok.decode([new_id])] == ["<extra_token_for_test>"]


@pytest.mark.parametrize("bad_id", [-1, 32002])
def test_out_of_vocabulary_id_is_an_error(openchat_tokenizer, bad_id):
    with pytest.raises(InputError, match=f"token id {bad_id} at position 1"):
        decoded_token_strings(openchat_tokenizer, [1, bad_id])
