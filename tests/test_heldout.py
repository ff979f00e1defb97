"""Held-out measures (fusechat.heldout) against hand-computed cross-entropies (docs/design.md 6.3, 8)."""

import json
import math

import pytest
import torch

from fusechat.errors import InputError, run_cli
from fusechat.heldout import heldout_split, main, row_totals


def test_row_totals_on_a_hand_computed_case():
    # Four positions, vocabulary of three. Replies: the tokens at positions 2 and 3 (labels 1, 2), so
    # positions 1 and 2 predict them.
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [0.4, 0.4, 0.2]])
    labels = [-100, -100, 1, 2]
    carried = [True, True, False, True]  # position 2 is ONE-HOT/EMPTY: not counted against the teacher
    target_logits = [[0.0], [math.log(3.0), 0.0], [1.0], []]
    target_ids = [[0], [1, 2], [2], []]
    totals = row_totals(probs.log(), labels, carried, target_logits, target_ids)
    # reply CE: -(log 0.6 + log 0.5) over 2 tokens
    assert totals.reply_tokens == 2
    assert totals.reply_nll == pytest.approx(-(math.log(0.6) + math.log(0.5)))
    # teacher at position 1: p = softmax(log 3, 0) = (0.75, 0.25) on ids (1, 2): -(0.75 log 0.6 + 0.25 log 0.3)
    assert totals.teacher_positions == 1
    assert totals.teacher_nll == pytest.approx(-(0.75 * math.log(0.6) + 0.25 * math.log(0.3)))
    means = totals.means()
    assert means["reply_ce"] == pytest.approx(totals.reply_nll / 2)
    assert means["teacher_ce"] == pytest.approx(totals.teacher_nll)
    # Without the teacher's lists only the reply CE counts.
    assert row_totals(probs.log(), labels).means()["teacher_ce"] is None


def test_heldout_split_keeps_order_and_holds_out_every_nth():
    records = [{"id": str(i)} for i in range(12)]
    train, heldout = heldout_split(records, 5)
    assert [r["id"] for r in heldout] == ["4", "9"]
    assert [r["id"] for r in train] == ["0", "1", "2", "3", "5", "6", "7", "8", "10", "11"]
    with pytest.raises(InputError, match="--every"):
        heldout_split(records, 1)
    with pytest.raises(InputError, match="too few"):
        heldout_split(records[:3], 5)


def oracle(model_dir, rows):
    """Pooled reply CE and CE against the teacher, position by position in plain Python."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    reply = []
    teacher = []
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        for t in range(len(ids) - 1):
            if labels[t + 1] == -100:
                continue
            reply.append(-float(logp[t, labels[t + 1]]))
            entry_ids, entry_logits = row["fused_per_step_indices"][t], row["fused_per_step_logits"][t]
            one_hot = len(entry_ids) == 1 and entry_logits[0] == 1.0 and entry_ids[0] == ids[t + 1]
            if entry_ids and not one_hot:
                z = sum(math.exp(v) for v in entry_logits)
                teacher.append(-sum(math.exp(v) / z * float(logp[t, i]) for v, i in zip(entry_logits, entry_ids)))
    return sum(reply) / len(reply), sum(teacher) / len(teacher), len(teacher)


def test_measure_command_matches_the_oracle(tmp_path, pivot_path):
    from datasets import Dataset, DatasetDict

    rows = [
        # carried, ONE-HOT (single 1.0 on the next id), carried, EMPTY; labels on the last three tokens
        {"id": "a", "input_ids": [1, 415, 28705, 7, 9], "labels": [-100, -100, 28705, 7, 9],
         "fused_per_step_logits": [[0.5, 0.1], [1.0], [2.0, 1.0, -1.0], [], [1.0]],
         "fused_per_step_indices": [[415, 3], [28705], [7, 8, 9], [], [9]]},
        {"id": "b", "input_ids": [1, 22, 23], "labels": [-100, 22, 23],
         "fused_per_step_logits": [[0.3, 0.2], [0.0], [1.0]], "fused_per_step_indices": [[22, 5], [23], [23]]},
    ]
    aligned = tmp_path / "aligned"
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(aligned))
    out = tmp_path / "heldout.json"
    assert run_cli(main, ["measure", "--aligned", str(aligned), "--models", f"before={pivot_path}",
                          "--out", str(out)]) == 0
    measured = json.loads(out.read_text())["models"]["before"]
    reply_ce, teacher_ce, positions = oracle(pivot_path, rows)
    assert (measured["reply_tokens"], measured["teacher_positions"]) == (5, positions) == (5, 3)
    assert measured["reply_ce"] == pytest.approx(reply_ce, rel=1e-5)
    assert measured["teacher_ce"] == pytest.approx(teacher_ce, rel=1e-5)


def test_measure_refuses_bad_models_flag_and_missing_columns(tmp_path, pivot_path, capsys):
    from datasets import Dataset, DatasetDict

    plain = tmp_path / "plain"
    DatasetDict({"train": Dataset.from_list([{"id": "a", "input_ids": [1, 2], "labels": [-100, 2]}])}).save_to_disk(
        str(plain))
    for models, message in ((f"{pivot_path}", "LABEL=FOLDER"), (f"x={pivot_path}", "fused_per_step_logits")):
        status = run_cli(main, ["measure", "--aligned", str(plain), "--models", models,
                                "--out", str(tmp_path / "o.json")])
        stderr = capsys.readouterr().err
        assert status == 2 and message in stderr.strip().splitlines()[-1], stderr
        assert not (tmp_path / "o.json").exists()
