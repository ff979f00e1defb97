"""The kernel layer: nothing in it imports a wing, and its two registries take a new entry in one
call, which then runs through the public entry points (align_token_and_vocab's CLI, FuseLLM's
collator)."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from token_alignment_oracle import literal_align_tokens

from fusechat import schema
from fusechat.cli.align_token_and_vocab import main as align
from fusechat.fusellm.collator import DistillCollator
from fusechat.kernels import align_methods, teacher_rules
from fusechat.kernels.align_methods import AlignMethod

KERNELS = Path(__file__).resolve().parents[1] / "src" / "fusechat" / "kernels"
WINGS = ("training", "alignment", "fusellm", "cli", "drivers")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved from fusechat.kernels."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = {0: "", 1: "fusechat.kernels", 2: "fusechat"}[node.level]
            module = ".".join(part for part in (base, node.module) if part)
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def test_no_kernel_imports_a_wing():
    files = sorted(KERNELS.glob("*.py"))
    assert {f.stem for f in files} >= {"dtw", "mined", "align_methods", "distribution", "topk", "losses",
                                       "teacher_rules", "checks"}
    for path in files:
        wings = [m for m in imported_modules(path) if m.split(".")[:2] in (["fusechat", w] for w in WINGS)]
        assert not wings, f"{path.name} imports {wings}"


# --- an align method is one registry entry -------------------------------------------------------

# Base and source hold the same conversation with a different case: "Cat"/"cat", "MAT"/"mat".
BASE_TEXT, SOURCE_TEXT = "The Cat sat on the mat today", "The cat sat on the MAT today"


def representation_set(path, tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(len(path.name))
    rows = [{"id": "c0", "input_ids": ids, schema.LOGITS: [[3.0, 1.0] for _ in ids],
             schema.INDICES: [[i, int(rng.integers(100, 30000))] for i in ids], schema.METRIC_CE: 1.0}]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    return ids


def test_a_registered_align_method_runs_through_align_token_and_vocab(tmp_path, monkeypatch, pivot_path,
                                                                       openchat_tokenizer):
    # Toy method: a single match is taken when the two tokens are equal ignoring case.
    toy = AlignMethod("caseless", "equal ignoring case", None, lambda exact, mapped: exact,
                      lambda bt, blt, mapped: bt.lower() == blt.lower())
    monkeypatch.setitem(align_methods.ALIGN_METHODS, toy.name, toy)
    base_ids = representation_set(tmp_path / "base", openchat_tokenizer, BASE_TEXT)
    source_ids = representation_set(tmp_path / "source", openchat_tokenizer, SOURCE_TEXT)
    source = load_from_disk(str(tmp_path / "source"))["train"][0]
    outputs = {}
    for align_type in ("caseless", "hard"):
        align(["--base_model_name_or_path", str(pivot_path), "--blending_model_name_or_path", str(pivot_path),
               "--base_dataset_dir", str(tmp_path / "base"), "--blending_dataset_dir", str(tmp_path / "source"),
               "--do_distribution_alignment", "--align_type", align_type,
               "--aligned_dataset_save_dir", str(tmp_path / align_type), "--accept_sets_without_provenance"])
        outputs[align_type] = load_from_disk(str(tmp_path / align_type))["train"][0]

    # Oracle (docs/design.md 6.3 with the toy rule): per-id decoded tokens, the literal DTW; a position
    # matched to one source token that equals it ignoring case takes that token's list (one
    # vocabulary: candidate ids unchanged); every other position is ONE-HOT on the next base id.
    base_tokens = [openchat_tokenizer.decode([i]) for i in base_ids]
    source_tokens = [openchat_tokenizer.decode([i]) for i in source_ids]
    alignment = literal_align_tokens(base_tokens, source_tokens, "▁", "▁")
    expected_logits, expected_ids = [], []
    for i, matched in enumerate(alignment):
        j = matched[0]
        if len(matched) == 1 and base_tokens[i].lower() == source_tokens[j].lower():
            expected_logits.append(source[schema.LOGITS][j])
            expected_ids.append(source[schema.INDICES][j])
        else:
            expected_logits.append([1.0])
            expected_ids.append([base_ids[min(i + 1, len(base_ids) - 1)]])
    caseless = outputs["caseless"]
    assert caseless[schema.FUSED_INDICES] == expected_ids
    assert caseless[schema.FUSED_LOGITS] == expected_logits
    # The new rule is the one that ran: hard keeps ONE-HOT where only the case differs.
    differing = [i for i, (a, b) in enumerate(zip(caseless[schema.FUSED_INDICES],
                                                  outputs["hard"][schema.FUSED_INDICES])) if a != b]
    assert differing and all(base_tokens[i] != source_tokens[alignment[i][0]] for i in differing)


# --- a teacher rule is one registry entry --------------------------------------------------------

def packed_row(pivot_lists, source_lists, pivot_ce, source_ce):
    ids = list(range(10, 10 + len(pivot_lists)))
    return {"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids),
            "per_step_logits": [[logit for logit, _ in lists] for lists in pivot_lists],
            "per_step_indices": [[token for _, token in lists] for lists in pivot_lists],
            "metric_ce": pivot_ce,
            "per_step_aligned_logits_0": [[logit for logit, _ in lists] for lists in source_lists],
            "per_step_aligned_indices_0": [[token for _, token in lists] for lists in source_lists],
            "metric_ce_aligned_0": source_ce}


def test_a_registered_teacher_rule_runs_through_the_fusellm_collator(monkeypatch):
    # Toy rule: every candidate weighs the same, whatever its reward; the row reward is the smallest.
    def equal_weights(rewards, pivot_is_candidate):
        return torch.full(rewards.shape, 1.0 / rewards.shape[-1]).to(torch.bfloat16)

    toy = teacher_rules.TeacherRule("equal", "the same weight for every candidate", 1, False, equal_weights,
                                    lambda rewards: rewards.min(dim=-1).values)
    monkeypatch.setitem(teacher_rules.TEACHER_RULES, toy.name, toy)
    # Position 0: the pivot's list {5: 0.5, 6: 0.5} (equal logits), the source's {5: 1}. Position 1:
    # both {7: 1}. Weights 1/2 each: {5: 0.75, 6: 0.25} and {7: 1} (every product and sum exact in bf16).
    row = packed_row([[(0.0, 5), (0.0, 6)], [(2.0, 7)]], [[(3.0, 5)], [(1.0, 7)]], pivot_ce=2.0, source_ce=0.5)
    batch = DistillCollator(pad_token_id=0, mode="equal", candidates=("pivot", "0"))([row])
    got = [{int(t): float(p) for t, p, m in zip(ids, probs, mask) if m}
           for ids, probs, mask in zip(batch["target_ids"][0], batch["target_probs"][0], batch["target_mask"][0])]
    assert got == [{5: 0.75, 6: 0.25}, {7: 1.0}]
    assert batch["teacher_choice"].tolist() == [-1]  # not a one-hot rule: no single teacher
    reward = torch.reciprocal(torch.exp(torch.tensor(2.0).to(torch.bfloat16)))  # the pivot's, the smaller
    assert batch["teacher_reward"].tolist() == [reward.item()]
    # MinCE on the same row takes the source (lower CE) everywhere: the toy rule is the one that ran.
    mince = DistillCollator(pad_token_id=0, mode="greater", candidates=("pivot", "0"))([row])
    assert mince["target_probs"][0, 0, 0].item() == 1.0


def test_fusellm_offers_the_methods_its_mapping_stage_can_feed():
    from fusechat.errors import InputError
    from fusechat.fusellm.token_alignment import check_align_type

    assert check_align_type("soft").mapping == "mined"
    with pytest.raises(InputError, match="--vocab_align_type default: its ms vocabulary mapping is not made by "
                                         "this stage; choose from hard, soft"):
        check_align_type("default")
