"""Distribution alignment of one sample (docs/design.md 6.3): every branch against a literal oracle."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from distribution_alignment_oracle import oracle_align_distribution
from token_alignment_oracle import literal_align_tokens

from fusechat.alignment.distribution_alignment import (
    EMPTY, ONE_HOT, DistributionAligner, dropped_columns, fused_columns, not_aligned,
)
from fusechat.kernels.dtw import decoded_token_strings
from fusechat.alignment.vocab_mapping import Vocabulary, vocabulary_of
from fusechat.errors import InputError

SP, BL = "\u2581", "\u0120"  # "▁", "Ġ"


def _aligner(align_type, blending_pieces, base_pieces, blending_marker, base_marker, blending_to_base=None,
             use_matrix=False):
    blending = Vocabulary(tuple(blending_pieces), blending_marker)
    base = Vocabulary(tuple(base_pieces), base_marker)
    return DistributionAligner.create(align_type, blending, base, blending_to_base, use_matrix)


def _pairs(logits, ids):
    return list(zip(logits, ids))


# --- hand-built samples with the expected outputs written out ------------------------------------

BASE_PIECES = ["<unk>", "<s>", SP + "the", SP + "cat", "s", SP, "at", SP + "c", "cat", SP + "dog"]
BLENDING_PIECES = [BL + "the", BL + "cat", "s", BL + "c", "at", BL + "dog", "xyz", BL, "cats"]
BLENDING_TO_BASE = [2, 8, 6, 7, 6, 9, 0, 5, 8]

# One blending position per base position (decoded strings: the SentencePiece word start shows no
# marker, the byte-level one a leading space).
ONE_TO_ONE = dict(
    base_ids=[2, 3, 4, 9], base_tokens=["the", "cat", "s", "dog"],
    blending_ids=[0, 1, 2, 5], blending_tokens=[" the", " cat", "s", " dog"],
    alignment=[[0], [1], [2], [3]],
    blending_logits=[[5.0, 4.0, 3.0, 2.0], [0.5, 0.25], [1.5, 1.4, 1.3, 1.2], [0.7, 0.6]],
    blending_indices=[[1, 6, 8, 3], [5, 0], [2, 2, 4, 7], [9999, 5]],
)
ONE_TO_ONE_EXPECTED = {
    # "the" != " the": ONE-HOT on the next base id; "s" == "s": candidates by exact piece, "xyz"
    # and "cats" dropped, the repeated "s" skipped; at the last position the last id again.
    "hard": [([1.0], [3]), ([1.0], [4]), ([1.5, 1.3, 1.2], [4, 6, 5]), ([1.0], [9])],
    # Position 0: base id 2 == blending_to_base[blending id 0]; candidates through the mapping
    # (the second 8 skipped). Position 1: 3 != blending_to_base[1] = 8 and "cat" != " cat".
    # Position 2: taken on the strings, mapped through the table (6, 6 again, 5). Position 3:
    # blending_to_base[blending id 5] = 9 (the reference would index by the position, 3 -> 7);
    # the out-of-vocabulary candidate 9999 is skipped.
    "soft": [([5.0, 4.0, 2.0], [8, 0, 7]), ([1.0], [4]), ([1.5, 1.2], [6, 5]), ([0.6], [9])],
    # " the" ends with "the": exact pieces first ("Ġcat" -> 3, "Ġc" -> 7), else the mapping
    # ("xyz" -> 0, "cats" -> 8).
    "default": [([5.0, 4.0, 3.0, 2.0], [3, 0, 8, 7]), ([0.5, 0.25], [9, 2]), ([1.5, 1.3, 1.2], [4, 6, 5]),
                ([0.6], [9])],
}


@pytest.mark.parametrize("align_type", ["hard", "soft", "default"])
def test_one_to_one_branches(align_type):
    aligner = _aligner(align_type, BLENDING_PIECES, BASE_PIECES, BL, SP, BLENDING_TO_BASE)
    got = aligner.align(**ONE_TO_ONE)
    assert _pairs(*got) == ONE_TO_ONE_EXPECTED[align_type]
    assert got == oracle_align_distribution(
        align_type, base_vocab={p: i for i, p in enumerate(BASE_PIECES)}, blending_pieces=BLENDING_PIECES,
        base_marker=SP, blending_marker=BL, blending_to_base=BLENDING_TO_BASE, **ONE_TO_ONE)


MANY_TO_ONE = dict(
    base_ids=[8, 5, 5, 9, 4], base_tokens=["cats", "", SP, "dog", "s"],
    blending_ids=[3, 4, 2, 7, 6, 7, 6, 7, 4, 2],
    blending_tokens=[BL + "c", "ats", "s", " a", "b", BL, "x", BL, "ca", "t"],
    alignment=[[0, 1, 2], [3, 4], [5, 6, 7], [8, 9], [9]],
    blending_logits=[[9.0], [2.0, 1.0], [9.0], [9.0], [9.0], [9.0], [9.0], [0.3, 0.2, 0.1], [9.0], [9.0]],
    blending_indices=[[0], [8, 1], [0], [0], [0], [0], [0], [7, 5, 7], [0], [0]],
)


def test_many_to_one_branches_with_the_alignment_matrix():
    aligner = _aligner("default", BLENDING_PIECES, BASE_PIECES, BL, SP, BLENDING_TO_BASE, use_matrix=True)
    rows = aligner.source_rows(**{k: MANY_TO_ONE[k] for k in
                                  ("base_ids", "base_tokens", "blending_ids", "blending_tokens", "alignment")})
    # 0: "cats" vs ["c", "ats", "s"] (markers stripped): "ats" is the first suffix -> position 1.
    # 1: "" (a decoded "▁") vs [" a", "b"]: nothing consumed, the concatenation ends with "":
    #    the reference crashes on the empty list; EMPTY.
    # 2: "▁" strips to "" vs ["", "x", ""]: the empty tokens are consumed; the last one, 7.
    # 3: "dog" vs ["ca", "t"]: no suffix, no consumption: ONE-HOT. 4: "s" vs "t": ONE-HOT (last).
    assert rows.tolist() == [1, EMPTY, 7, ONE_HOT, ONE_HOT]
    got = aligner.align(**MANY_TO_ONE)
    assert _pairs(*got) == [([2.0, 1.0], [8, 3]), ([], []), ([0.3, 0.2], [5, 9]), ([1.0], [4]), ([1.0], [4])]
    assert got == oracle_align_distribution(
        "default", base_vocab={p: i for i, p in enumerate(BASE_PIECES)}, blending_pieces=BLENDING_PIECES,
        base_marker=SP, blending_marker=BL, blending_to_base=BLENDING_TO_BASE, use_token_alignment_matrix=True,
        **MANY_TO_ONE)


@pytest.mark.parametrize("align_type, use_matrix", [("default", False), ("hard", True), ("soft", True)])
def test_many_to_one_is_one_hot_otherwise(align_type, use_matrix):
    aligner = _aligner(align_type, BLENDING_PIECES, BASE_PIECES, BL, SP, BLENDING_TO_BASE, use_matrix)
    assert _pairs(*aligner.align(**MANY_TO_ONE)) == [
        ([1.0], [5]), ([1.0], [5]), ([1.0], [9]), ([1.0], [4]), ([1.0], [4])]


def test_markers_the_other_way_round():
    # A byte-level base ("Ġ") and a SentencePiece source ("▁"): the source's marker becomes "Ġ".
    base_pieces = [BL + "the", BL + "x", "y"]
    blending_pieces = [SP + "the", SP + "x", "y", "z"]
    sample = dict(base_ids=[0, 1, 2], base_tokens=[" the", BL + "x", "y"], blending_ids=[0, 1, 2],
                  blending_tokens=["the", SP + "x", "zy"], alignment=[[0], [1], [2]],
                  blending_logits=[[1.0, 0.5], [2.0, 1.0], [3.0]], blending_indices=[[1, 3], [0, 2], [2]])
    hard = _aligner("hard", blending_pieces, base_pieces, SP, BL)
    # " the" != "the": ONE-HOT; "▁x" -> "Ġx" == "Ġx": "▁the" -> "Ġthe" (0), "y" -> "y" (2);
    # "y" != "zy": ONE-HOT (last).
    assert _pairs(*hard.align(**sample)) == [([1.0], [1]), ([2.0, 1.0], [0, 2]), ([1.0], [2])]
    default = _aligner("default", blending_pieces, base_pieces, SP, BL, [0, 1, 2, 2])
    # " the" ends with "the" and "zy" ends with "y": taken; "z" has no piece in the base: mapped to 2.
    assert _pairs(*default.align(**sample)) == [([1.0, 0.5], [1, 2]), ([2.0, 1.0], [0, 2]), ([3.0], [2])]


# --- random samples against the oracle -----------------------------------------------------------

alphabet = ["a", "b", " ", SP, BL]
strings = st.text(alphabet=alphabet, max_size=4)


@st.composite
def samples(draw):
    base_pieces = draw(st.lists(st.text(alphabet=alphabet, min_size=1, max_size=3), min_size=1, max_size=8,
                                unique=True))
    blending_pieces = draw(st.lists(st.text(alphabet=alphabet, min_size=1, max_size=3), min_size=1,
                                    max_size=8, unique=True))
    n_base, n_blending = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    alignment = [sorted(draw(st.sets(st.integers(0, n_blending - 1), min_size=1, max_size=3)))
                 for _ in range(n_base)]
    candidate_lists = [draw(st.lists(st.integers(0, len(blending_pieces)), max_size=4)) for _ in range(n_blending)]
    return dict(
        base_pieces=base_pieces, blending_pieces=blending_pieces,
        base_ids=draw(st.lists(st.integers(0, len(base_pieces) - 1), min_size=n_base, max_size=n_base)),
        base_tokens=draw(st.lists(strings, min_size=n_base, max_size=n_base)),
        blending_ids=draw(st.lists(st.integers(0, len(blending_pieces) - 1), min_size=n_blending,
                                   max_size=n_blending)),
        blending_tokens=draw(st.lists(strings, min_size=n_blending, max_size=n_blending)),
        alignment=alignment,
        blending_indices=candidate_lists,
        blending_logits=[[float(k) + 0.5 for k in range(len(c))] for c in candidate_lists],
        blending_to_base=draw(st.lists(st.integers(0, len(base_pieces) - 1), min_size=len(blending_pieces),
                                       max_size=len(blending_pieces))),
    )


@settings(max_examples=200, deadline=None)
@given(sample=samples(), align_type=st.sampled_from(["hard", "soft", "default"]), use_matrix=st.booleans(),
       swap_markers=st.booleans())
def test_random_samples_match_the_oracle(sample, align_type, use_matrix, swap_markers):
    base_marker, blending_marker = (BL, SP) if swap_markers else (SP, BL)
    base_pieces, blending_pieces = sample.pop("base_pieces"), sample.pop("blending_pieces")
    blending_to_base = sample.pop("blending_to_base")
    aligner = _aligner(align_type, blending_pieces, base_pieces, blending_marker, base_marker, blending_to_base,
                       use_matrix)
    expected = oracle_align_distribution(
        align_type, base_vocab={p: i for i, p in enumerate(base_pieces)}, blending_pieces=blending_pieces,
        base_marker=base_marker, blending_marker=blending_marker, blending_to_base=blending_to_base,
        use_token_alignment_matrix=use_matrix, **sample)
    assert aligner.align(**sample) == expected


# --- real tokenizers -----------------------------------------------------------------------------

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. Internationalization!",
    "def add(a, b):\n    return a + b  # sum\n\n\n",
    "你好，世界！今天天气很好。",
    "emoji 😀🎉 and    whitespace\t\truns",
]


def _random_candidates(rng, blending_ids, size, k=10):
    """Top-k ids mixing the sequence's own ids (so exact matches occur) with random ones."""
    pool = np.asarray(blending_ids)
    indices = [np.where(rng.random(k) < 0.5, rng.choice(pool, k), rng.integers(0, size, k)).tolist()
               for _ in blending_ids]
    logits = [sorted(rng.normal(size=k).round(3).tolist(), reverse=True) for _ in blending_ids]
    return logits, indices


@pytest.mark.parametrize("direction", ["openchat<-qwen", "qwen<-openchat"])
def test_real_tokenizations_match_the_oracle_pipeline(tokenizers, direction):
    base_name, blending_name = direction.split("<-")
    base_tokenizer, blending_tokenizer = tokenizers[base_name], tokenizers[blending_name]
    base, blending = vocabulary_of(base_tokenizer), vocabulary_of(blending_tokenizer)
    rng = np.random.default_rng(0)
    blending_to_base = rng.integers(0, base.size, blending.size).tolist()
    aligners = {(align_type, use_matrix): DistributionAligner.create(align_type, blending, base, blending_to_base,
                                                                     use_matrix)
                for align_type in ("hard", "soft", "default") for use_matrix in (False, True)}
    for text in TEXTS:
        base_ids = base_tokenizer.encode(text, add_special_tokens=False)
        blending_ids = blending_tokenizer.encode(text, add_special_tokens=False)
        base_tokens = decoded_token_strings(base_tokenizer, base_ids)
        blending_tokens = decoded_token_strings(blending_tokenizer, blending_ids)
        logits, indices = _random_candidates(rng, blending_ids, blending.size)
        alignment = literal_align_tokens(base_tokens, blending_tokens, base.marker, blending.marker)
        for (align_type, use_matrix), aligner in aligners.items():
            got = aligner.align_sample(base_ids, base_tokens, blending_ids, blending_tokens, logits, indices)
            assert got == oracle_align_distribution(
                align_type, base_ids, base_tokens, blending_ids, blending_tokens, alignment, logits, indices,
                base.index, blending.pieces, base.marker, blending.marker, blending_to_base, use_matrix)


def test_real_strings_decide_the_one_to_one_branch(openchat_tokenizer, qwen_tokenizer):
    # OpenChat decodes "▁world" to "world", Qwen "Ġworld" to " world": only suffix matching (default)
    # carries the source's distribution there; "Hello" is identical on both sides.
    base, blending = vocabulary_of(openchat_tokenizer), vocabulary_of(qwen_tokenizer)
    base_ids = openchat_tokenizer.encode("Hello world", add_special_tokens=False)
    blending_ids = qwen_tokenizer.encode("Hello world", add_special_tokens=False)
    base_tokens = decoded_token_strings(openchat_tokenizer, base_ids)
    blending_tokens = decoded_token_strings(qwen_tokenizer, blending_ids)
    assert (base_tokens, blending_tokens) == (["Hello", "world"], ["Hello", " world"])
    alignment = [[0], [1]]
    args = (base_ids, base_tokens, blending_ids, blending_tokens, alignment)
    mapping = [base.no_token_id] * blending.size
    assert DistributionAligner.create("hard", blending, base).source_rows(*args).tolist() == [0, ONE_HOT]
    assert DistributionAligner.create("default", blending, base, mapping).source_rows(*args).tolist() == [0, 1]
    # Candidates map by piece: "Ġworld" -> "▁world" (the base id at position 1), but "Hello" (no
    # marker) -> "Hello", not the "▁Hello" of position 0.
    aligned = DistributionAligner.create("default", blending, base, mapping).align(
        *args, blending_logits=[[1.0], [2.0]], blending_indices=[[blending_ids[1]], [blending_ids[0]]])
    assert aligned == ([[1.0], [2.0]], [[base_ids[1]], [base.index["Hello"]]])
    assert base.index["Hello"] != base_ids[0]


# --- bad input, not_align and the written columns -------------------------------------------------

def test_aligner_rejects_bad_settings():
    with pytest.raises(InputError, match="--align_type 'exact'"):
        _aligner("exact", BLENDING_PIECES, BASE_PIECES, BL, SP)
    with pytest.raises(InputError, match="soft needs a --blending_to_base_file"):
        _aligner("soft", BLENDING_PIECES, BASE_PIECES, BL, SP)
    with pytest.raises(InputError, match="3 entries but the blending vocabulary has 9"):
        _aligner("default", BLENDING_PIECES, BASE_PIECES, BL, SP, [0, 1, 2])
    with pytest.raises(InputError, match="outside the base vocabulary"):
        _aligner("default", BLENDING_PIECES, BASE_PIECES, BL, SP, [10] * 9)


def test_align_rejects_inconsistent_samples():
    aligner = _aligner("hard", BLENDING_PIECES, BASE_PIECES, BL, SP)
    with pytest.raises(InputError, match="row 7: 4 base ids, 4 base token strings and 3 alignment"):
        aligner.align(**{**ONE_TO_ONE, "alignment": [[0], [1], [2]]}, where="row 7")
    with pytest.raises(InputError, match=r"base position 1 is matched to \[4\]"):
        aligner.align(**{**ONE_TO_ONE, "alignment": [[0], [4], [2], [3]]})
    with pytest.raises(InputError, match="source position 1 has 2 logits but 1 indices"):
        aligner.align(**{**ONE_TO_ONE, "blending_indices": [[1, 6, 8, 3], [5], [2, 2, 4, 7], [9999, 5]]})
    with pytest.raises(InputError, match="source token id 12 at position 2 is outside the source vocabulary"):
        aligner.align(**{**ONE_TO_ONE, "blending_ids": [0, 1, 12, 5]})
    with pytest.raises(InputError, match="4 tokens but 3 rows of per_step_logits"):
        aligner.align(**{**ONE_TO_ONE, "blending_logits": ONE_TO_ONE["blending_logits"][:3]})


def test_not_align_copies_the_source_lists():
    logits, indices = [[1.0, 0.5], [2.0]], [[7, 8], [9]]
    copied = not_aligned(logits, indices)
    assert copied == (logits, indices) and copied[0][0] is not logits[0]


def test_fused_columns_per_metric_level():
    base_row = {"input_ids": [1, 2], "per_step_logits": [[1.0], [2.0], [0.0]],
                "per_step_indices": [[5], [6], [0]], "metric_ce": 0.5}
    blending_row = {"metric_ce": 1.25, "per_step_metric_ce": [0.1, 0.2, 0.0]}
    fused = ([[3.0]], [[4]])
    assert fused_columns(base_row, blending_row, *fused) == {
        "per_step_logits": [[1.0], [2.0]], "per_step_indices": [[5], [6]],
        "fused_per_step_logits": [[3.0]], "fused_per_step_indices": [[4]], "fused_metric_ce": 1.25}
    token_level = fused_columns(base_row, blending_row, *fused, metric_level="token")
    assert token_level["per_step_fused_metric_ce"] == [0.1, 0.2, 0.0] and "fused_metric_ce" not in token_level
    assert dropped_columns("sequence") == ("per_step_metric_ce",) and dropped_columns("token") == ("metric_ce",)
    with pytest.raises(InputError, match="needs the source's per_step_metric_ce"):
        fused_columns(base_row, {"metric_ce": 1.0}, *fused, metric_level="token", where="row 3")
    with pytest.raises(InputError, match="--metric_level 'word'"):
        fused_columns(base_row, blending_row, *fused, metric_level="word")
