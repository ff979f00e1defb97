"""FuseLLM data stages (docs/design.md 12.1-12.5) against small oracles written from the specification."""

import json
import math
import random

import numpy as np
import pytest

from fusechat import fixtures
from fusechat.kernels.dtw import align_tokens, token_cost_matrix
from fusechat.errors import InputError
from fusechat.fusellm import cli
from fusechat.fusellm.common import encode_documents, load_stage_tokenizer
from fusechat.fusellm.packing import packed_rows
from fusechat.fusellm.split_long_text import split_dataset, split_text
from fusechat.fusellm.token_alignment import AlignmentTables, PairSpec, align_row, align_split, piece_table
from fusechat.fusellm.vocab_mapping import (cooccurrence_counts, cooccurrence_mapping, default_vocab_mapping,
                                            ordered_pieces)
from fusellm_oracle import (literal_cooccurrence, literal_distributions, literal_fusellm_align, literal_mined_entry,
                            literal_pack)

SP, BL = "\u2581", "\u0120"  # "▁", "Ġ"


@pytest.fixture(scope="module")
def model_paths():
    return {name: fixtures.build_tiny_model(name) for name in fixtures.FUSELLM_TINY_MODELS}


@pytest.fixture(scope="module")
def stage_tokenizers(model_paths):
    return [load_stage_tokenizer(str(path)) for path in model_paths.values()]


# --- 12.1 splitting ----------------------------------------------------------------------------

class CharTokenizer:
    """One id per character; ``upper`` decodes in capitals, so the output shows which one cut."""

    def __init__(self, upper=False, words=False):
        self.upper, self.words = upper, words

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split()))) if self.words else [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        text = "".join(chr(i) for i in ids)
        return text.upper() if self.upper else text


def test_split_keeps_fitting_texts_and_cuts_by_the_longest_tokenization():
    words, lower, upper = CharTokenizer(words=True), CharTokenizer(), CharTokenizer(upper=True)
    assert split_text("abcd", [words, lower, upper], threshold=4) == ["abcd"]
    # blending and another-blending tie at 10 tokens: blending (the second) cuts.
    assert split_text("abcdefghij", [words, upper, lower], threshold=4) == ["ABCD", "EFGH", "IJ"]
    # base ties with both: base cuts.
    assert split_text("abcdefghij", [lower, upper, upper], threshold=4) == ["abcd", "efgh", "ij"]


def test_split_dataset_expands_in_place_with_decoded_chunks(stage_tokenizers):
    from datasets import Dataset

    long_text = " ".join(f"word{i} and more" for i in range(40))
    dataset = Dataset.from_dict({"text": ["short one", long_text, "tail"], "other": [1, 2, 3]})
    out = split_dataset(dataset, stage_tokenizers, block_size=48 + 30)
    lengths = [len(t(long_text, add_special_tokens=False)["input_ids"]) for t in stage_tokenizers]
    chooser = stage_tokenizers[lengths.index(max(lengths))]
    ids = chooser(long_text, add_special_tokens=False)["input_ids"]
    expected = [chooser.decode(ids[s:s + 30], skip_special_tokens=True) for s in range(0, len(ids), 30)]
    assert out.column_names == ["text"]
    assert out["text"] == ["short one", *expected, "tail"]
    assert len(expected) == math.ceil(max(lengths) / 30) > 1


def test_split_cli_names_a_split_without_text_and_writes_nothing(tmp_path, model_paths):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"text": ["a"]}), "test": Dataset.from_dict({"content": ["b"]})}
                ).save_to_disk(str(tmp_path / "corpus"))
    paths = [str(p) for p in model_paths.values()]
    with pytest.raises(InputError, match=r"split 'test': missing column\(s\) \['text'\]"):
        cli.split_long_text_main(["--base_model_name_or_path", paths[0], "--blending_model_name_or_path", paths[1],
                                  "--another_blending_model_name_or_path", paths[2], "--dataset",
                                  str(tmp_path / "corpus"), "--dataset_save_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --- 12.2 representations ----------------------------------------------------------------------

def _save_corpus(path, splits):
    from datasets import Dataset, DatasetDict

    DatasetDict({s: Dataset.from_dict({"text": texts}) for s, texts in splits.items()}).save_to_disk(str(path))


def _float16_metric(ce):
    """docs/design.md 12.2: per-token CE in float16, summed (float32 accumulate) to float16, divided in float16."""
    ce16 = np.asarray(ce, dtype=np.float16)
    total = np.float16(ce16.astype(np.float32).sum())
    return float(np.float16(np.float32(total) / np.float32(len(ce16))))


def test_forward_for_logits_plain_text_no_bos_eos_string_and_float16_metric(tmp_path, model_paths):
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM

    pivot = str(model_paths[fixtures.FUSELLM_PIVOT])
    texts = ["Hello world, this is a test.", "Zwei Wörter", "def f(x):\n    return x + 1", "12 345", "last"]
    _save_corpus(tmp_path / "corpus", {"train": texts, "validation": texts[:2]})
    cli.forward_for_logits_main(["--model_name_or_path", pivot, "--dataset", str(tmp_path / "corpus"),
                                 "--dataset_save_dir", str(tmp_path / "rep"), "--dataset_split_num", "2",
                                 "--dataset_index", "1", "--batch_size", "2", "--top_k_logits", "5",
                                 "--save_per_token_metric", "--preprocessing_num_workers", "1"])
    rep = load_from_disk(str(tmp_path / "rep"))
    assert rep["train"]["text"] == texts[2:]  # 5 // 2 = 2 rows per slice; the last slice takes the rest
    assert rep["validation"]["text"] == texts[1:2]
    tokenizer = load_stage_tokenizer(pivot)
    model = AutoModelForCausalLM.from_pretrained(pivot).eval()
    for row in rep["train"]:
        ids = tokenizer(row["text"] + "</s>", add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == ids and ids[0] != tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert row["labels"] == ids and row["attention_mask"] == [1] * len(ids)
        assert len(row["per_step_logits"]) == len(row["per_step_indices"]) == len(ids)
        assert len(row["per_step_metric_ce"]) == len(ids) - 1
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].to(torch.float16).float()
        ce = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none").numpy()
        assert row["metric_ce"] == pytest.approx(_float16_metric(ce), rel=2e-3)
        np.testing.assert_allclose(row["per_step_metric_ce"], ce.astype(np.float16), rtol=2e-3, atol=2e-3)
        top = torch.topk(logits, 5, dim=-1)
        np.testing.assert_allclose(row["per_step_logits"], top.values.numpy(), rtol=2e-3, atol=2e-3)
        assert [r[0] for r in row["per_step_indices"]] == top.indices[:, 0].tolist()


def test_forward_for_logits_first_rows_truncation_and_one_token_row(tmp_path, model_paths):
    from datasets import load_from_disk

    pivot = str(model_paths[fixtures.FUSELLM_PIVOT])
    texts = ["one two three four five six", "seven eight nine ten", "", "eleven"]
    _save_corpus(tmp_path / "corpus", {"train": texts, "validation": ["alone"]})
    args = ["--model_name_or_path", pivot, "--dataset", str(tmp_path / "corpus"), "--batch_size", "8",
            "--preprocessing_num_workers", "1"]
    cli.forward_for_logits_main(args + ["--dataset_save_dir", str(tmp_path / "a"), "--dataset_sample_prop", "0.5",
                                        "--model_max_length", "4"])
    saved = load_from_disk(str(tmp_path / "a"))
    assert len(saved["validation"]) == 0 and saved["validation"].column_names == saved["train"].column_names
    rep = saved["train"]
    assert rep["text"] == texts[:2]  # the first int(4 * 0.5) rows, not a random sample
    tokenizer = load_stage_tokenizer(pivot)
    assert rep["input_ids"][0] == tokenizer(texts[0] + "</s>", add_special_tokens=False)["input_ids"][:4]
    assert tokenizer.eos_token_id not in rep["input_ids"][0]  # truncation cut the EOS off
    with pytest.raises(InputError, match=r"train:2"):  # "" + "</s>" is one token: metric_ce = 0/0
        cli.forward_for_logits_main(args + ["--dataset_save_dir", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


# --- 12.3 vocabulary mapping -------------------------------------------------------------------

def test_mined_mapping_matches_brute_force_on_synthetic_vocabularies():
    rng = random.Random(3)
    for _ in range(20):
        base = list(dict.fromkeys(rng.choice([SP, ""]) + "".join(rng.choice("abc") for _ in range(rng.randint(1, 5)))
                                  for _ in range(rng.randint(3, 30))))
        blending = list(dict.fromkeys(rng.choice([BL, ""]) + "".join(rng.choice("abcd") for _ in range(rng.randint(1, 8)))
                                      for _ in range(40)))
        mapping = default_vocab_mapping(blending, base, BL, SP, progress=False)
        assert mapping == {x.replace(BL, SP): literal_mined_entry(x.replace(BL, SP), base) for x in blending}


def test_mined_mapping_ties_take_the_first_base_piece_and_exact_hits_win():
    base = ["zz", "ab", "ba", "▁a"]
    mapping = default_vocab_mapping(["aa", "Ġa", "ba", "bab"], base, BL, SP, progress=False)
    assert mapping == {"aa": "ab", "▁a": "▁a", "ba": "ba", "bab": "ab"}  # "aa": "ab", "ba", "▁a" all at 1


def test_mined_mapping_real_vocabularies_against_brute_force(stage_tokenizers):
    pivot, _, byte_level = stage_tokenizers
    base = ordered_pieces(pivot)[:3000]
    queries = ordered_pieces(byte_level)[::1500]
    mapping = default_vocab_mapping(queries, base, BL, SP, progress=False)
    assert mapping == {x.replace(BL, SP): literal_mined_entry(x.replace(BL, SP), base) for x in queries}


def test_vocab_mapping_cli_refuses_other_types_and_writes_nothing(tmp_path, model_paths):
    paths = [str(p) for p in model_paths.values()]
    args = ["--base_model_name_or_path", paths[0], "--blending_model_name_or_path", paths[1],
            "--vocab_mapping_save_dir", str(tmp_path / "map.json")]
    with pytest.raises(InputError, match="'frequency' is unknown"):
        cli.vocab_mapping_main(args + ["--vocab_mapping_type", "frequency"])
    with pytest.raises(InputError, match="co_occurrence needs --dataset_dir"):
        cli.vocab_mapping_main(args + ["--vocab_mapping_type", "co_occurrence"])
    assert not (tmp_path / "map.json").exists()


def test_cooccurrence_mapping_matches_the_literal_definition():
    rng = random.Random(11)
    for trial in range(15):
        base = list(dict.fromkeys(rng.choice([SP, ""]) + "".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))
                                  for _ in range(12)))
        blending = list(dict.fromkeys(rng.choice([BL, ""]) + "".join(rng.choice("abcd") for _ in range(rng.randint(1, 4)))
                                      for _ in range(14)))
        base_rows = [[rng.randrange(len(base)) for _ in range(rng.randint(0, 15))] for _ in range(4)]
        blending_rows = [[rng.randrange(len(blending)) for _ in range(rng.randint(0, 15))] for _ in range(4)]
        mapping, minima = default_vocab_mapping(blending, base, BL, SP, progress=False, with_minima=True)
        got = cooccurrence_mapping(mapping, minima, {p: i for i, p in enumerate(base)},
                                   {p: i for i, p in enumerate(blending)}, cooccurrence_counts(base_rows, len(base), 2),
                                   cooccurrence_counts(blending_rows, len(blending), 2), SP, BL)
        assert got == literal_cooccurrence(blending, base, BL, SP, base_rows, blending_rows, 2), trial


# --- 12.4.1 token alignment --------------------------------------------------------------------

def test_fusellm_cost_compares_pieces_without_the_empty_string_fallback():
    costs = token_cost_matrix(["▁", "a", "<0x0A>"], ["Ġ", "Ċ"], SP, BL, empty_fallback=False)
    assert costs.tolist() == [[0, 1, 6], [1, 1, 6]]
    with_fallback = token_cost_matrix(["▁"], ["Ġ"], SP, BL)
    assert with_fallback.tolist() == [[0]]  # "▁" vs "▁": same here, but via the replaced markers


def test_dtw_tie_orders_differ_and_each_matches_the_literal_definition():
    base, blending = ["a", "ba", "a"], ["ab", "aa", "a", "ba"]
    fusellm = align_tokens(base, blending, SP, BL, tie_order="diagonal-up-left", empty_fallback=False)
    fusechat = align_tokens(base, blending, SP, BL, tie_order="diagonal-left-up", empty_fallback=False)
    assert fusellm == [[0], [1], [2, 3]] == literal_fusellm_align(base, blending, SP, BL, "diagonal-up-left")
    assert fusechat == [[0, 1, 2], [3], [3]] == literal_fusellm_align(base, blending, SP, BL, "diagonal-left-up")
    rng = random.Random(5)
    for _ in range(300):
        b = [rng.choice(["▁", "a", "▁a", "ab", "b", "▁ba"]) for _ in range(rng.randint(1, 7))]
        x = [rng.choice(["Ġ", "a", "Ġa", "ab", "b", "ba", "Ċ"]) for _ in range(rng.randint(1, 7))]
        assert align_tokens(b, x, SP, BL, "diagonal-up-left", False) == literal_fusellm_align(b, x, SP, BL)


# --- 12.4.2 distribution alignment -------------------------------------------------------------

BASE_VOCAB = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "▁the", 4: "▁cat", 5: "▁sat", 6: "s", 7: "at", 8: "▁c", 9: "▁"}
BLEND_VOCAB = {0: "<|endoftext|>", 1: "the", 2: "Ġthe", 3: "Ġcat", 4: "Ġsat", 5: "Ġc", 6: "at", 7: "Ġdog", 8: "s"}


def _tables(align_type, mapping=None, width=None):
    base = [BASE_VOCAB.get(i) for i in range(10)]
    blending = [BLEND_VOCAB.get(i) for i in range(width or 9)]
    return AlignmentTables.build(base, blending, SP, BL, align_type, mapping)


def test_one_hot_is_the_current_token_or_the_next_with_the_option():
    # base "▁the ▁cat" vs blending "Ġdog Ġdog": one-to-one, pieces differ -> ONE-HOT everywhere.
    logits = [[5.0, 4.0], [3.0, 2.0]]
    indices = [[3, 4], [4, 3]]
    current = align_row([3, 4], [7, 7], logits, indices, _tables("hard"))
    following = align_row([3, 4], [7, 7], logits, indices, _tables("hard"), onehot_next_token=True)
    assert current == ([[1.0], [1.0]], [[3], [4]], 0)
    assert following == ([[1.0], [1.0]], [[4], [4]], 0)  # the last position repeats the last token


def test_hard_soft_empty_lists_position_zero_marker_and_skips():
    # base "▁the ▁cat </s>", blending "the Ġcat <|endoftext|>": at i = 0 the byte-level "the" gets "▁".
    base_ids, blend_ids = [3, 4, 2], [1, 3, 0]
    logits = [[9.0, 8.0, 7.0, 6.0], [5.0, 4.0, 3.0, 2.0], [1.0, 0.5, 0.25, 0.125]]
    indices = [[2, 1, 6, 20], [7, 3, 2, 5], [0, 0, 8, 7]]
    hard = align_row(base_ids, blend_ids, logits, indices, _tables("hard", width=30))
    # position 0: "▁the" (from "Ġthe" and "the" with the dummy prefix: both base "▁the", first wins), "at",
    # id 20 has no piece (skipped, counted); position 1: "Ġdog" not in base, "▁cat", "▁the"... "</s>" vs
    # "<|endoftext|>": ONE-HOT on the current token.
    assert hard[1] == [[3, 7], [4, 3, 8], [2]]
    assert hard[0] == [[9.0, 7.0], [4.0, 3.0, 2.0], [1.0]]
    assert hard[2] == 1
    mapping = {"the": "▁the", "▁the": "▁the", "▁cat": "▁cat", "▁sat": "▁sat", "▁c": "▁c", "at": "at",
               "▁dog": "▁c", "<|endoftext|>": "</s>"}  # "s" is missing on purpose
    soft = align_row(base_ids, blend_ids, logits, indices, _tables("soft", mapping, width=30))
    # position 2 matches through the mapping; "s" (id 8) is no key: skipped.
    assert soft[1] == [[3, 7], [8, 4, 3], [2, 8]]
    assert soft[0] == [[9.0, 7.0], [5.0, 4.0, 3.0], [1.0, 0.125]]
    assert soft[2] == 2
    # hard: a matched position whose candidates are all missing from the pivot gets an empty list.
    empty = align_row([4], [3], [[1.0, 2.0]], [[7, 7]], _tables("hard"))
    assert empty == ([[]], [[]], 0)


def test_distribution_alignment_matches_the_literal_oracle_on_real_text(stage_tokenizers):
    pivot, _, byte_level = stage_tokenizers
    text = "The cat sat on the mat.\n  Dogs don't; 12 cats do! Über naïve 漢字 code: x = f(y) + 3"
    base_ids = encode_documents(pivot, [text], 2048)[0]
    blend_ids = encode_documents(byte_level, [text], 2048)[0]
    rng = random.Random(7)
    width = len(byte_level) + 300  # a logit layer wider than the tokenizer, as MPT's
    indices = [[rng.randrange(width) if rng.random() < 0.5 else t for t in rng.sample(blend_ids, 5)] for _ in blend_ids]
    logits = [sorted((round(rng.uniform(-5, 5), 2) for _ in range(5)), reverse=True) for _ in blend_ids]
    base_vocab = dict(enumerate(piece_table(pivot)))
    blend_table = piece_table(byte_level, width)
    blend_vocab = {i: p for i, p in enumerate(blend_table) if p is not None}
    mapping = default_vocab_mapping(ordered_pieces(byte_level)[:20000], ordered_pieces(pivot), BL, SP, progress=False)
    for align_type in ("hard", "soft"):
        for onehot_next in (False, True):
            tables = AlignmentTables.build(piece_table(pivot), blend_table, SP, BL, align_type, mapping)
            got = align_row(base_ids, blend_ids, logits, indices, tables, onehot_next)
            expected = literal_distributions(base_ids, blend_ids, logits, indices, base_vocab, blend_vocab, SP, BL,
                                             align_type, mapping, onehot_next)
            assert got == expected


# --- 12.4.3 whole sets: row identity, chained columns ------------------------------------------

def _representation_set(tokenizer, texts, k=3, seed=0, with_text=True):
    from datasets import Dataset

    rng = random.Random(seed)
    ids = encode_documents(tokenizer, texts, 2048)
    columns = {"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": ids,
               "per_step_logits": [[sorted((rng.uniform(0, 9) for _ in range(k)), reverse=True) for _ in r] for r in ids],
               "per_step_indices": [[rng.sample(r, 1) + [rng.randrange(len(tokenizer)) for _ in range(k - 1)] for _ in r]
                                    for r in ids],
               "metric_ce": [rng.uniform(1, 5) for _ in ids],
               "per_step_metric_ce": [[1.0] * (len(r) - 1) for r in ids]}
    if with_text:
        columns = {"text": texts, **columns}
    return Dataset.from_dict(columns)


TEXTS = ["The cat sat on the mat.", "Numbers: 3.14159 and 2,718.", "Der Hund schläft. 犬が寝ている。"]


def test_chained_alignment_columns_and_row_identity(model_paths, stage_tokenizers):
    pivot_path, s0_path, s1_path = (str(p) for p in model_paths.values())
    pivot, source0, source1 = stage_tokenizers
    base = _representation_set(pivot, TEXTS, seed=1)
    run0, skipped0 = align_split(base, _representation_set(source0, TEXTS, seed=2), PairSpec(pivot_path, s0_path, "hard"),
                                 0, 2048)
    assert run0.column_names == ["input_ids", "attention_mask", "labels", "per_step_logits", "per_step_indices",
                                 "metric_ce", "per_step_aligned_logits_0", "per_step_aligned_indices_0",
                                 "metric_ce_aligned_0"]
    source1_set = _representation_set(source1, TEXTS, seed=3)
    run1, _ = align_split(run0, source1_set, PairSpec(pivot_path, s1_path, "hard"), 1, 2048)
    assert run1.column_names == run0.column_names + ["per_step_aligned_logits_1", "per_step_aligned_indices_1",
                                                     "metric_ce_aligned_1"]
    assert run1["metric_ce_aligned_1"] == pytest.approx(source1_set["metric_ce"], rel=1e-3)
    assert run1["input_ids"] == base["input_ids"]
    for row in run1:
        assert len(row["per_step_aligned_indices_1"]) == len(row["input_ids"])

    with pytest.raises(InputError, match="has 3 rows but .* has 2"):
        align_split(base, _representation_set(source0, TEXTS[:2]), PairSpec(pivot_path, s0_path, "hard"), 0, 2048)
    with pytest.raises(InputError, match="row 1: .*different documents"):
        align_split(base, _representation_set(source0, [TEXTS[0], TEXTS[2], TEXTS[1]]),
                    PairSpec(pivot_path, s0_path, "hard"), 0, 2048)
    # run 0's output has no text: the source text re-encoded with the pivot's tokenizer must give its tokens.
    with pytest.raises(InputError, match="row 2: the pivot tokens"):
        align_split(run0, _representation_set(source1, TEXTS[:2] + ["Another text."]),
                    PairSpec(pivot_path, s1_path, "hard"), 1, 2048)
    with pytest.raises(InputError, match="already has"):
        align_split(run0, source1_set, PairSpec(pivot_path, s1_path, "hard"), 0, 2048)
    with pytest.raises(InputError, match=r"missing column\(s\) \['metric_ce'\]"):
        align_split(base, source1_set.remove_columns("metric_ce"), PairSpec(pivot_path, s1_path, "hard"), 0, 2048)


def test_token_alignment_cli_rejects_token_metric_level_and_writes_nothing(tmp_path, model_paths):
    paths = [str(p) for p in model_paths.values()]
    with pytest.raises(InputError, match="--metric_level token"):
        cli.token_alignment_main(["--base_model_name_or_path", paths[0], "--blending_model_name_or_path", paths[1],
                                  "--base_dataset_dir", "x", "--blending_dataset_dir", "y",
                                  "--dataset_save_dir", str(tmp_path / "out"), "--metric_level", "token"])
    assert not (tmp_path / "out").exists()


# --- 12.5 packing ------------------------------------------------------------------------------

def _random_columns(rng, rows):
    lengths = [rng.randint(1, 9) for _ in range(rows)]
    return {
        "input_ids": [[rng.randrange(100) for _ in range(n)] for n in lengths],
        "per_step_logits": [[[rng.random(), rng.random()] for _ in range(n)] for n in lengths],
        "per_step_aligned_indices_0": [[[rng.randrange(9)] * rng.randint(0, 2) for _ in range(n)] for n in lengths],
        "metric_ce": [rng.uniform(0, 5) for _ in lengths],
        "metric_ce_aligned_0": [rng.uniform(0, 5) for _ in lengths],
    }


@pytest.mark.parametrize("workers,batch_size", [(None, 1000), (3, 2), (4, 5), (50, 3), (1, 4)])
def test_packing_matches_the_literal_packer(workers, batch_size):
    from datasets import Dataset

    rng = random.Random(workers or 0)
    columns = _random_columns(rng, 23)
    rows = list(packed_rows(Dataset.from_dict(columns), 7, workers, batch_size))
    expected = literal_pack(columns, 7, workers, batch_size)
    assert [r["input_ids"] for r in rows] == expected["input_ids"]
    for name in columns:
        got = [r[name] for r in rows]
        if "metric_ce" in name:
            assert got == expected[name]  # bit-identical: same left-to-right float64 sums
        else:
            assert got == expected[name]
    assert any(len(r["input_ids"]) < 7 for r in rows)  # short chunks at batch ends are kept


def test_packing_cli_nan_rows_token_level_and_fiter_nan(tmp_path):
    from datasets import Dataset, DatasetDict, load_from_disk

    columns = _random_columns(random.Random(1), 6)
    columns["metric_ce_aligned_0"][4] = float("nan")
    DatasetDict({"train": Dataset.from_dict(columns)}).save_to_disk(str(tmp_path / "in"))
    args = ["--dataset_dir", str(tmp_path / "in"), "--model_max_length", "5", "--accept_sets_without_provenance"]
    with pytest.raises(InputError, match="row 4: metric_ce_aligned_0 is NaN"):
        cli.packing_main(args + ["--dataset_save_dir", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()
    with pytest.raises(InputError, match="--metric_level token"):
        cli.packing_main(args + ["--dataset_save_dir", str(tmp_path / "a"), "--metric_level", "token"])
    cli.packing_main(args + ["--dataset_save_dir", str(tmp_path / "b"), "--fiter_nan"])
    packed = load_from_disk(str(tmp_path / "b"))["train"]
    kept = {k: [v for i, v in enumerate(values) if i != 4] for k, values in columns.items()}
    expected = literal_pack(kept, 5, None, 1000)
    assert packed["input_ids"] == expected["input_ids"]
    assert packed["metric_ce"] == expected["metric_ce"]


def test_pack_dataset_dict_streams_every_split_with_float64_metrics(tmp_path):
    from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk

    from fusechat.fusellm.packing import pack_dataset_dict

    columns = {split: _random_columns(random.Random(seed), 17) for split, seed in (("train", 5), ("test", 6))}
    features = Features({"input_ids": List(Value("int32")), "per_step_logits": List(List(Value("float16"))),
                         "per_step_aligned_indices_0": List(List(Value("int64"))), "metric_ce": Value("float16"),
                         "metric_ce_aligned_0": Value("float32")})
    DatasetDict({split: Dataset.from_dict(c, features=features) for split, c in columns.items()}
                ).save_to_disk(str(tmp_path / "in"))
    stored = load_from_disk(str(tmp_path / "in"))  # the values as stored (float16/float32 metrics)
    pack_dataset_dict(str(tmp_path / "in"), str(tmp_path / "out"), 6, num_workers=3, batch_size=2)
    packed = load_from_disk(str(tmp_path / "out"))
    assert sorted(packed) == ["test", "train"]
    for split in ("train", "test"):
        assert packed[split].features == Features({**features, "metric_ce": Value("float64"),
                                                   "metric_ce_aligned_0": Value("float64")})
        expected = literal_pack(stored[split].to_dict(), 6, 3, 2)
        for name in features:
            assert packed[split][name] == expected[name], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # the scratch file is gone


@pytest.mark.parametrize("stage", ["split_long_text", "forward_for_logits", "token_alignment", "packing"])
def test_stage_clis_refuse_an_output_that_is_an_input_before_any_work(tmp_path, stage):
    from datasets import Dataset, DatasetDict

    data = tmp_path / "data"
    DatasetDict({"train": Dataset.from_dict({"text": ["a b c"]})}).save_to_disk(str(data))
    before = sorted(p.name for p in data.iterdir())
    model = str(tmp_path / "no-such-model")  # never loaded: the output is refused first
    argv = {"split_long_text": ["--base_model_name_or_path", model, "--blending_model_name_or_path", model,
                                "--another_blending_model_name_or_path", model, "--dataset", str(data)],
            "forward_for_logits": ["--model_name_or_path", model, "--dataset", str(data)],
            "token_alignment": ["--base_model_name_or_path", model, "--blending_model_name_or_path", model,
                                "--base_dataset_dir", str(tmp_path / "other"), "--blending_dataset_dir", str(data)],
            "packing": ["--dataset_dir", str(data)]}[stage]
    with pytest.raises(InputError, match=r"--dataset_save_dir .*data is also an input"):
        getattr(cli, f"{stage}_main")(argv + ["--dataset_save_dir", str(data)])
    assert sorted(p.name for p in data.iterdir()) == before


# --- 12.7 the published stage commands, paths local, sizes tiny -----------------------------------

def _published(tmp_path, script, *args):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["python", f"./src/utils/{script}.py", *map(str, args)], cwd=root / "FuseLLM",
                            env={**os.environ, "PYTHONPATH": str(root / "src")}, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_published_stage_commands_run_on_cpu(tmp_path, model_paths):
    from datasets import load_from_disk

    from fusechat.fusellm.corpus import sample_dataset_dict

    pivot, openllama, mpt = (str(p) for p in model_paths.values())
    sample_dataset_dict().save_to_disk(str(tmp_path / "minipile"))
    cache = ["--cache_dir", tmp_path / ".cache"]
    _published(tmp_path, "split_long_text", "--base_model_name_or_path", pivot, "--blending_model_name_or_path",
               openllama, "--another_blending_model_name_or_path", mpt, "--dataset", tmp_path / "minipile",
               "--dataset_save_dir", tmp_path / "split", *cache, "--block_size", 2048,
               "--preprocessing_num_workers", 2)
    split = load_from_disk(str(tmp_path / "split"))
    assert len(split["train"]) > 50  # the long documents were cut

    shard = ["--dataset_split_num", 8, "--dataset_index", 7]  # the last shard of eight takes the remainder
    for name, model in (("llama_2", pivot), ("open_llama", openllama), ("mpt", mpt)):
        _published(tmp_path, "forward_for_logits", "--model_name_or_path", model, "--dataset", tmp_path / "split",
                   "--dataset_save_dir", tmp_path / f"{name}_representation_7_8", *shard, *cache,
                   "--model_max_length", 2048, "--training_mode", "full", "--load_in_half", "bf16",
                   "--batch_size", 8, "--preprocessing_num_workers", 1, "--top_k_logits", 10,
                   "--save_per_token_metric")
    for name, model in (("open_llama", openllama), ("mpt", mpt)):
        _published(tmp_path, "vocab_mapping", "--base_model_name_or_path", pivot, "--blending_model_name_or_path",
                   model, "--dataset_dir", tmp_path / "split", "--vocab_mapping_save_dir",
                   tmp_path / f"llama_2_{name}_vocab_mapping.json", *cache, "--model_max_length", 2048,
                   "--vocab_mapping_type", "default", "--num_process", 2)
    base = tmp_path / "llama_2_representation_7_8"
    for index, name in enumerate(("open_llama", "mpt")):
        out = tmp_path / f"aligned_{index}_7_8"
        _published(tmp_path, "token_alignment", "--base_model_name_or_path", pivot, "--blending_model_name_or_path",
                   openllama if index == 0 else mpt, "--base_dataset_dir", base, "--blending_dataset_dir",
                   tmp_path / f"{name}_representation_7_8", "--dataset_save_dir", out, *cache,
                   "--model_max_length", 2048, "--preprocessing_num_workers", 2, "--batch_size", 100,
                   "--blending_model_index", index, "--vocab_align_type", "soft", "--vocab_mapping_save_dir",
                   tmp_path / f"llama_2_{name}_vocab_mapping.json", "--metric_level", "sequence")
        base = out
    _published(tmp_path, "packing", "--dataset_dir", base, "--dataset_save_dir", tmp_path / "packed_7_8", *cache,
               "--model_max_length", 2048, "--preprocessing_num_workers", 80, "--batch_size", 1000,
               "--metric_level", "sequence")

    pivot_set = load_from_disk(str(tmp_path / "llama_2_representation_7_8"))
    aligned = load_from_disk(str(base))
    packed = load_from_disk(str(tmp_path / "packed_7_8"))
    mapping = json.loads((tmp_path / "llama_2_mpt_vocab_mapping.json").read_text(encoding="utf-8"))
    assert mapping["▁the"] == "▁the" and len(mapping) == len(load_stage_tokenizer(mpt).get_vocab())
    for split_name in ("train", "validation", "test"):
        rows = len(split[split_name])
        assert len(pivot_set[split_name]) == rows - 7 * (rows // 8)
        assert aligned[split_name].column_names == [
            "input_ids", "attention_mask", "labels", "per_step_logits", "per_step_indices", "metric_ce",
            "per_step_aligned_logits_0", "per_step_aligned_indices_0", "metric_ce_aligned_0",
            "per_step_aligned_logits_1", "per_step_aligned_indices_1", "metric_ce_aligned_1"]
        tokens = sum(len(r) for r in aligned[split_name]["input_ids"])
        assert sum(len(r) for r in packed[split_name]["input_ids"]) == tokens
        assert all(len(r) <= 2048 for r in packed[split_name]["input_ids"])
        assert packed[split_name].column_names == aligned[split_name].column_names
