"""FuseLLM with the pivot and any number of sources (docs/design.md 12.4.3, 12.6.2-12.6.4 beyond the release's two).

The oracle is written from the spec, independently of the code: bf16 by the bits, rewards
bf16(1 / bf16(exp(bf16(CE)))), MinCE (the first largest reward with the pivot among the candidates, the
last one among sources only, which for two sources is the release's "source 0 only if strictly better"),
the weighted target as a bf16 sum in candidate order with w = bf16(softmax(rewards)), dense targets
built position by position (an empty aligned list takes the pivot's), the distill loss averaged over
the attention mask. Three sources throughout.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from fusechat.errors import InputError
from fusechat.fusellm import train
from fusechat.fusellm.collator import DistillCollator
from fusechat.fusellm.train_arguments import parse_source_indices
from fusechat.kernels.teacher_rules import MINCE, TEACHER_RULES, WEIGHTED, teacher_rule
from fusechat.kernels.losses import lm_and_distill_losses
from test_fusellm_train import command, packed_rows, save_packed

V = 48
SOURCES = ("0", "1", "2")


def bf16(x) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), by the bits."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def reward(ce: float) -> np.float32:
    return bf16(np.float32(1.0) / bf16(np.exp(bf16(np.float32(ce)))))[()]


def oracle_choice(ces, pivot_first: bool) -> int:
    r = [reward(c) for c in ces]
    best = max(r)
    tied = [i for i, x in enumerate(r) if x == best]
    return tied[0] if pivot_first else tied[-1]


def oracle_weights(ces) -> np.ndarray:
    r = np.array([reward(c) for c in ces], np.float32)
    e = np.exp(r - r.max(), dtype=np.float32)
    return bf16(e / e.sum(dtype=np.float32))


def columns(teacher: str) -> tuple[str, str, str]:
    if teacher == "pivot":
        return "per_step_logits", "per_step_indices", "metric_ce"
    return f"per_step_aligned_logits_{teacher}", f"per_step_aligned_indices_{teacher}", f"metric_ce_aligned_{teacher}"


def dense(row: dict, teacher: str) -> np.ndarray:
    logits_name, ids_name, _ = columns(teacher)
    out = np.zeros((len(row["input_ids"]), V), np.float32)
    for t in range(len(row["input_ids"])):
        logits, ids = row[logits_name][t], row[ids_name][t]
        if not ids:  # an empty aligned list: the pivot's list at that position
            logits, ids = row["per_step_logits"][t], row["per_step_indices"][t]
        x = bf16(np.asarray(logits, np.float32)).astype(np.float64)
        p = np.exp(x - x.max())
        out[t, ids] = bf16((p / p.sum()).astype(np.float32))
    return out


def oracle_target(row: dict, mode: str, candidates) -> np.ndarray:
    ces = [row[columns(c)[2]] for c in candidates]
    if mode == "greater":
        return dense(row, candidates[oracle_choice(ces, "pivot" in candidates)])
    total = np.zeros((len(row["input_ids"]), V), np.float32)
    for w, c in zip(oracle_weights(ces), candidates):
        total = bf16(total + bf16(w * dense(row, c)))
    return total


def row_with_sources(rng, length: int, ces) -> dict:
    """A packed row with the pivot and three sources (about a quarter of aligned lists empty)."""
    ids = rng.integers(1, V, length).tolist()
    row = {"input_ids": ids, "attention_mask": [1] * length, "labels": list(ids)}
    for teacher, ce in zip(("pivot",) + SOURCES, ces):
        logits_name, ids_name, metric = columns(teacher)
        lists = [rng.choice(V, 0 if teacher != "pivot" and rng.random() < 0.25 else int(rng.integers(1, 6)),
                            replace=False) for _ in range(length)]
        row[ids_name] = [x.tolist() for x in lists]
        row[logits_name] = [np.sort(rng.normal(0, 3, len(x)).astype(np.float16))[::-1].astype(float).tolist()
                            for x in lists]
        row[metric] = ce
    return row


# --- the rules, exact values ----------------------------------------------------------------------

def test_mince_over_four_candidates_exact_choices():
    # CEs of (pivot, source 0, source 1, source 2). 1.5 and 1.5 tie; 2.5 and 2.5 tie; all four tie in row 2.
    ces = [[2.0, 1.5, 1.5, 3.0], [1.0, 1.0, 1.0, 1.0], [4.0, 3.0, 2.5, 2.5], [0.5, 0.9, 0.8, 0.7]]
    rewards = torch.tensor([[float(reward(c)) for c in row] for row in ces]).to(torch.bfloat16)
    with_pivot = MINCE.weights(rewards, True)
    assert with_pivot.argmax(-1).tolist() == [1, 0, 2, 0]  # first maximum: pivot, then sources in order
    assert with_pivot.dtype == torch.bfloat16 and with_pivot.float().sum(-1).tolist() == [1.0] * 4
    sources_only = MINCE.weights(rewards[:, 1:], False)
    assert sources_only.argmax(-1).tolist() == [1, 2, 2, 2]  # last maximum among sources
    assert [oracle_choice(r, True) for r in ces] == [1, 0, 2, 0]
    assert [oracle_choice(r[1:], False) for r in ces] == [1, 2, 2, 2]
    # Two sources: the release's rule, source 0 only when strictly better.
    two = torch.tensor([[float(reward(1.0)), float(reward(1.0))], [float(reward(0.9)), float(reward(1.0))]])
    assert MINCE.weights(two.to(torch.bfloat16), False).argmax(-1).tolist() == [1, 0]


def test_weighted_over_n_candidates_exact_weights():
    equal4 = torch.full((1, 4), float(reward(1.0)), dtype=torch.bfloat16)
    assert WEIGHTED.weights(equal4, True).float().tolist() == [[0.25] * 4]
    equal3 = torch.full((1, 3), float(reward(2.0)), dtype=torch.bfloat16)
    assert WEIGHTED.weights(equal3, False).float().tolist() == [[0.333984375] * 3]  # bf16(1/3)
    ces = [0.25, 1.0, 3.0, 6.0]
    rewards = torch.tensor([[float(reward(c)) for c in ces]]).to(torch.bfloat16)
    got = WEIGHTED.weights(rewards, True).float().numpy()[0]
    assert got.tolist() == oracle_weights(ces).tolist()
    assert got[0] > got[1] > got[2] > got[3]  # lower CE, larger weight, within a factor e of each other
    assert got[0] / got[3] < math.e
    # The soft types' row reward: the largest (MinCE) or the bf16 mean (weighted).
    assert MINCE.row_reward(rewards).float().item() == float(reward(0.25))
    mean = torch.tensor([float(reward(c)) for c in ces]).to(torch.bfloat16).mean()
    assert WEIGHTED.row_reward(rewards).float().item() == mean.float().item()


def test_rule_registry():
    assert set(TEACHER_RULES) == {"mince", "weighted"}
    assert teacher_rule("mince") is MINCE and MINCE.one_hot and not WEIGHTED.one_hot
    with pytest.raises(ValueError, match="unknown teacher rule"):
        teacher_rule("average")
    with pytest.raises(ValueError, match="at least 2"):
        WEIGHTED.weights(torch.ones(2, 1, dtype=torch.bfloat16), True)


# --- the collator and the loss against dense oracle targets ----------------------------------------

@pytest.mark.parametrize("mode", ["greater", "weighted"])
@pytest.mark.parametrize("candidates", [("pivot", "0", "1", "2"), ("0", "1", "2"), ("pivot", "2")])
def test_three_sources_sparse_targets_give_the_dense_loss(mode, candidates):
    rng = np.random.default_rng(11)
    rows = [row_with_sources(rng, 8, (1.0, 0.8, 1.1, 0.8)), row_with_sources(rng, 5, (2.0, 2.5, 1.5, 1.2)),
            row_with_sources(rng, 6, (0.5, 0.9, 0.7, 0.9)), row_with_sources(rng, 3, (1.0, 1.0, 1.0, 1.0))]
    batch = DistillCollator(0, 16, mode, candidates)(rows)
    if mode == "greater":
        names = ("pivot",) + SOURCES
        expected = [candidates[oracle_choice([r[columns(c)[2]] for c in candidates], "pivot" in candidates)]
                    for r in rows]
        # teacher_choice: 0 for the pivot, k + 1 for source k
        assert batch["teacher_choice"].tolist() == [names.index(t) for t in expected]
    else:
        assert batch["teacher_choice"].tolist() == [-1] * 4
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(*batch["input_ids"].shape, V) * 2, dim=-1)
    _, distill = lm_and_distill_losses(log_probs, batch["labels"], batch["target_ids"], batch["target_probs"],
                                       batch["target_mask"], distill_mask=batch["attention_mask"].bool())
    total, count = 0.0, 0
    for b, row in enumerate(rows):
        q = oracle_target(row, mode, candidates).astype(np.float64)
        total += -(q * log_probs[b, :len(row["input_ids"])].double().numpy()).sum()
        count += len(row["input_ids"])
    assert float(distill) == pytest.approx(total / count, rel=1e-5, abs=1e-6)


# --- the command line ------------------------------------------------------------------------------

def test_source_indices_flag():
    assert parse_source_indices("2,0, 1") == ("0", "1", "2")
    assert parse_source_indices("") == ()
    with pytest.raises(InputError, match="given twice"):
        parse_source_indices("0,0")
    with pytest.raises(InputError, match="source indices"):
        parse_source_indices("gemma")


def three_source_rows(count: int, seed: int) -> list[dict]:
    """The training test's packed rows with a third source (a copy of source 1's lists, its own CE)."""
    rows = packed_rows(count, seed)
    rng = np.random.default_rng(100 + seed)
    for row in rows:
        row["per_step_aligned_logits_2"] = row["per_step_aligned_logits_1"]
        row["per_step_aligned_indices_2"] = row["per_step_aligned_indices_1"]
        row["metric_ce_aligned_2"] = float(rng.uniform(2, 4))
    return rows


@pytest.fixture(scope="module")
def three_source_set(tmp_path_factory):
    return save_packed(tmp_path_factory.mktemp("three") / "packed", three_source_rows(6, 1), three_source_rows(2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["greater", "weighted"])
def test_training_with_three_sources_logs_every_teacher(tmp_path, pivot_path, three_source_set, mode):
    flags = {} if mode == "greater" else dict(distill_greater_as_gt=False, distill_weighted_as_gt=True)
    out = tmp_path / "out"
    trainer = train.main(command(pivot_path, three_source_set, out, distill_aligned_models="0,1,2",
                                 do_eval=False, **flags))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fusion"]["candidates"] == ["pivot", "0", "1", "2"]
    steps = [e for e in trainer.state.log_history if "loss" in e]
    assert len(steps) == 3  # 6 rows / accumulation 2
    for entry in steps:
        assert math.isfinite(entry["lm_loss"]) and math.isfinite(entry["distill_loss"])
        assert entry["loss"] == pytest.approx(0.9 * entry["lm_loss"] + 0.1 * entry["distill_loss"], rel=1e-4)
        shares = {k: v for k, v in entry.items() if k.startswith("share_")}
        if mode == "greater":  # MinCE rows won, keyed by teacher
            assert set(shares) == {"share_pivot", "share_source_0", "share_source_1", "share_source_2"}
            assert sum(shares.values()) == pytest.approx(1.0)
        else:
            assert shares == {}
    # The rows each teacher won, recounted from the set with the oracle.
    if mode == "greater":
        from datasets import load_from_disk

        rows = load_from_disk(three_source_set)["train"]
        wins = [oracle_choice([r[columns(t)[2]] for t in ("pivot",) + SOURCES], True) for r in rows]
        logged = sum(e["share_source_2"] for e in steps) * 2  # each step saw 2 rows
        assert logged == pytest.approx(wins.count(3))


@pytest.mark.slow
def test_sources_not_named_are_reported(tmp_path, pivot_path, three_source_set, caplog):
    # The published flags name sources 0 and 1; the set's source 2 is reported, not silently dropped.
    with caplog.at_level(logging.WARNING):
        train.main(command(pivot_path, three_source_set, tmp_path / "out", max_steps=1, do_eval=False))
    assert "holds source(s) 2 that are not candidates" in caplog.text
    assert "--distill_aligned_models 0,1,2" in caplog.text
    with pytest.raises(InputError, match=r"source 3 is a teacher but the set lacks .*leave 3 out of "
                                         r"--distill_aligned_models"):
        train.main(command(pivot_path, three_source_set, tmp_path / "out2", distill_aligned_models="0,3"))
