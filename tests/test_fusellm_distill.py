"""FuseLLM's teacher targets and losses (docs/design.md 12.6.2-12.6.5) against small oracles written from the spec.

The oracles build the reference's DENSE [B, T, V] bf16 targets with its rules (bf16 logits, bf16
softmax, empty aligned list -> the pivot's row, bf16 rewards, MinCE tie order, the bf16 weighted
sum) and average over the attention mask; the code under test works on top-k lists.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from fusechat.errors import InputError
from fusechat.fusellm.collator import DistillCollator
from fusechat.fusellm.distill import distill_weight
from fusechat.fusellm.schedule import update_lr
from fusechat.kernels.losses import lm_and_distill_losses

V = 40


def bf16(x) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), by their bits."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def reward(metric: float) -> float:
    return float(bf16(1.0 / bf16(np.exp(bf16(np.float32(metric))))))


def dense_teacher(row: dict, logits_column: str, ids_column: str, temperature: float = 1.0) -> np.ndarray:
    """[L, V] the reference's dense bf16 target of one teacher (empty aligned list -> pivot's row)."""
    out = np.zeros((len(row["input_ids"]), V), np.float32)
    for t in range(len(row["input_ids"])):
        logits, ids = row[logits_column][t], row[ids_column][t]
        if not ids:
            logits, ids = row["per_step_logits"][t], row["per_step_indices"][t]
        x = bf16(bf16(np.asarray(logits, np.float32)) / np.float32(temperature))
        p = np.exp(x.astype(np.float64) - x.max())
        out[t, ids] = bf16((p / p.sum()).astype(np.float32))
    return out


TEACHER_COLUMNS = {"pivot": ("per_step_logits", "per_step_indices", "metric_ce"),
                   "0": ("per_step_aligned_logits_0", "per_step_aligned_indices_0", "metric_ce_aligned_0"),
                   "1": ("per_step_aligned_logits_1", "per_step_aligned_indices_1", "metric_ce_aligned_1")}


def oracle_target(row: dict, mode: str, candidates, temperature: float = 1.0) -> np.ndarray:
    dense = [dense_teacher(row, *TEACHER_COLUMNS[c][:2], temperature) for c in candidates]
    rewards = [reward(row[TEACHER_COLUMNS[c][2]]) for c in candidates]
    if mode == "greater":
        if "pivot" in candidates or len(candidates) == 1:
            best = max(range(len(candidates)), key=lambda i: (rewards[i], -i))  # first maximum
        else:
            best = 0 if rewards[0] > rewards[1] else 1
        return dense[best]
    e = np.exp(np.asarray(rewards, np.float64) - max(rewards))
    weights = bf16((e / e.sum()).astype(np.float32))
    total = np.zeros_like(dense[0])
    for w, d in zip(weights, dense):
        total = bf16(total + bf16(w * d))
    return total


def random_row(rng, length: int, k: int = 4, empty_share: float = 0.3, metrics=(1.0, 1.2, 0.9)) -> dict:
    row = {"input_ids": rng.integers(1, V, length).tolist(), "attention_mask": [1] * length}
    row["labels"] = list(row["input_ids"])

    def lists(allow_empty: bool):
        logits, ids = [], []
        for _ in range(length):
            n = 0 if allow_empty and rng.random() < empty_share else int(rng.integers(1, k + 1))
            ids.append(rng.choice(V, n, replace=False).tolist())
            logits.append(np.sort(rng.normal(0, 3, n).astype(np.float16))[::-1].astype(float).tolist())
        return logits, ids

    row["per_step_logits"], row["per_step_indices"] = lists(False)
    for source in ("0", "1"):
        row[f"per_step_aligned_logits_{source}"], row[f"per_step_aligned_indices_{source}"] = lists(True)
    row["metric_ce"], row["metric_ce_aligned_0"], row["metric_ce_aligned_1"] = metrics
    return row


def sparse_and_oracle_losses(rows, mode, candidates, loss_type="ce", temperature=1.0, seed=0):
    collator = DistillCollator(pad_token_id=0, max_length=64, mode=mode, candidates=tuple(candidates),
                               temperature=temperature)
    batch = collator(rows)
    torch.manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(*batch["input_ids"].shape, V) * 2, dim=-1)
    lm, distill = lm_and_distill_losses(log_probs, batch["labels"], batch["target_ids"], batch["target_probs"],
                                        batch["target_mask"], distill_mask=batch["attention_mask"].bool(),
                                        loss_type=loss_type, entropy_dtype=torch.bfloat16)
    # Oracle: dense targets, per-position CE/KL, mean over attention_mask (last real position included).
    total, count = 0.0, 0
    for b, row in enumerate(rows):
        q = oracle_target(row, mode, candidates, temperature).astype(np.float64)
        lp = log_probs[b, :len(row["input_ids"])].double().numpy()
        d = -(q * lp).sum(-1)
        if loss_type == "kl":
            q16 = bf16(q.astype(np.float32))
            with np.errstate(divide="ignore"):
                logq = np.where(q16 > 0, bf16(np.log(np.where(q16 > 0, q16, 1)).astype(np.float32)), 0)
            d = d + bf16((q16 * logq).astype(np.float32)).sum(-1)
        total += d.sum()
        count += len(row["input_ids"])
    return batch, float(distill), total / count


@pytest.mark.parametrize("mode,candidates", [
    ("greater", ("pivot", "0", "1")), ("greater", ("0", "1")), ("greater", ("pivot", "1")), ("greater", ("1",)),
    ("weighted", ("pivot", "0", "1")), ("weighted", ("0", "1")), ("weighted", ("pivot", "0"))])
@pytest.mark.parametrize("loss_type", ["ce", "kl"])
def test_sparse_targets_give_the_dense_loss(mode, candidates, loss_type):
    rng = np.random.default_rng(7)
    rows = [random_row(rng, 9, metrics=(1.0, 0.8, 1.1)), random_row(rng, 5, metrics=(2.0, 2.5, 1.5)),
            random_row(rng, 7, metrics=(0.5, 0.9, 0.7))]
    _, ours, oracle = sparse_and_oracle_losses(rows, mode, candidates, loss_type, temperature=0.7)
    assert ours == pytest.approx(oracle, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_teacher_lists_are_torch_bf16_softmax_bit_for_bit(temperature):
    """Every teacher's probabilities equal torch's own bf16 computation, softmax(bf16(bf16(logits) / T)),
    list by list (the reference's order of operations), with EMPTY aligned lists taking the pivot's."""
    rng = np.random.default_rng(11)
    rows = [random_row(rng, n, metrics=(1.0, 1.0, 1.0)) for n in (9, 4, 7)]
    collator = DistillCollator(0, 64, "greater", ("pivot", "0", "1"), temperature=temperature)
    lists = collator.teacher_lists(pa.Table.from_pylist(rows), 9)
    for teacher, (logits_column, ids_column) in (("pivot", ("per_step_logits", "per_step_indices")),
                                                 ("0", ("per_step_aligned_logits_0", "per_step_aligned_indices_0")),
                                                 ("1", ("per_step_aligned_logits_1", "per_step_aligned_indices_1"))):
        ids, probs, mask = lists[teacher]
        for b, row in enumerate(rows):
            for t in range(len(row["input_ids"])):
                logits, expected_ids = row[logits_column][t], row[ids_column][t]
                if not expected_ids:  # EMPTY: the pivot's list
                    logits, expected_ids = row["per_step_logits"][t], row["per_step_indices"][t]
                x = (torch.tensor(logits, dtype=torch.float32).to(torch.bfloat16) / temperature).to(torch.bfloat16)
                expected = torch.softmax(x, dim=-1).float()
                assert ids[b, t][mask[b, t]].tolist() == expected_ids
                assert torch.equal(torch.from_numpy(probs[b, t][mask[b, t]]), expected), (teacher, b, t)
            assert not mask[b, len(row["input_ids"]):].any()


@pytest.mark.parametrize("mode", ["greater", "weighted"])
def test_arrow_batches_of_stored_float16_lists_collate_like_row_dicts(mode):
    """The Trainer's path (Arrow tables of a saved set: float16 logits, looked up in a table of
    bf16(bf16(v) / T)) gives exactly the tensors that Python rows (float64 logits) give."""
    from datasets import Dataset, Features, List, Value

    from fusechat.training.datasets import ArrowRows

    rng = np.random.default_rng(5)
    rows = [random_row(rng, n, metrics=m)
            for n, m in ((9, (1.0, 0.8, 1.1)), (5, (2.0, 2.5, 1.5)), (7, (0.5, 0.9, 0.7)))]
    features = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8")),
                         "labels": List(Value("int32"))})
    for logits, ids, metric in TEACHER_COLUMNS.values():
        features[logits], features[ids] = List(List(Value("float16"))), List(List(Value("int32")))
        features[metric] = Value("float64")
    collator = DistillCollator(0, 64, mode, temperature=0.7)
    from_arrow = collator(ArrowRows(Dataset.from_list(rows, features=features)).__getitems__([2, 0, 1]))
    from_rows = collator([rows[2], rows[0], rows[1]])
    assert from_arrow.keys() == from_rows.keys()
    for name in from_rows:
        torch.testing.assert_close(from_arrow[name], from_rows[name], rtol=0, atol=0, msg=name)
    assert (from_rows["teacher_choice"] != 0).any() or mode == "weighted"  # a source won some row


def test_mince_ties_follow_the_candidate_order():
    rng = np.random.default_rng(1)
    # 1.0 and 1.001 round to the same bf16 CE: a tie; 0.9 is strictly better.
    assert reward(1.0) == reward(1.001) and reward(0.9) > reward(1.0)
    cases = [((1.0, 1.001, 1.0), ("pivot", "0", "1"), 0),  # three-way tie: pivot
             ((1.001, 1.0, 0.9), ("pivot", "0", "1"), 2),  # source 1 strictly best
             ((1.2, 1.0, 1.001), ("pivot", "0", "1"), 1),  # sources tie: source 0 (first)
             ((9.0, 1.0, 1.001), ("0", "1"), 2),  # no pivot, sources tie: source 1
             ((9.0, 0.9, 1.0), ("0", "1"), 1)]  # no pivot, source 0 strictly better
    for metrics, candidates, winner in cases:
        row = random_row(rng, 4, metrics=metrics)
        batch = DistillCollator(0, 16, "greater", candidates)([row])
        assert batch["teacher_choice"].tolist() == [winner], (metrics, candidates)


def test_empty_aligned_list_takes_the_pivot_list():
    row = random_row(np.random.default_rng(3), 3, metrics=(5.0, 0.1, 5.0))
    row["per_step_aligned_logits_0"] = [[2.0, 1.0], [], [1.0]]
    row["per_step_aligned_indices_0"] = [[7, 9], [], [row["input_ids"][2]]]
    row["per_step_logits"][1], row["per_step_indices"][1] = [3.0, 1.0, 0.5], [4, 5, 6]
    batch = DistillCollator(0, 16, "greater", ("pivot", "0", "1"))([row])
    assert batch["teacher_choice"].tolist() == [1]
    ids, probs, mask = batch["target_ids"][0], batch["target_probs"][0], batch["target_mask"][0]
    assert ids[1][mask[1]].tolist() == [4, 5, 6]
    e = np.exp(np.array([3.0, 1.0, 0.5]) - 3.0)
    assert probs[1][mask[1]].tolist() == pytest.approx(bf16(e / e.sum()).tolist(), abs=0)
    assert ids[2][mask[2]].tolist() == [row["input_ids"][2]] and probs[2][mask[2]].tolist() == [1.0]


def test_weighted_sum_is_bf16_left_to_right():
    # Three teachers with one shared id: the value is bf16(bf16(bf16(w0 p0) + bf16(w1 p1)) + bf16(w2 p2)).
    row = {"input_ids": [3], "attention_mask": [1], "labels": [3],
           "per_step_logits": [[1.0, 0.3]], "per_step_indices": [[5, 6]],
           "per_step_aligned_logits_0": [[0.7, 0.1]], "per_step_aligned_indices_0": [[6, 5]],
           "per_step_aligned_logits_1": [[2.0]], "per_step_aligned_indices_1": [[5]],
           "metric_ce": 1.3, "metric_ce_aligned_0": 0.7, "metric_ce_aligned_1": 2.9}
    batch = DistillCollator(0, 8, "weighted", ("pivot", "0", "1"))([row])
    r = np.array([reward(1.3), reward(0.7), reward(2.9)])
    w = bf16((np.exp(r) / np.exp(r).sum()).astype(np.float32))

    def probs(logits):
        e = np.exp(bf16(np.array(logits, np.float32)).astype(np.float64))
        return bf16((e / e.sum()).astype(np.float32))

    p_pivot, p_0, p_1 = probs([1.0, 0.3]), probs([0.7, 0.1]), probs([2.0])
    expected_5 = bf16(bf16(bf16(w[0] * p_pivot[0]) + bf16(w[1] * p_0[1])) + bf16(w[2] * p_1[0]))
    expected_6 = bf16(bf16(w[0] * p_pivot[1]) + bf16(w[1] * p_0[0]))
    mask = batch["target_mask"][0, 0]
    got = dict(zip(batch["target_ids"][0, 0][mask].tolist(), batch["target_probs"][0, 0][mask].tolist()))
    assert got == {5: float(expected_5), 6: float(expected_6)}
    assert batch["teacher_choice"].tolist() == [-1]


def test_distill_mask_includes_the_last_real_position():
    # Row 0 has 3 real tokens padded to 5: the distill mean runs over positions 0, 1, 2 (the LM loss over 0, 1).
    rng = np.random.default_rng(5)
    rows = [random_row(rng, 3, empty_share=0.0), random_row(rng, 5, empty_share=0.0)]
    batch, ours, oracle = sparse_and_oracle_losses(rows, "greater", ("pivot",))
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert ours == pytest.approx(oracle, rel=1e-6)
    # Dropping the last real position of each row changes the mean: the oracle above includes it.
    collator = DistillCollator(0, 64, "greater", ("pivot",))
    batch = collator(rows)
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(2, 5, V) * 2, dim=-1)
    without_last = batch["attention_mask"].bool().clone()
    without_last[0, 2] = without_last[1, 4] = False
    _, shorter = lm_and_distill_losses(log_probs, batch["labels"], batch["target_ids"], batch["target_probs"],
                                       batch["target_mask"], distill_mask=without_last)
    assert float(shorter) != pytest.approx(ours, rel=1e-4)


def test_loss_weights_of_the_three_types():
    assert distill_weight("hard", 0.9) == (0.9, pytest.approx(0.1))
    # hard_and_decay: lambda' = lambda + (1 - lambda) * step / max_steps.
    for step, expected in ((0, 0.9), (50, 0.95), (100, 1.0)):
        lm_w, distill_w = distill_weight("hard_and_decay", 0.9, step, 100)
        assert lm_w == pytest.approx(expected) and distill_w == pytest.approx(1 - expected)
    # soft: bf16(1 - r) on the LM loss, r on the distill loss.
    r = torch.tensor([reward(0.3)], dtype=torch.bfloat16)
    lm_w, distill_w = distill_weight("soft", 0.9, reward=r)
    assert float(distill_w) == reward(0.3)
    assert float(lm_w) == float(bf16(np.float32(1 - reward(0.3))))
    with pytest.raises(InputError):
        distill_weight("linear", 0.9)


def test_soft_reward_is_the_largest_or_the_bf16_mean():
    row = random_row(np.random.default_rng(2), 3, metrics=(1.0, 0.5, 2.0))
    greater = DistillCollator(0, 8, "greater", ("pivot", "0", "1"))([row])
    assert greater["teacher_reward"].tolist() == [reward(0.5)]
    weighted = DistillCollator(0, 8, "weighted", ("pivot", "0", "1"))([row])
    mean = np.float32(sum(reward(m) for m in (1.0, 0.5, 2.0)) / 3)
    assert weighted["teacher_reward"].float().tolist() == [float(bf16(mean))]


def test_released_schedule_values():
    # S = 1000 steps, W = ceil(0.008 * 1000) = 8. Update 0 runs at warmup_min_lr (0); update u >= 1 at
    # lr(s = u - 1): peak * ln(s + 1) / ln(8) while s < 8, then peak * (1000 - s) / (1000 - 8).
    peak = 1e-5
    expected = {0: 0.0, 1: 0.0, 2: peak / 3, 4: peak * 2 / 3, 7: peak * math.log(7) / math.log(8), 8: peak,
                9: peak, 505: peak * 496 / 992, 1001: 0.0, 1200: 0.0}
    for update, lr in expected.items():
        assert update_lr(update, peak, 8, 1000) == pytest.approx(lr, rel=1e-12, abs=1e-20), update
    # W = max(2, warm-up steps): one warm-up step still warms up over two.
    assert update_lr(2, peak, 1, 10) == pytest.approx(peak * math.log(2) / math.log(2))
    assert update_lr(3, peak, 1, 10) == pytest.approx(peak * 8 / 8)
    assert update_lr(4, peak, 1, 10) == pytest.approx(peak * 7 / 8)


def test_released_schedule_matches_deepspeed():
    lr_schedules = pytest.importorskip("deepspeed.runtime.lr_schedules")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-5)
    scheduler = lr_schedules.WarmupDecayLR(optimizer, total_num_steps=50, warmup_min_lr=0, warmup_max_lr=1e-5,
                                           warmup_num_steps=5)
    for update in range(55):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(update_lr(update, 1e-5, 5, 50), abs=1e-18), update
        optimizer.step()
        scheduler.step()
