"""The sparse fuse loss and the collator against a dense oracle written from docs/design.md 8.

The oracle builds full-vocabulary [B, T, V] targets position by position: softmax(logits / T)
of the chosen list placed on its ids; the source's list when its reward 1/exp(ce) in bfloat16 is
strictly larger (always with fuse_with_ref_model False), the pivot's otherwise or where the
source's entry is EMPTY. Then the dense CE (or KL) and the mean over every position of the batch
whose next label is not -100.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusechat import schema
from fusechat.training.collator import TrainCollator
from fusechat.kernels.losses import distill_loss, lm_loss, next_label_mask, target_probabilities
from fusechat.training.collator import source_wins as mince_source_wins

V, K, PAD = 23, 4, 0


def random_rows(lengths, seed=0, metrics=None):
    """Rows over a small vocabulary; the source's lists mix full, short, EMPTY and ONE-HOT entries."""
    rng = np.random.default_rng(seed)
    rows = []
    for r, length in enumerate(lengths):
        input_ids = rng.integers(1, V, size=length).tolist()
        labels = [i if rng.random() < 0.7 else -100 for i in input_ids]
        labels[0] = -100
        pivot_ids = [rng.choice(V, K, replace=False).tolist() for _ in range(length)]
        pivot_logits = rng.normal(0, 2, (length, K)).astype(np.float16).astype(float).tolist()
        fused_ids, fused_logits = [], []
        for t in range(length):
            kind = t % 4
            if kind == 0:
                fused_ids.append([]), fused_logits.append([])
            elif kind == 1:
                fused_ids.append([input_ids[min(t + 1, length - 1)]]), fused_logits.append([1.0])
            else:
                size = int(rng.integers(2, K + 1))
                fused_ids.append(rng.choice(V, size, replace=False).tolist())
                fused_logits.append(rng.normal(0, 2, size).astype(np.float16).astype(float).tolist())
        pivot_ce, source_ce = metrics[r] if metrics else rng.uniform(0.5, 3, 2).astype(np.float32)
        rows.append({schema.ID: f"r{r}", "input_ids": input_ids, "labels": labels, "attention_mask": [1] * length,
                     schema.LOGITS: pivot_logits, schema.INDICES: pivot_ids, schema.METRIC_CE: float(pivot_ce),
                     schema.FUSED_LOGITS: fused_logits, schema.FUSED_INDICES: fused_ids,
                     schema.FUSED_METRIC_CE: float(source_ce)})
    return rows


def oracle_reward(ce: float) -> torch.Tensor:
    return 1 / torch.exp(torch.tensor(ce, dtype=torch.bfloat16))


def dense_targets(rows, width, temperature, fuse_with_ref_model):
    target = torch.zeros(len(rows), width, V, dtype=torch.float64)
    for b, row in enumerate(rows):
        source = not fuse_with_ref_model or bool(oracle_reward(row[schema.FUSED_METRIC_CE])
                                                 > oracle_reward(row[schema.METRIC_CE]))
        for t in range(len(row["input_ids"])):
            if source and row[schema.FUSED_INDICES][t]:
                logits, ids = row[schema.FUSED_LOGITS][t], row[schema.FUSED_INDICES][t]
            else:
                logits, ids = row[schema.LOGITS][t], row[schema.INDICES][t]
            target[b, t, ids] = torch.softmax(torch.tensor(logits, dtype=torch.float64) / temperature, -1)
    return target


def dense_loss(student_logits, labels, target, loss_type):
    log_probs = F.log_softmax(student_logits, -1)
    if loss_type == "ce":
        per_position = -(target * log_probs).sum(-1)
    else:
        per_position = F.kl_div(log_probs, target, reduction="none").sum(-1)
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return per_position[mask].sum() / mask.sum()


def sparse_fuse_loss(log_probs, labels, target_logits, target_ids, target_mask, temperature=1.0, loss_type="ce"):
    """FuseChat's fuse loss from the kernels: softmax(logits / T) targets, next-label positions."""
    probs = target_probabilities(target_logits.to(log_probs.dtype), target_mask, temperature)
    return distill_loss(log_probs, target_ids, probs, target_mask, next_label_mask(labels), loss_type)


def sparse_loss(student_logits, batch, temperature, loss_type):
    return sparse_fuse_loss(F.log_softmax(student_logits, -1), batch["labels"], batch["target_logits"],
                            batch["target_ids"], batch["target_mask"], temperature, loss_type)


@pytest.mark.parametrize("loss_type", ["ce", "kl"])
@pytest.mark.parametrize("fuse_with_ref_model", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sparse_loss_and_gradient_equal_the_dense_oracle(loss_type, fuse_with_ref_model, temperature):
    # Row 0: the source wins; row 1: the pivot wins; row 2: a bfloat16 tie (pivot); lengths differ.
    rows = random_rows([9, 5, 7], seed=1, metrics=[(2.0, 1.0), (1.0, 2.0), (1.0, 1.001)])
    batch = TrainCollator(PAD, pad_to_multiple_of=4, fuse=True, fuse_with_ref_model=fuse_with_ref_model)(rows)
    assert batch["input_ids"].shape == (3, 12)  # longest row 9, rounded up to a multiple of 4
    assert batch["source_chosen"].tolist() == ([True, False, False] if fuse_with_ref_model else [True] * 3)
    target = dense_targets(rows, 12, temperature, fuse_with_ref_model)

    student = torch.randn(3, 12, V, dtype=torch.float64, generator=torch.Generator().manual_seed(2),
                          requires_grad=True)
    expected = dense_loss(student, batch["labels"], target, loss_type)
    actual = sparse_loss(student, batch, temperature, loss_type)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    (grad_expected,) = torch.autograd.grad(expected, student)
    (grad_actual,) = torch.autograd.grad(actual, student)
    torch.testing.assert_close(grad_actual, grad_expected, rtol=1e-10, atol=1e-12)


def test_float32_loss_matches_the_oracle_closely():
    rows = random_rows([16, 11], seed=3)
    batch = TrainCollator(PAD, fuse=True)(rows)
    target = dense_targets(rows, 16, 1.0, True)
    student = torch.randn(2, 16, V, generator=torch.Generator().manual_seed(4))
    expected = dense_loss(student.double(), batch["labels"], target, "ce")
    actual = sparse_loss(student, batch, 1.0, "ce")
    assert actual.dtype == torch.float32
    assert abs(actual.item() - expected.item()) <= 1e-6 * abs(expected.item())


def test_one_position_by_hand():
    """Pivot logits [0, 0] on ids 3 and 5: p = 1/2 each; CE = -(log q3 + log q5) / 2, KL = CE - log 2."""
    row = {"input_ids": [7, 8], "labels": [-100, 8], schema.LOGITS: [[0.0, 0.0], [1.0, 2.0]],
           schema.INDICES: [[3, 5], [1, 2]], schema.METRIC_CE: 1.0, schema.FUSED_LOGITS: [[], [0.5]],
           schema.FUSED_INDICES: [[], [4]], schema.FUSED_METRIC_CE: 0.5}
    batch = TrainCollator(PAD, fuse=True)([row])
    assert batch["source_chosen"].tolist() == [True]  # source CE 0.5 < 1.0, but position 0 is EMPTY
    student = torch.log_softmax(torch.arange(2 * V, dtype=torch.float64).reshape(1, 2, V) / 7, -1)
    expected_ce = -(student[0, 0, 3] + student[0, 0, 5]) / 2
    ce = sparse_fuse_loss(student, batch["labels"], batch["target_logits"], batch["target_ids"],
                          batch["target_mask"], 1.0, "ce")
    kl = sparse_fuse_loss(student, batch["labels"], batch["target_logits"], batch["target_ids"],
                          batch["target_mask"], 1.0, "kl")
    assert ce.item() == pytest.approx(expected_ce.item(), rel=1e-14)
    assert kl.item() == pytest.approx(expected_ce.item() - math.log(2), rel=1e-14)


@pytest.mark.parametrize("pivot_ce, source_ce, source_wins", [
    (1.0, 0.99, True),     # bfloat16(0.99) = 0.98828125 < 1
    (1.0, 1.001, False),   # bfloat16(1.001) = 1.0: a tie, which goes to the pivot
    (1.0, 1.0, False),
    (2.0, 2.0078, False),  # bfloat16 spacing at 2 is 1/64: still a tie
    (2.0, 1.98, True),
    (0.5, 3.0, False),
])
def test_mince_choice_in_bfloat16(pivot_ce, source_ce, source_wins):
    assert mince_source_wins(np.array([pivot_ce]), np.array([source_ce])).tolist() == [source_wins]


def test_without_ref_model_the_source_is_used_even_when_worse():
    rows = random_rows([6], metrics=[(0.1, 5.0)])
    with_ref = TrainCollator(PAD, fuse=True)(rows)
    without = TrainCollator(PAD, fuse=True, fuse_with_ref_model=False)(rows)
    assert with_ref["source_chosen"].tolist() == [False] and without["source_chosen"].tolist() == [True]
    # Position 2 holds a regular source list: the targets differ there; position 0 is EMPTY: the pivot's.
    assert without["target_ids"][0, 2, :len(rows[0][schema.FUSED_INDICES][2])].tolist() \
        == rows[0][schema.FUSED_INDICES][2]
    assert without["target_ids"][0, 0].tolist() == with_ref["target_ids"][0, 0].tolist() \
        == rows[0][schema.INDICES][0]


def test_lm_loss_is_the_cross_entropy_of_the_next_label():
    rows = random_rows([8, 5], seed=5)
    batch = TrainCollator(PAD)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    logits = torch.randn(2, 8, V, dtype=torch.float64)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert lm_loss(F.log_softmax(logits, -1), batch["labels"]).item() == pytest.approx(expected.item(), rel=1e-13)


def test_dynamic_padding_and_truncation():
    rows = random_rows([3, 7], seed=6)
    batch = TrainCollator(pad_token_id=99, fuse=True)(rows)
    assert batch["input_ids"].shape == (2, 7)
    assert batch["input_ids"][0].tolist() == rows[0]["input_ids"] + [99] * 4
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert batch["labels"][0, 3:].tolist() == [-100] * 4
    assert not batch["target_mask"][0, 3:].any()
    cut = TrainCollator(pad_token_id=99, max_length=5, pad_to_multiple_of=8, fuse=True)(rows)
    assert cut["input_ids"].shape == (2, 8)
    assert cut["input_ids"][1].tolist() == rows[1]["input_ids"][:5] + [99] * 3
    assert not cut["target_mask"][1, 5:].any()
    assert cut["target_logits"].dtype == torch.float32 and cut["target_ids"].dtype == torch.int64


def test_arrow_batches_collate_like_row_dicts(tmp_path):
    """The Trainer's fast path (Arrow tables of a saved set) gives the same tensors as Python rows."""
    from datasets import Dataset

    from fusechat.training.datasets import ArrowRows
    from train_fixtures import aligned_features

    rows = random_rows([5, 9, 4], seed=7)
    dataset = Dataset.from_list(rows, features=aligned_features("uint16"))
    collator = TrainCollator(PAD, fuse=True)
    from_arrow = collator(ArrowRows(dataset).__getitems__([2, 0, 1]))
    from_rows = collator([rows[2], rows[0], rows[1]])
    assert from_arrow.keys() == from_rows.keys()
    for name in from_rows:
        torch.testing.assert_close(from_arrow[name], from_rows[name], rtol=0, atol=0)


@pytest.mark.parametrize("loss_type", ["ce", "kl"])
def test_one_gather_for_both_losses_gives_the_same_values_and_gradients(loss_type):
    from fusechat.training.fuse_loss import lm_and_fuse_losses

    rows = random_rows([10, 6], seed=8)
    batch = TrainCollator(PAD, fuse=True)(rows)
    student = torch.randn(2, 10, V, dtype=torch.float64, requires_grad=True)
    log_probs = F.log_softmax(student, -1)
    targets = (batch["target_logits"], batch["target_ids"], batch["target_mask"], 0.5, loss_type)
    lm, fuse = lm_and_fuse_losses(log_probs, batch["labels"], *targets)
    lm_alone, fuse_alone = lm_loss(log_probs, batch["labels"]), sparse_fuse_loss(log_probs, batch["labels"], *targets)
    torch.testing.assert_close((lm, fuse), (lm_alone, fuse_alone), rtol=1e-14, atol=0)
    combined = torch.autograd.grad(0.9 * lm + 0.1 * fuse, student, retain_graph=True)[0]
    separate = torch.autograd.grad(0.9 * lm_alone + 0.1 * fuse_alone, student)[0]
    torch.testing.assert_close(combined, separate, rtol=1e-12, atol=1e-15)


def test_a_batch_whose_source_lists_are_all_empty_uses_the_pivot():
    rows = random_rows([5, 3], seed=9, metrics=[(3.0, 0.5), (3.0, 0.5)])
    for row in rows:
        row[schema.FUSED_LOGITS] = [[] for _ in row["input_ids"]]
        row[schema.FUSED_INDICES] = [[] for _ in row["input_ids"]]
    batch = TrainCollator(PAD, fuse=True)(rows)
    assert batch["source_chosen"].tolist() == [True, True]
    assert batch["target_ids"][0, :5].tolist() == rows[0][schema.INDICES]
    student = torch.randn(2, 5, V, dtype=torch.float64)
    expected = dense_loss(student, batch["labels"], dense_targets(rows, 5, 1.0, True), "ce")
    torch.testing.assert_close(sparse_loss(student, batch, 1.0, "ce"), expected, rtol=1e-12, atol=1e-12)
