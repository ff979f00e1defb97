"""align_token_and_vocab (docs/design.md 6) through its script entry point, on real captures of the tiny
OpenChat-vocabulary pivot and the tiny Qwen-vocabulary source, against the literal oracles."""

import json

import numpy as np
import pytest
from datasets import load_from_disk
from scipy import sparse
from distribution_alignment_oracle import oracle_align_distribution
from token_alignment_oracle import literal_align_tokens

from fusechat.kernels.dtw import decoded_token_strings
from fusechat.alignment.vocab_mapping import vocabulary_of
from fusechat.cli.align_token_and_vocab import main as align
from fusechat.cli.get_data_representation import main as capture
from fusechat.errors import InputError

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

RECORDS = [
    {"id": "en", "conversations": [{"from": "human", "value": "What's the capital of France?"},
                                   {"from": "gpt", "value": "The capital of France is Paris."}]},
    {"id": "code", "conversations": [{"from": "human", "value": "Sum a list in Python"},
                                     {"from": "gpt", "value": "Use `sum(xs)`, e.g. sum([1, 2, 3]) == 6."}]},
    {"id": "zh", "conversations": [{"from": "human", "value": "你好，请介绍一下自己。"},
                                   {"from": "gpt", "value": "我是一个乐于助人的助手。"}]},
    {"id": "long", "conversations": [{"from": "human", "value": "Spell internationalization"},
                                     {"from": "gpt", "value": "internationalization   has 20 letters 🙂"}]},
]


@pytest.fixture(scope="module")
def sets(tmp_path_factory, pivot_path, diff_vocab_source_path):
    root = tmp_path_factory.mktemp("align")
    corpus = root / "corpus.json"
    corpus.write_text(json.dumps(RECORDS, ensure_ascii=False))
    for name, model in (("base", pivot_path), ("blend", diff_vocab_source_path)):
        capture(["--model_name_or_path", str(model), "--data_path", str(corpus), "--tknz_dataset_path",
                 str(root / f"{name}_tk"), "--dataset_save_dir", str(root / f"{name}_rep"), "--get_representation",
                 "--mask_instruction", "--save_per_token_metric", "--model_max_length", "96", "--top_k_logits", "4"])
    return root


def common(sets, pivot_path, diff_vocab_source_path, *extra):
    return ["--base_model_name_or_path", str(pivot_path), "--blending_model_name_or_path",
            str(diff_vocab_source_path), *extra]


def load(path):
    return load_from_disk(str(path))["train"]


def test_default_pipeline_matches_the_oracles(sets, tmp_path, pivot_path, diff_vocab_source_path,
                                              openchat_tokenizer, qwen_tokenizer):
    matrix, mapping = tmp_path / "m.npz", tmp_path / "map.json"
    align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_tk"),
                 "--blending_dataset_dir", str(sets / "blend_tk"), "--do_token_alignment", "--align_type", "default",
                 "--token_alignment_matrix_file", str(matrix), "--blending_to_base_file", str(mapping),
                 "--aligned_dataset_tknz_save_dir", str(tmp_path / "tknz")))
    align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_rep"),
                 "--blending_dataset_dir", str(sets / "blend_rep"), "--do_distribution_alignment",
                 "--align_type", "default", "--use_token_alignment_matrix", "--token_alignment_matrix_file",
                 str(matrix), "--blending_to_base_file", str(mapping), "--aligned_dataset_save_dir",
                 str(tmp_path / "aligned"), "--preprocessing_num_workers", "2", "--batch_size", "2",
                 "--aligned_dataset_tknz_save_dir", str(tmp_path / "tknz")))
    base_vocab, blending_vocab = vocabulary_of(openchat_tokenizer), vocabulary_of(qwen_tokenizer)
    blending_to_base = json.loads(mapping.read_text())
    assert len(blending_to_base) == blending_vocab.size
    counts = sparse.load_npz(matrix).tocsr()
    expected_counts = {}
    aligned, tknz = load(tmp_path / "aligned"), load(tmp_path / "tknz")
    base, blend = load(sets / "base_rep"), load(sets / "blend_rep")
    assert aligned["id"] == [r["id"] for r in RECORDS]
    assert "per_step_metric_ce" not in aligned.column_names
    for row, trow, b, s in zip(aligned, tknz, base, blend, strict=True):
        base_tokens = decoded_token_strings(openchat_tokenizer, b["input_ids"])
        blending_tokens = decoded_token_strings(qwen_tokenizer, s["input_ids"])
        alignment = literal_align_tokens(base_tokens, blending_tokens, "▁", "Ġ")
        assert trow["base_to_blending_mapping"] == alignment
        for i, matched in enumerate(alignment):
            for blending_id in {s["input_ids"][j] for j in matched}:
                key = (b["input_ids"][i], blending_id)
                expected_counts[key] = expected_counts.get(key, 0) + 1
        logits, ids = oracle_align_distribution(
            "default", b["input_ids"], base_tokens, s["input_ids"], blending_tokens, alignment,
            s["per_step_logits"], s["per_step_indices"], base_vocab.index, blending_vocab.pieces, "▁", "Ġ",
            blending_to_base, use_token_alignment_matrix=True)
        assert row["fused_per_step_indices"] == ids
        for got, want in zip(row["fused_per_step_logits"], logits):
            np.testing.assert_allclose(got, want, rtol=1e-3)
        assert row["fused_metric_ce"] == pytest.approx(s["metric_ce"])
        assert row["per_step_indices"] == b["per_step_indices"] and row["metric_ce"] == pytest.approx(b["metric_ce"])
    assert {k: int(v) for k, v in counts.todok().items()} == expected_counts


@pytest.mark.parametrize("align_type", ["hard", "soft"])
def test_hard_and_soft(sets, tmp_path, pivot_path, diff_vocab_source_path, align_type, capsys,
                       openchat_tokenizer, qwen_tokenizer):
    mapping = tmp_path / "map.json"
    if align_type == "soft":
        # MinED over the whole 151646 x 32002 pair is a long job: give a precomputed mapping instead,
        # every blending id to base id 5 except the ones the tests below rely on.
        mapping.write_text(json.dumps([5] * 151646))
    align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_rep"),
                 "--blending_dataset_dir", str(sets / "blend_rep"), "--do_distribution_alignment", "--align_type",
                 align_type, "--blending_to_base_file", str(mapping), "--aligned_dataset_save_dir",
                 str(tmp_path / "aligned"), "--metric_level", "token",
                 *["--accept_sets_without_provenance"] * (align_type == "soft")))  # the hand-made mapping
    out, base, blend = load(tmp_path / "aligned"), load(sets / "base_rep"), load(sets / "blend_rep")
    assert out["id"] == blend["id"] == [r["id"] for r in RECORDS]
    assert "metric_ce" not in out.column_names and "per_step_metric_ce" in out.column_names
    base_vocab, blending_vocab = vocabulary_of(openchat_tokenizer), vocabulary_of(qwen_tokenizer)
    for row, b, s in zip(out, base, blend, strict=True):
        np.testing.assert_allclose(row["per_step_fused_metric_ce"], s["per_step_metric_ce"], rtol=1e-6)
        base_tokens = decoded_token_strings(openchat_tokenizer, b["input_ids"])
        blending_tokens = decoded_token_strings(qwen_tokenizer, s["input_ids"])
        alignment = literal_align_tokens(base_tokens, blending_tokens, "▁", "Ġ")
        logits, ids = oracle_align_distribution(
            align_type, b["input_ids"], base_tokens, s["input_ids"], blending_tokens, alignment, s["per_step_logits"],
            s["per_step_indices"], base_vocab.index, blending_vocab.pieces, "▁", "Ġ",
            [5] * 151646 if align_type == "soft" else None)
        assert row["fused_per_step_indices"] == ids
        assert len(row["fused_per_step_logits"]) == len(logits)
        for got, want in zip(row["fused_per_step_logits"], logits, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-3)
    assert "of pivot positions" in capsys.readouterr().out


def test_not_align_copies_source_lists(sets, tmp_path, pivot_path, diff_vocab_source_path):
    align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_rep"),
                 "--blending_dataset_dir", str(sets / "blend_rep"), "--do_distribution_alignment", "--not_align",
                 "--aligned_dataset_save_dir", str(tmp_path / "aligned")))
    aligned, blend = load(tmp_path / "aligned"), load(sets / "blend_rep")
    assert aligned["id"] == blend["id"] == [r["id"] for r in RECORDS]
    for row, s in zip(aligned, blend, strict=True):
        assert row["fused_per_step_indices"] == s["per_step_indices"]
        assert row["fused_per_step_logits"] == s["per_step_logits"]


def test_existing_matrix_and_mapping_are_reused(sets, tmp_path, pivot_path, diff_vocab_source_path):
    matrix, mapping = tmp_path / "m.npz", tmp_path / "map.json"
    sparse.save_npz(matrix, sparse.csr_matrix((32002, 151646), dtype=np.int64))
    mapping.write_text(json.dumps([7] * 151646))
    align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_tk"),
                 "--blending_dataset_dir", str(sets / "blend_tk"), "--do_token_alignment", "--token_alignment_matrix_file",
                 str(matrix), "--blending_to_base_file", str(mapping), "--accept_sets_without_provenance"))
    assert json.loads(mapping.read_text()) == [7] * 151646  # untouched


def test_distribution_pass_needs_the_token_alignment_of_every_row(sets, tmp_path, pivot_path,
                                                                    diff_vocab_source_path):
    """The token pass's tokenized set stands in for the DTW, so a row it lacks (or whose tokens
    differ) is an error, not a silent recomputation."""
    from datasets import DatasetDict

    files = ["--align_type", "hard", "--token_alignment_matrix_file", str(tmp_path / "m.npz")]
    align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_tk"),
                 "--blending_dataset_dir", str(sets / "blend_tk"), "--do_token_alignment", *files,
                 "--aligned_dataset_tknz_save_dir", str(tmp_path / "tknz")))
    tknz = load(tmp_path / "tknz")
    assert tknz["id"] == [r["id"] for r in RECORDS]
    DatasetDict({"train": tknz.select([0, 1, 3])}).save_to_disk(str(tmp_path / "short"))
    with pytest.raises(InputError, match=r"no token alignment of conversation 'zh' \(row 2"):
        align(common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_rep"),
                     "--blending_dataset_dir", str(sets / "blend_rep"), "--do_distribution_alignment", *files,
                     "--aligned_dataset_tknz_save_dir", str(tmp_path / "short"),
                     "--aligned_dataset_save_dir", str(tmp_path / "out"), "--accept_sets_without_provenance"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case,message", [
    ("mapping_length", r"map.json: 3 entries, but the blending vocabulary has 151646 ids"),
    ("missing_matrix", r"m.npz: no such file \(run with --do_token_alignment first\)"),
    ("align_type", r"align_type"),
    ("rows", r"has 4 rows but .* has 3"),
])
def test_bad_input(sets, tmp_path, pivot_path, diff_vocab_source_path, case, message):
    from datasets import DatasetDict

    mapping, matrix = tmp_path / "map.json", tmp_path / "m.npz"
    mapping.write_text(json.dumps([1, 2, 3] if case == "mapping_length" else [1] * 151646))
    blending = sets / "blend_rep"
    if case == "rows":
        DatasetDict({"train": load(blending).select(range(3))}).save_to_disk(str(tmp_path / "short"))
        blending = tmp_path / "short"
    args = common(sets, pivot_path, diff_vocab_source_path, "--base_dataset_dir", str(sets / "base_rep"),
                  "--blending_dataset_dir", str(blending), "--do_distribution_alignment",
                  "--align_type", "bogus" if case == "align_type" else "default",
                  "--blending_to_base_file", str(mapping), "--aligned_dataset_save_dir", str(tmp_path / "out"),
                  "--accept_sets_without_provenance")  # hand-made mapping and sets
    if case == "missing_matrix":
        args += ["--use_token_alignment_matrix", "--token_alignment_matrix_file", str(matrix)]
    with pytest.raises(InputError, match=message):
        align(args)
    assert not (tmp_path / "out").exists()


def test_flags_without_effect_warn(caplog):
    with pytest.raises(InputError, match="nothing to do"):
        align(["--base_model_name_or_path", "b", "--blending_model_name_or_path", "s", "--base_dataset_dir", "x",
               "--blending_dataset_dir", "y", "--model_max_length", "2048", "--temperature", "0.5"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("--model_max_length 2048 has no effect here") for w in warnings)
    assert any(w.startswith("--temperature 0.5 has no effect here") for w in warnings)
