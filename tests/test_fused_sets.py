"""replace_model, filter_nan and fuse_multi (docs/design.md 5 and 7) through their scripts' entry points."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from fusechat.cli import filter_nan, fuse_multi, replace_model
from fusechat.errors import InputError
from fusechat.provenance import write_record
from fusechat.schema import index_dtype_for, representation_features

ROOT = Path(__file__).resolve().parents[1]


# The record of the sets below: made-up ids, one made-up tokenizer.
SYNTHETIC = {"kind": "synthetic", "tokenizer": {"path": "synthetic", "fingerprint": "synthetic", "size": 0}}


def make_set(path, ids, seed, vocab=32002, metrics=None, per_token=True, input_ids=None, fused_metrics=None):
    """A representation set of random rows; with ``fused_metrics`` an aligned set."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, rid in enumerate(ids):
        length = 3 + n % 4
        toks = input_ids[n] if input_ids else [int(x) for x in np.random.default_rng(n).integers(3, 100, length)]
        length = len(toks)
        row = {"id": rid, "input_ids": toks, "labels": [-100] + toks[1:], "attention_mask": [1] * length,
               "per_step_logits": rng.standard_normal((length, 3)).astype(np.float16).tolist(),
               "per_step_indices": rng.integers(0, vocab, (length, 3)).tolist(),
               # float16, as representation sets store their metrics
               "metric_ce": float(np.float16(metrics[n] if metrics is not None else rng.random()))}
        if per_token:
            row["per_step_metric_ce"] = rng.random(length - 1).astype(np.float16).tolist()
        rows.append(row)
    features = representation_features(per_token, index_dtype_for(vocab))
    if fused_metrics is not None:
        for row, m in zip(rows, fused_metrics):
            row["fused_per_step_logits"] = [[float(rng.standard_normal())] for _ in row["input_ids"]]
            row["fused_per_step_indices"] = [[int(rng.integers(0, vocab))] for _ in row["input_ids"]]
            row["fused_metric_ce"] = float(np.float16(m))
        features["fused_per_step_logits"] = features["per_step_logits"]
        features["fused_per_step_indices"] = features["per_step_indices"]
        features["fused_metric_ce"] = features["metric_ce"]
    DatasetDict({"train": Dataset.from_list(rows, features=features)}).save_to_disk(str(path))
    write_record(path, SYNTHETIC)
    return rows


def load(path):
    return load_from_disk(str(path))["train"]


def test_replace_source_copies_distributions_row_by_row(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    pivot = make_set(tmp_path / "p", ids, 1)
    source = make_set(tmp_path / "s", ids, 2)
    replace_model.main(["--dataset_dir", str(tmp_path / "p"), "--replace_dataset_dir", str(tmp_path / "s"),
                        "--dataset_save_dir", str(tmp_path / "out")])
    out = load(tmp_path / "out")
    assert "per_step_metric_ce" not in out.column_names
    for got, p, s in zip(out, pivot, source):
        for column in ("id", "input_ids", "labels", "attention_mask", "per_step_indices"):
            assert got[column] == p[column]
        assert got["metric_ce"] == pytest.approx(p["metric_ce"])
        assert got["fused_per_step_indices"] == s["per_step_indices"]
        np.testing.assert_allclose(got["fused_per_step_logits"], s["per_step_logits"])
        assert got["fused_metric_ce"] == pytest.approx(s["metric_ce"])


def test_replace_concatenates_lists_in_order_and_pivot_mode(tmp_path):
    ids = [f"c{i}" for i in range(8)]
    make_set(tmp_path / "p0", ids[:3], 1, input_ids=None)
    rows_p1 = make_set(tmp_path / "p1", ids[3:], 1)
    # Same conversations split the same way, the source with other distributions.
    src0 = make_set(tmp_path / "s0", ids[:3], 5)
    src1 = make_set(tmp_path / "s1", ids[3:], 6)
    replace_model.main(["--dataset_dir", f"{tmp_path}/p0,{tmp_path}/p1", "--replace_dataset_dir",
                        f"{tmp_path}/s0,{tmp_path}/s1", "--dataset_save_dir", str(tmp_path / "out"),
                        "--replace_model", "pivot"])
    out = load(tmp_path / "out")
    assert out["id"] == ids
    assert out["per_step_indices"] == [r["per_step_indices"] for r in src0 + src1]
    assert "fused_metric_ce" not in out.column_names and len(rows_p1) == 5


@pytest.mark.parametrize("change,message", [
    ("count", "has 4 rows but"),
    ("ids", "row 2: conversation id 'c2' in .* but 'other' in"),
    ("input_ids", "row 1 \\(id 'c1'\\), position 2: input_ids differ"),
    ("vocab", "stores int32 vocabulary ids but .* uint16: their vocabularies differ"),
])
def test_replace_rejects_mismatched_sets(tmp_path, change, message):
    ids = ["c0", "c1", "c2", "c3"]
    make_set(tmp_path / "p", ids, 1, input_ids=[[5, 6, 7], [5, 6, 9], [1, 2, 3], [4, 4, 4]])
    if change == "count":
        make_set(tmp_path / "s", ids[:3], 2, input_ids=[[5, 6, 7], [5, 6, 9], [1, 2, 3]])
    elif change == "ids":
        make_set(tmp_path / "s", ["c0", "c1", "other", "c3"], 2, input_ids=[[5, 6, 7], [5, 6, 9], [1, 2, 3], [4, 4, 4]])
    elif change == "input_ids":
        make_set(tmp_path / "s", ids, 2, input_ids=[[5, 6, 7], [5, 6, 8], [1, 2, 3], [4, 4, 4]])
    else:
        make_set(tmp_path / "s", ids, 2, vocab=151646, input_ids=[[5, 6, 7], [5, 6, 9], [1, 2, 3], [4, 4, 4]])
    with pytest.raises(InputError, match=message):
        replace_model.main(["--dataset_dir", str(tmp_path / "p"), "--replace_dataset_dir", str(tmp_path / "s"),
                            "--dataset_save_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_filter_nan_drops_and_reports(tmp_path, capsys):
    ids = [f"c{i}" for i in range(5)]
    make_set(tmp_path / "a", ids, 1, metrics=[0.5, math.nan, 0.7, 0.1, 0.2],
             fused_metrics=[0.3, 0.3, 0.3, math.nan, 0.3])
    filter_nan.main(["--input_data_dir", str(tmp_path / "a"), "--output_data_dir", str(tmp_path / "a_fnan")])
    assert load(tmp_path / "a_fnan")["id"] == ["c0", "c2", "c4"]
    assert "dropped 2 of 5 rows" in capsys.readouterr().out
    assert (tmp_path / "a_fnan.dropped.json").read_text().count("c") == 2


def test_fuse_all_mince_picks_lowest_with_nan_as_1e5(tmp_path):
    ids = [f"c{i}" for i in range(4)]
    same = [[3, 4, 5], [6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    metrics = {"a": [0.5, math.nan, 0.4, 2.0], "b": [0.2, 3.0, 0.4, math.nan], "c": [0.9, 2.5, 0.1, 6e4]}
    rows = {k: make_set(tmp_path / k, ids, 1, input_ids=same, fused_metrics=m) for k, m in metrics.items()}
    fuse_multi.main(["--dataset_dir", f"{tmp_path}/a,{tmp_path}/b,{tmp_path}/c", "--dataset_save_dir",
                     str(tmp_path / "all")])
    out = load(tmp_path / "all")
    # Oracle: per row the source with the lowest metric, NaN = 1e5, first on ties.
    for r, got in enumerate(out):
        values = [1e5 if math.isnan(metrics[k][r]) else metrics[k][r] for k in "abc"]
        winner = "abc"[values.index(min(values))]
        assert got["fused_per_step_indices"] == rows[winner][r]["fused_per_step_indices"]
        assert got["fused_metric_ce"] == pytest.approx(rows[winner][r]["fused_metric_ce"], nan_ok=True)
        assert got["per_step_indices"] == rows["a"][r]["per_step_indices"]


def test_add_new_keeps_lower_ties_to_existing(tmp_path):
    ids = ["c0", "c1", "c2"]
    same = [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    old = make_set(tmp_path / "old", ids, 1, input_ids=same, fused_metrics=[1.0, 1.0, 1.0])
    new = make_set(tmp_path / "new", ids, 2, input_ids=same, fused_metrics=[0.5, 1.0, 2.0])
    fuse_multi.main(["--fused_dataset_dir", str(tmp_path / "old"), "--dataset_dir", str(tmp_path / "new"),
                     "--dataset_save_dir", str(tmp_path / "out"), "--mode", "add-new"])
    out = load(tmp_path / "out")
    assert [r["fused_per_step_indices"] for r in out] == [new[0]["fused_per_step_indices"],
                                                          old[1]["fused_per_step_indices"],
                                                          old[2]["fused_per_step_indices"]]


def test_fuse_multi_rejects_misaligned_sets(tmp_path):
    make_set(tmp_path / "a", ["c0", "c1"], 1, fused_metrics=[1, 1])
    make_set(tmp_path / "b", ["c0", "c9"], 1, fused_metrics=[1, 1])
    with pytest.raises(InputError, match="row 1: conversation id 'c1'"):
        fuse_multi.main(["--dataset_dir", f"{tmp_path}/a,{tmp_path}/b", "--dataset_save_dir", str(tmp_path / "o")])
    with pytest.raises(InputError, match="missing column"):
        make_set(tmp_path / "plain", ["c0", "c1"], 1)
        fuse_multi.main(["--dataset_dir", f"{tmp_path}/a,{tmp_path}/plain", "--dataset_save_dir", str(tmp_path / "o")])


@pytest.mark.slow
def test_scripts_report_bad_input_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "FuseChat/train/filter_nan.py"), "--input_data_dir",
                             str(tmp_path / "missing"), "--output_data_dir", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: aligned set folder not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_replace_on_real_captures(tmp_path, pivot_path, same_vocab_source_path):
    """End to end: two same-vocabulary tiny models captured on one corpus, then replace_model."""
    capture_and_replace(tmp_path, [{"id": f"r{i}", "conversations": [
        {"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": "Answer " * (i + 1)}]}
        for i in range(4)], pivot_path, same_vocab_source_path)
    out, s = load(tmp_path / "out"), load(tmp_path / "s")
    assert out["fused_metric_ce"] == pytest.approx(s["metric_ce"])
    assert out["fused_per_step_indices"] == s["per_step_indices"]


# ---- same vocabulary, other turn separator (Mixtral against OpenChat) --------------------------------

def exchange_rows(separator: int, tamper=None):
    """Token rows of the openchat_3.5 shape: BOS, user turn + separator (masked), reply + separator (labels)."""
    rows = [[1, 10, 11, separator, 20, 21, 22, separator, 12, separator, 23, separator],
            [1, 13, separator, 24, separator],
            [1, 14, 15, 16, separator, 25, 26, separator]]
    labels = [[-100] * 4 + rows[0][4:8] + [-100] * 2 + rows[0][10:],
              [-100] * 3 + rows[1][3:],
              [-100] * 5 + rows[2][5:]]
    if tamper:
        tamper(rows, labels)
    return rows, labels


def make_token_set(path, rows, labels, seed):
    made = make_set(path, [f"c{i}" for i in range(len(rows))], seed, input_ids=rows)
    ds = load(path).map(lambda _, i: {"labels": labels[i]}, with_indices=True)
    DatasetDict({"train": ds}).save_to_disk(str(path) + "_l")
    write_record(str(path) + "_l", SYNTHETIC)
    return made


def run_replace(tmp_path):
    replace_model.main(["--dataset_dir", f"{tmp_path}/p_l", "--replace_dataset_dir", f"{tmp_path}/s_l",
                        "--dataset_save_dir", str(tmp_path / "out")])


def test_replace_accepts_other_separator_and_reports_positions(tmp_path, caplog):
    make_token_set(tmp_path / "p", *exchange_rows(32000), 1)
    source = make_token_set(tmp_path / "s", *exchange_rows(2), 2)
    with caplog.at_level("INFO", logger="fusechat"):
        run_replace(tmp_path)
    # 4 + 2 + 2 separators, in 3 rows, pivot 32000 against source 2.
    assert "8 token positions in 3 rows differ" in caplog.text and "pivot id 32000, source id 2" in caplog.text
    out = load(tmp_path / "out")
    assert out["input_ids"] == exchange_rows(32000)[0]  # the pivot's tokens stay
    assert out["fused_per_step_indices"] == [r["per_step_indices"] for r in source]


def test_replace_same_separator_reports_zero(tmp_path, caplog):
    make_token_set(tmp_path / "p", *exchange_rows(32000), 1)
    make_token_set(tmp_path / "s", *exchange_rows(32000), 2)
    with caplog.at_level("INFO", logger="fusechat"):
        run_replace(tmp_path)
    assert "0 positions differ" in caplog.text


def change_token(rows, labels):
    rows[2][6] = 99  # inside the reply of row 2
    labels[2][6] = 99


def change_length(rows, labels):
    rows[1][1:1] = [17]
    labels[1][1:1] = [-100]


def separator_in_user_text(rows, labels):
    rows[0][2] = 2  # the source's separator where the pivot has an ordinary token


@pytest.mark.parametrize("tamper,message", [
    (change_token, "row 2 \\(id 'c2'\\), position 6: input_ids differ .* \\(id 26\\) and .* \\(id 99\\)"),
    (change_length, "row 1 \\(id 'c1'\\): .* has 5 tokens but .* has 6 \\(first differing position 1\\)"),
    (separator_in_user_text, "row 0 \\(id 'c0'\\), position 2: input_ids differ"),
])
def test_replace_rejects_differences_outside_separators(tmp_path, tamper, message):
    make_token_set(tmp_path / "p", *exchange_rows(32000), 1)
    make_token_set(tmp_path / "s", *exchange_rows(2, tamper), 2)
    with pytest.raises(InputError, match=message):
        run_replace(tmp_path)
    assert not (tmp_path / "out").exists()


def test_replace_mixtral_tiny_against_the_pivot(tmp_path, pivot_path):
    """The recipe's pair: Mixtral closes turns with </s> (2), OpenChat with <|end_of_turn|> (32000)."""
    from fusechat import fixtures

    exchanges = [1, 2, 1]
    records = [{"id": f"r{i}", "conversations": [
        turn for k in range(n) for turn in ({"from": "human", "value": f"Question {i}.{k}?"},
                                            {"from": "gpt", "value": f"{k} answers " * (i + 1)})]}
        for i, n in enumerate(exchanges)]
    capture_and_replace(tmp_path, records, pivot_path, fixtures.build_tiny_model("mixtral-instruct-tiny"))
    p, s = load(tmp_path / "p"), load(tmp_path / "s")
    for a, b, n in zip(p["input_ids"], s["input_ids"], exchanges):
        differ = [(x, y) for x, y in zip(a, b) if x != y]
        assert differ == [(32000, 2)] * (2 * n)  # every turn's separator, nothing else
    assert load(tmp_path / "out")["fused_metric_ce"] == s["metric_ce"]


def capture_and_replace(tmp_path, records, pivot_path, source_path) -> None:
    """Representations of ``records`` by both models (tmp_path/p, tmp_path/s), then replace_model into tmp_path/out."""
    import json

    from fusechat.cli.get_data_representation import main as capture

    corpus = tmp_path / "c.json"
    corpus.write_text(json.dumps(records))
    for name, path in (("p", pivot_path), ("s", source_path)):
        capture(["--model_name_or_path", str(path), "--data_path", str(corpus), "--tknz_dataset_path",
                 str(tmp_path / f"{name}_tk"), "--dataset_save_dir", str(tmp_path / name), "--get_representation",
                 "--mask_instruction"])
    replace_model.main(["--dataset_dir", str(tmp_path / "p"), "--replace_dataset_dir", str(tmp_path / "s"),
                        "--dataset_save_dir", str(tmp_path / "out")])
