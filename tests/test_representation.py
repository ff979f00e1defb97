"""get_data_representation (docs/design.md 2 and 4) through its CLI entry point, against a per-row oracle."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.cli.get_data_representation import main
from fusechat.errors import InputError
from fusechat.modeling import load_config, rope_scaling_factor
from fusechat.templates import encode_conversation, get_template

pytestmark = pytest.mark.slow  # end-to-end: whole scripts, model runs or subprocesses

RECORDS = [
    {"id": "en", "conversations": [
        {"from": "human", "value": "Hello there, how are you?"},
        {"from": "gpt", "value": "I'm fine, thanks! How can I help you today?"},
        {"from": "human", "value": "What is 12 * 7?"},
        {"from": "gpt", "value": "12 * 7 = 84."}]},
    {"id": "zh", "conversations": [
        {"from": "gpt", "value": "a first message from gpt is dropped"},
        {"from": "human", "value": "写一首关于春天的诗"},
        {"from": "gpt", "value": "春眠不觉晓，处处闻啼鸟。"}]},
    {"id": "code", "conversations": [
        {"from": "human", "value": "Reverse a list in Python."},
        {"from": "gpt", "value": "```python\nxs = [1, 2, 3]\nprint(xs[::-1])\n```"}]},
    {"id": "short", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {"id": "emoji", "conversations": [
        {"from": "human", "value": "Say something nice 🙂"},
        {"from": "gpt", "value": "You are doing great 🎉🎉 keep going."}]},
]


def write_corpus(tmp_path, records=RECORDS, name="corpus.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def run(tmp_path, model_path, corpus, *extra, name="rep"):
    tk, rep = tmp_path / f"{name}_tknz", tmp_path / f"{name}_rep"
    main(["--model_name_or_path", str(model_path), "--data_path", str(corpus), "--tknz_dataset_path", str(tk),
          "--dataset_save_dir", str(rep), "--mask_instruction", "--get_representation", *extra])
    return tk, rep


def oracle(model, tokenizer, record, max_length, top_k, mask_instruction=True):
    """One unpadded row at a time, full forward pass, float16 logits, F.cross_entropy; metric_ce in
    float16 as the released code: CEs rounded to float16, their sum rounded, the quotient rounded."""
    turns = record["conversations"]
    if turns[0]["from"] != "human":
        turns = turns[1:]
    messages = [("user" if t["from"] == "human" else "assistant", t["value"]) for t in turns]
    enc = encode_conversation(tokenizer, get_template("openchat_3.5"), messages, max_length, mask_instruction)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].to(torch.float16)
    labels = torch.tensor(enc["labels"])
    ce = torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=-100, reduction="none")
    mask = labels[1:] != -100
    ce = ce.to(torch.float16)
    metric = (ce * mask).sum() / mask.sum()
    assert metric.dtype == torch.float16
    values, indices = torch.topk(logits, top_k, dim=-1)
    return enc, ce.numpy(), float(metric), values.float().numpy(), indices.numpy()


@pytest.mark.parametrize("model_fixture", ["pivot_path", "diff_vocab_source_path"])
def test_representation_matches_oracle(tmp_path, request, model_fixture):
    model_path = request.getfixturevalue(model_fixture)
    tk, rep = run(tmp_path, model_path, write_corpus(tmp_path), "--batch_size", "2", "--top_k_logits", "5",
                  "--save_per_token_metric", "--model_max_length", "256")
    ds = load_from_disk(str(rep))["train"]
    assert ds["id"] == [r["id"] for r in RECORDS]  # input order kept despite length-sorted batches
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    for row, record in zip(ds, RECORDS):
        enc, ce, metric, values, indices = oracle(model, tokenizer, record, 256, 5)
        assert row["input_ids"] == enc["input_ids"] and row["labels"] == enc["labels"]
        assert row["attention_mask"] == [1] * len(enc["input_ids"])  # no padding stored
        got_values = np.array(row["per_step_logits"], dtype=np.float32)
        assert got_values.shape == (len(enc["input_ids"]), 5)
        np.testing.assert_allclose(got_values, values, atol=1e-2)
        assert (np.array(row["per_step_indices"])[:, 0] == indices[:, 0]).mean() > 0.95
        np.testing.assert_allclose(row["per_step_metric_ce"], ce, rtol=1e-3, atol=1e-3)
        assert math.isclose(row["metric_ce"], metric, rel_tol=2e-3)  # an ulp of float16 either way
    assert sorted(load_from_disk(str(tk))["train"].column_names) == ["attention_mask", "id", "input_ids", "labels"]


def test_batching_does_not_change_results(tmp_path, pivot_path):
    corpus = write_corpus(tmp_path)
    _, one = run(tmp_path, pivot_path, corpus, "--batch_size", "1", name="one")
    _, many = run(tmp_path, pivot_path, corpus, "--batch_size", "4", name="many")
    a, b = load_from_disk(str(one))["train"], load_from_disk(str(many))["train"]
    assert len(a) == len(b) > 1 and a["id"] == b["id"]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x["per_step_logits"], y["per_step_logits"], atol=1e-2)
        assert math.isclose(x["metric_ce"], y["metric_ce"], rel_tol=2e-3)


def test_metric_without_mask_instruction_averages_all_positions(tmp_path, pivot_path):
    tk, rep = tmp_path / "tk", tmp_path / "rep"
    main(["--model_name_or_path", str(pivot_path), "--data_path", str(write_corpus(tmp_path)),
          "--tknz_dataset_path", str(tk), "--dataset_save_dir", str(rep), "--get_representation",
          "--save_per_token_metric"])
    for row in load_from_disk(str(rep))["train"]:
        assert row["labels"] == row["input_ids"]
        assert math.isclose(row["metric_ce"], float(np.mean(row["per_step_metric_ce"])), rel_tol=2e-3)


def test_nan_metric_needs_no_assert(tmp_path, pivot_path):
    # Truncated inside the first user turn: no labelled position, metric_ce is NaN.
    corpus = write_corpus(tmp_path, RECORDS[:1])
    with pytest.raises(InputError, match="conversation 'en': metric_ce is NaN"):
        run(tmp_path, pivot_path, corpus, "--model_max_length", "6", name="strict")
    _, rep = run(tmp_path, pivot_path, corpus, "--model_max_length", "6", "--no_assert", name="lenient")
    row = load_from_disk(str(rep))["train"][0]
    assert len(row["input_ids"]) == 6 and math.isnan(row["metric_ce"])


def test_tokenize_only_and_reuse(tmp_path, pivot_path):
    corpus = write_corpus(tmp_path)
    tk = tmp_path / "tk"
    main(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus), "--tknz_dataset_path", str(tk),
          "--mask_instruction"])
    assert load_from_disk(str(tk))["train"].num_rows == len(RECORDS)
    # An existing tokenized set is reused: the corpus is not even read again.
    main(["--model_name_or_path", str(pivot_path), "--data_path", str(tmp_path / "gone.json"),
          "--tknz_dataset_path", str(tk), "--dataset_save_dir", str(tmp_path / "rep"), "--get_representation",
          "--mask_instruction"])
    assert load_from_disk(str(tmp_path / "rep"))["train"]["id"] == [r["id"] for r in RECORDS]


@pytest.mark.parametrize("split_num,expected", [(2, [["en", "zh"], ["code", "short", "emoji"]]),
                                                (5, [["en"], ["zh"], ["code"], ["short"], ["emoji"]])])
def test_splits_are_contiguous_and_last_takes_remainder(tmp_path, pivot_path, split_num, expected):
    corpus = write_corpus(tmp_path)
    for index, ids in enumerate(expected):
        tk = tmp_path / f"tk{split_num}_{index}"
        main(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus), "--tknz_dataset_path", str(tk),
              "--dataset_split_num", str(split_num), "--dataset_index", str(index)])
        assert load_from_disk(str(tk))["train"]["id"] == ids


def test_sample_prop_is_seeded(tmp_path, pivot_path):
    records = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
               for i in range(50)]
    corpus = write_corpus(tmp_path, records)
    got = []
    for n in range(2):
        tk = tmp_path / f"tk{n}"
        main(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus), "--tknz_dataset_path", str(tk),
              "--dataset_sample_prop", "0.2"])
        got.append(load_from_disk(str(tk))["train"]["id"])
    assert got[0] == got[1] and len(got[0]) == 10
    assert [int(x) for x in got[0]] == sorted(int(x) for x in got[0])


BAD_RECORDS = [
    ({"id": "noconv"}, "record noconv: no 'conversations' field"),
    ({"id": "empty", "conversations": []}, "record empty: empty conversation"),
    ({"id": "onlygpt", "conversations": [{"from": "gpt", "value": "x"}]}, "record onlygpt: empty conversation"),
    ({"id": "twice", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
     "record twice: roles do not alternate"),
]


@pytest.mark.parametrize("record,message", BAD_RECORDS)
def test_bad_records_are_named(tmp_path, pivot_path, record, message):
    corpus = write_corpus(tmp_path, RECORDS[:2] + [record])
    with pytest.raises(InputError, match=message):
        main(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus),
              "--tknz_dataset_path", str(tmp_path / "tk")])
    assert not (tmp_path / "tk").exists()


def test_skip_invalid_writes_a_report(tmp_path, pivot_path):
    corpus = write_corpus(tmp_path, RECORDS[:2] + [r for r, _ in BAD_RECORDS])
    tk = tmp_path / "tk"
    main(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus), "--tknz_dataset_path", str(tk),
          "--skip_invalid"])
    assert load_from_disk(str(tk))["train"]["id"] == ["en", "zh"]
    report = json.loads((tmp_path / "tk.skipped.json").read_text())
    assert [r["id"] for r in report] == ["noconv", "empty", "onlygpt", "twice"]
    assert all(r["reason"] for r in report)


@pytest.mark.parametrize("args,message", [
    (["--conv_temp", "nope"], "unknown conversation template 'nope'"),
    (["--dataset_split_num", "4", "--dataset_index", "4"], "--dataset_index 4 is out of range"),
    (["--model_name_or_path", "/no/such/model"], "model folder not found: /no/such/model"),
    (["--data_path", "/no/such/data.json"], "data file not found"),
])
def test_bad_arguments(tmp_path, pivot_path, args, message):
    base = {"--model_name_or_path": str(pivot_path), "--data_path": str(write_corpus(tmp_path)),
            "--tknz_dataset_path": str(tmp_path / "tk")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    with pytest.raises(InputError, match=message):
        main([x for kv in base.items() for x in kv])


def test_malformed_json(tmp_path, pivot_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": "a", "conversations": [}')
    with pytest.raises(InputError, match=r"bad.json: malformed JSON at line 1"):
        main(["--model_name_or_path", str(pivot_path), "--data_path", str(bad), "--tknz_dataset_path",
              str(tmp_path / "tk")])


def test_interrupted_capture_leaves_nothing(tmp_path, pivot_path, monkeypatch):
    import fusechat.representation as representation
    from fusechat.storage import file_marker

    calls = {"n": 0}
    original = representation.capture_batch

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(representation, "capture_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, pivot_path, write_corpus(tmp_path), "--batch_size", "1")
    assert not (tmp_path / "rep_rep").exists()
    # Hidden names left: only the markers of the complete outputs written before the interruption.
    hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [p for p in hidden if not any(file_marker(q) == p for q in tmp_path.iterdir() if q.is_file())] == []


def test_published_command_line_runs(tmp_path, pivot_path):
    """The README's command (4 splits, batch 32, top-k 10, bf16, device_map auto), paths aside."""
    corpus = write_corpus(tmp_path, RECORDS * 2)
    rep = tmp_path / "openchat_representation_split0"
    main(["--model_name_or_path", str(pivot_path), "--data_path", str(corpus),
          "--dataset_save_dir", str(rep), "--tknz_dataset_path", str(tmp_path / "openchat_tknz_split0"),
          "--cache_dir", str(tmp_path / "cache"), "--model_max_length", "2048", "--load_in_half", "bf16",
          "--batch_size", "32", "--top_k_logits", "10", "--save_per_token_metric", "--no_assert",
          "--conv_temp", "openchat_3.5", "--flash_attn_transformers", "--mask_instruction",
          "--dataset_split_num", "4", "--dataset_index", "0", "--device_map", "auto", "--get_representation",
          "--preprocessing_num_workers", "2"])
    ds = load_from_disk(str(rep))["train"]
    assert ds.num_rows == 2 and len(ds[0]["per_step_logits"][0]) == 10


def test_rope_scaling(pivot_path):
    assert rope_scaling_factor(2048, 2048) is None
    assert rope_scaling_factor(2048, 3000) == 2
    assert rope_scaling_factor(1024, 4096) == 4
    config = load_config(str(pivot_path), model_max_length=5000)
    assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 3.0
    assert load_config(str(pivot_path), model_max_length=2048).rope_parameters["rope_type"] == "default"


class TableModel(torch.nn.Module):
    """A stand-in LM whose logits at a position are a fixed row chosen by the token there."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32), requires_grad=False)
        vocab = len(table[0])
        self.config = type("Config", (), {"get_text_config": lambda self: type("T", (), {"vocab_size": vocab})()})()

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_metric_ce_in_float16_exactly_as_released(tmp_path):
    """docs/design.md 4: per-token CE rounded to float16, masked sum rounded to float16, quotient in float16."""
    from datasets import Dataset

    from fusechat.representation import CaptureOptions, representation_dataset
    from fusechat.schema import tokenized_features

    table = [[0.1, 2.3, -1.7, 0.9], [1.3, -0.4, 0.6, 2.2], [-2.1, 0.35, 1.75, 0.2], [0.05, 0.15, -0.3, 1.1]]
    ids = [0, 1, 2, 3, 1, 0, 2, 2, 3, 0, 1, 1] * 9
    labels = [-100, -100] + ids[2:40] + [-100] * 10 + ids[50:]
    tokenized = Dataset.from_dict({"id": ["r"], "input_ids": [ids], "labels": [labels], "attention_mask": [[1] * len(ids)]},
                                  features=tokenized_features())
    out = representation_dataset(tokenized, CaptureOptions(top_k=2, per_token_metric=True), TableModel(table), 0,
                                 tmp_path, progress=False)[0]

    # Oracle: exact per-token CE (float64) from the float16-rounded logits, then the released float16 chain.
    logits = np.asarray(table, dtype=np.float16).astype(np.float64)
    ce = [np.log(np.exp(logits[ids[t]]).sum()) - logits[ids[t]][labels[t + 1]]
          for t in range(len(ids) - 1) if labels[t + 1] != -100]
    ce16 = np.asarray(ce).astype(np.float16)
    total16 = np.float16(ce16.astype(np.float64).sum())
    expected = np.float16(float(total16) / len(ce16))
    assert np.float16(out["metric_ce"]) == expected
    assert np.float16(np.mean(ce)) != expected  # a float32/float64 mean would store another value
    steps = [np.float16(c) for c in out["per_step_metric_ce"]]
    labelled = [t for t in range(len(ids) - 1) if labels[t + 1] != -100]
    assert [steps[t] for t in labelled] == list(ce16)
    assert all(steps[t] == 0 for t in range(len(ids) - 1) if t not in labelled)


def test_mince_rewards_compare_in_bfloat16():
    """The released MinCE choice: exp(-ce) in bfloat16; CEs one bfloat16 step apart may tie (pivot wins)."""
    from fusechat.training.collator import source_wins

    pivot = np.array([1.0300, 1.0400, 2.0], dtype=np.float16)
    source = np.array([1.0280, 1.0300, 1.9], dtype=np.float16)
    # bfloat16(1.0300) == bfloat16(1.0280) == 1.03125: a tie, the pivot keeps it (float32 would pick the
    # source); bfloat16(1.0400) == 1.0390625 > 1.03125: the source.
    assert source_wins(pivot, source).tolist() == [False, True, True]
