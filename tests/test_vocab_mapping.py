"""Vocabulary mappings EM, MinED, MS and their files (docs/design.md 6.2), against literal oracles."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import sparse
from token_alignment_oracle import levenshtein

from fusechat.kernels.dtw import align_tokens, decoded_token_strings
from fusechat.alignment.vocab_mapping import (
    AlignmentCounts, Vocabulary, alignment_pairs, blending_to_base_mapping, exact_mapping,
    load_blending_to_base, load_count_matrix, matched_blending_ids, mined_mapping, ms_mapping,
    save_blending_to_base, save_count_matrix, vocabulary_of,
)
from fusechat.errors import InputError
from fusechat.kernels.align_methods import align_method
from fusechat.kernels.mined import word_start_marker

SP, BL = "\u2581", "\u0120"  # "▁", "Ġ"


# --- oracles, written from docs/design.md 6.2 --------------------------------------------------------

def oracle_mined(blending_pieces, base_pieces, blending_marker, base_marker):
    base_index = {}
    for i, piece in enumerate(base_pieces):
        base_index.setdefault(piece, i)
    mapping = []
    for piece in blending_pieces:
        query = piece.replace(blending_marker, base_marker)
        if query in base_index:
            mapping.append(base_index[query])
        else:
            distances = [levenshtein(query, b) for b in base_pieces]
            mapping.append(distances.index(min(distances)))
    return mapping


def oracle_ms_distance(a, b, blending_marker, base_marker):
    aa, bb = a.replace(blending_marker, ""), b.replace(base_marker, "")
    if len(aa) == 0 or len(bb) == 0:
        aa, bb = a.replace(blending_marker, base_marker), b
    w = 0.1 if (aa in bb or bb in aa) else 1
    return levenshtein(aa, bb) * w


def oracle_ms(dense_counts, blending: Vocabulary, base: Vocabulary):
    unmatched = base.unk_id if base.unk_id is not None else base.eos_id
    mapping = []
    for b in range(blending.size):
        rows = [j for j in range(base.size) if dense_counts[j][b] > 0]
        if not rows:
            mapping.append(unmatched)
            continue
        scores = [oracle_ms_distance(blending.pieces[b], base.pieces[j], blending.marker, base.marker)
                  * (1.0 / (1 + np.exp(-float(dense_counts[j][b])))) for j in rows]
        mapping.append(rows[scores.index(min(scores))])
    if blending.bos_id is not None and base.bos_id is not None:
        mapping[blending.bos_id] = base.bos_id
    if blending.eos_id is not None and base.eos_id is not None:
        mapping[blending.eos_id] = base.eos_id
    return mapping


# --- word-start markers -------------------------------------------------------------------------

def _word_level_tokenizer(pieces):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {piece: i for i, piece in enumerate(pieces)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token=pieces[0])))


def test_word_start_markers_of_the_real_tokenizers(openchat_tokenizer, qwen_tokenizer):
    assert word_start_marker(openchat_tokenizer) == SP
    assert word_start_marker(qwen_tokenizer) == BL


def test_word_start_marker_falls_back_on_vocabulary_statistics():
    assert word_start_marker(_word_level_tokenizer(["<unk>", SP + "a", SP + "b", "c", SP + "dd"])) == SP
    assert word_start_marker(_word_level_tokenizer(["<unk>", BL + "a", BL + "b", "c"])) == BL


def test_word_start_marker_rejects_a_vocabulary_without_markers():
    with pytest.raises(InputError, match="word-start marker"):
        word_start_marker(_word_level_tokenizer(["<unk>", "a", "b", "c"]))


def test_vocabulary_of_the_real_tokenizers(openchat_tokenizer, qwen_tokenizer):
    openchat, qwen = vocabulary_of(openchat_tokenizer), vocabulary_of(qwen_tokenizer)
    assert (openchat.size, openchat.marker, openchat.no_token_id) == (32002, SP, 0)
    assert (openchat.bos_id, openchat.eos_id) == (1, 32000)
    assert openchat.pieces[28705] == SP and openchat.index["<|end_of_turn|>"] == 32000
    # Qwen has no unk: unmatched ids go to its eos.
    assert (qwen.size, qwen.marker, qwen.no_token_id, qwen.bos_id) == (151646, BL, 151645, None)
    assert qwen.index[BL + "the"] == 279


def test_unknown_align_type_is_an_input_error():
    assert align_method("soft").name == "soft"
    with pytest.raises(InputError, match="--align_type 'fuzzy' is unknown; choose from hard, soft, default"):
        align_method("fuzzy")


# --- EM and MinED -------------------------------------------------------------------------------

BASE = Vocabulary(("a", SP + "ab", SP + "b", "bb", SP + "ba"), SP, unk_id=0)
BLENDING = Vocabulary((BL + "ab", "bc", BL, "zzz", None), BL, eos_id=3)


def test_exact_mapping_replaces_the_marker():
    assert exact_mapping(BLENDING, BASE).tolist() == [1, -1, -1, -1, -1]


def test_mined_mapping_literal_example():
    # "Ġab" -> "▁ab" exactly; "bc" is nearest to "bb" (1); "Ġ" -> "▁" ties "a" and "▁b" at 1:
    # the first wins; "zzz" is at 3 from every piece: the first; the hole maps to base unk.
    assert mined_mapping(BLENDING, BASE, progress=False) == [1, 3, 0, 0, 0]


pieces = st.text(alphabet=["a", "b", "c", SP, BL], min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(blending_pieces=st.lists(pieces, min_size=1, max_size=12, unique=True),
       base_pieces=st.lists(pieces, min_size=1, max_size=12, unique=True),
       swap_markers=st.booleans())
def test_mined_mapping_matches_the_brute_force_oracle(blending_pieces, base_pieces, swap_markers):
    blending_marker, base_marker = (SP, BL) if swap_markers else (BL, SP)
    blending = Vocabulary(tuple(blending_pieces), blending_marker)
    base = Vocabulary(tuple(base_pieces), base_marker)
    expected = oracle_mined(blending_pieces, base_pieces, blending_marker, base_marker)
    assert mined_mapping(blending, base, progress=False) == expected
    exact = exact_mapping(blending, base).tolist()
    assert all(e == -1 or e == m for e, m in zip(exact, expected))


def test_mined_mapping_on_real_sub_vocabularies(openchat_tokenizer, qwen_tokenizer):
    from rapidfuzz.distance import Levenshtein

    openchat, qwen = vocabulary_of(openchat_tokenizer), vocabulary_of(qwen_tokenizer)
    base = Vocabulary(openchat.pieces[:3000], SP)
    # A spread of Qwen pieces: ASCII words, Chinese byte strings, code, whitespace runs.
    blending = Vocabulary(qwen.pieces[0:151646:500], BL)
    got = mined_mapping(blending, base, progress=False)
    for blending_id, piece in enumerate(blending.pieces):
        query = piece.replace(BL, SP)
        if query in base.index:
            assert got[blending_id] == base.index[query]
        else:
            distances = [Levenshtein.distance(query, b) for b in base.pieces]
            assert got[blending_id] == distances.index(min(distances)), piece


# --- MS -----------------------------------------------------------------------------------------

MS_BASE = Vocabulary(("<unk>", "<s>", "</s>", SP + "the", "the", SP + "th", SP, "ab", "xy"), SP,
                     unk_id=0, bos_id=1, eos_id=2)
MS_BLENDING = Vocabulary((BL + "the", "the", BL, "abc", "q", "<|eos|>", "zz"), BL, eos_id=5)
MS_COUNTS = {  # (base id, blending id): count
    (3, 0): 1, (4, 0): 5, (5, 0): 2,  # "the" vs "the" twice at distance 0: the lowest base id, 3
    (5, 1): 1, (7, 1): 1,  # "th" is inside "the": 1 * 0.1 beats "ab" at 3
    (6, 2): 3, (3, 2): 1,  # "Ġ" strips to nothing: "▁" vs raw "▁" (0) beats "▁" vs "▁the" (0.3)
    (7, 3): 1, (8, 3): 1,  # "abc" contains "ab": 0.1 vs 3
    (7, 5): 9,  # the blending eos: overridden to the base eos
    (7, 6): 4, (8, 6): 1,  # "zz" is at 2 from both: sigmoid makes the rarer pair (8) win
}  # blending 4 "q" has no count: base unk


def _dense(counts, shape):
    dense = np.zeros(shape, dtype=np.int64)
    for (row, col), value in counts.items():
        dense[row, col] = value
    return dense


def test_ms_mapping_literal_example():
    counts = sparse.csr_matrix(_dense(MS_COUNTS, (MS_BASE.size, MS_BLENDING.size)))
    assert ms_mapping(counts, MS_BLENDING, MS_BASE) == [3, 5, 6, 7, 0, 2, 8]
    # Without a base unk, ids with no count go to the base eos.
    no_unk = Vocabulary(MS_BASE.pieces, SP, bos_id=1, eos_id=2)
    assert ms_mapping(counts, MS_BLENDING, no_unk)[4] == 2
    # BOS -> BOS when both have one.
    with_bos = Vocabulary(MS_BLENDING.pieces, BL, bos_id=4, eos_id=5)
    assert ms_mapping(counts, with_bos, MS_BASE)[4] == 1


def test_ms_mapping_rejects_a_matrix_of_the_wrong_shape():
    with pytest.raises(InputError, match=r"shape \(7, 9\)"):
        ms_mapping(sparse.csr_matrix((7, 9)), MS_BLENDING, MS_BASE)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), swap_markers=st.booleans())
def test_ms_mapping_matches_the_literal_oracle(data, swap_markers):
    blending_marker, base_marker = (SP, BL) if swap_markers else (BL, SP)
    base_pieces = data.draw(st.lists(pieces, min_size=2, max_size=8, unique=True))
    blending_pieces = data.draw(st.lists(pieces, min_size=2, max_size=8, unique=True))
    special = st.none() | st.integers(0, 1)
    base = Vocabulary(tuple(base_pieces), base_marker, unk_id=data.draw(special), bos_id=data.draw(special),
                      eos_id=data.draw(st.integers(0, 1)))
    blending = Vocabulary(tuple(blending_pieces), blending_marker, bos_id=data.draw(special),
                          eos_id=data.draw(special))
    counts = data.draw(st.dictionaries(
        st.tuples(st.integers(0, base.size - 1), st.integers(0, blending.size - 1)), st.integers(1, 4)))
    dense = _dense(counts, (base.size, blending.size))
    assert ms_mapping(sparse.coo_matrix(dense), blending, base) == oracle_ms(dense.tolist(), blending, base)


def test_counts_add_each_blending_id_once_per_base_position():
    rows, cols = alignment_pairs([5, 6, 7], [[10, 10], [11], [10, 12]])
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(5, 10), (6, 11), (7, 10), (7, 12)]
    counts = AlignmentCounts(8, 13, flush_every=2)  # folds into CSR on the way
    counts.add([5, 6, 7], [[10, 10], [11], [10, 12]])
    counts.add([5, 5], [[10], [10, 12]])
    matrix = counts.to_csr()
    expected = {(5, 10): 3, (5, 12): 1, (6, 11): 1, (7, 10): 1, (7, 12): 1}
    assert isinstance(matrix, sparse.csr_matrix) and matrix.nnz == len(expected)
    assert (matrix.toarray() == _dense(expected, (8, 13))).all()


def test_counts_reject_ids_outside_the_vocabularies():
    counts = AlignmentCounts(4, 4)
    with pytest.raises(InputError, match="blending id 9 is outside"):
        counts.add([1], [[9]])
    with pytest.raises(InputError, match="2 base ids but 1 alignment"):
        counts.add([1, 2], [[0]])


def test_counts_and_ms_mapping_on_real_tokenizations(openchat_tokenizer, qwen_tokenizer):
    openchat, qwen = vocabulary_of(openchat_tokenizer), vocabulary_of(qwen_tokenizer)
    counts = AlignmentCounts(openchat.size, qwen.size)
    texts = ["The quick brown fox jumps over the lazy dog.", "def main():\n    return 42\n",
             "你好，世界！ Hello world 😀", "internationalization   and    whitespace"]
    for text in texts:
        base_ids = openchat_tokenizer.encode(text, add_special_tokens=False)
        blending_ids = qwen_tokenizer.encode(text, add_special_tokens=False)
        alignment = align_tokens(decoded_token_strings(openchat_tokenizer, base_ids),
                                 decoded_token_strings(qwen_tokenizer, blending_ids), SP, BL)
        counts.add(base_ids, matched_blending_ids(blending_ids, alignment))
    matrix = counts.to_csr()
    mapping = ms_mapping(matrix, qwen, openchat)
    assert len(mapping) == qwen.size
    assert mapping[qwen.index[BL + "quick"]] == openchat.index[SP + "quick"]
    assert mapping[qwen.index[BL + "lazy"]] == openchat.index[SP + "lazy"]
    assert mapping[qwen.eos_id] == openchat.eos_id
    columns = sorted(set(matrix.tocoo().col.tolist()))
    never_aligned = next(i for i in range(qwen.size) if i not in set(columns))
    assert mapping[never_aligned] == openchat.unk_id
    # The sparse path agrees with the literal oracle on the columns that have counts.
    dense = matrix[:, columns].toarray()
    rows = sorted(set(np.nonzero(dense)[0].tolist()))
    sub_base = Vocabulary(tuple(openchat.pieces[r] for r in rows), SP)
    sub_blending = Vocabulary(tuple(qwen.pieces[c] for c in columns), BL)
    sub_mapping = oracle_ms(dense[rows].tolist(), sub_blending, Vocabulary(sub_base.pieces, SP, unk_id=0))
    assert [mapping[c] for c in columns if c != qwen.eos_id] == [
        rows[m] for m, c in zip(sub_mapping, columns) if c != qwen.eos_id]


# --- files --------------------------------------------------------------------------------------

def test_count_matrix_file_round_trip_and_errors(tmp_path):
    matrix = sparse.csr_matrix(_dense({(1, 2): 4, (0, 0): 1}, (3, 5)))
    path = tmp_path / "matrix.npz"
    save_count_matrix(path, matrix)
    assert (load_count_matrix(path, 3, 5) != matrix).nnz == 0
    # no temporary left behind; the marker says the file is ours
    assert sorted(p.name for p in tmp_path.iterdir()) == [".matrix.npz.fusechat-output", "matrix.npz"]
    with pytest.raises(InputError, match=r"shape \(3, 5\).*4 ids.*5"):
        load_count_matrix(path, 4, 5)
    with pytest.raises(InputError, match="no such file"):
        load_count_matrix(tmp_path / "missing.npz", 3, 5)


def test_mapping_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "blending_to_base.json"
    save_blending_to_base(path, np.array([2, 0, 1]))
    assert json.loads(path.read_text()) == [2, 0, 1]
    assert load_blending_to_base(path, 3, 4) == [2, 0, 1]
    with pytest.raises(InputError) as error:
        load_blending_to_base(path, 5, 4)
    assert str(path) in str(error.value) and "3 entries" in str(error.value) and "5 ids" in str(error.value)
    with pytest.raises(InputError, match=r"entry 0 is 2, not a base id in \[0, 2\)"):
        load_blending_to_base(path, 3, 2)
    path.write_text('{"a": 1}')
    with pytest.raises(InputError, match="expected a JSON list"):
        load_blending_to_base(path, 3, 4)
    with pytest.raises(InputError, match="no such file"):
        load_blending_to_base(tmp_path / "missing.json", 3, 4)


def test_blending_to_base_mapping_dispatches_on_the_align_type():
    counts = sparse.csr_matrix(_dense(MS_COUNTS, (MS_BASE.size, MS_BLENDING.size)))
    assert blending_to_base_mapping("hard", MS_BLENDING, MS_BASE) is None
    assert blending_to_base_mapping("default", MS_BLENDING, MS_BASE, counts) == [3, 5, 6, 7, 0, 2, 8]
    assert blending_to_base_mapping("soft", BLENDING, BASE, progress=False) == [1, 3, 0, 0, 0]
    with pytest.raises(InputError, match="count matrix"):
        blending_to_base_mapping("default", MS_BLENDING, MS_BASE)
