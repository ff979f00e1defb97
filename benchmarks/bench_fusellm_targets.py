"""FuseLLM teacher targets: the reference's dense bf16 construction vs the top-k one (docs/design.md 12.6.2-12.6.4).

Batch 1 x length 2048 x vocabulary 32000 x top-10 with three teachers (the pivot, and two aligned
sources whose lists are 80% full, 10% EMPTY and 10% ONE-HOT), MinCE (--distill_greater_as_gt).

Dense: the reference collator's loop, three bfloat16 [B, 2048, V] targets filled position by
position (bf16 logits, bf16 softmax, scatter; EMPTY copies the pivot's row), then the MinCE choice
(or the bf16 weighted sum): the time of both; then the CE toward that target (float32 student
log-softmax, attention-mask mean), not timed on either side.
Sparse: DistillCollator's targets for an Arrow batch (what the Trainer feeds it) and the CE from
the gather. Source 0 has the lowest metric CE, so MinCE picks it and both its lists and the
pivot's (for its EMPTY positions) are read: the costlier case. Printed: time and bytes of the
targets, the ratios, the whole collator call (token padding included, which the dense side does
not count), and the two losses.

    python benchmarks/bench_fusellm_targets.py [--dense-positions 512] [--repeats 5] [--mode greater|weighted]

--dense-positions times the dense loop on the first positions only and scales the time to 2048
(the loop costs the same at every position); the loss comparison always uses all positions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import torch
from bench_fuse_loss import best_of  # benchmarks run as scripts: their folder is on the path

from fusechat.fusellm.collator import DistillCollator
from fusechat.fusellm.distill import mince_choice, teacher_rewards
from fusechat.kernels.teacher_rules import WEIGHTED
from fusechat.training.datasets import ArrowRows
from fusechat.kernels.losses import lm_and_distill_losses

B, T, V, K = 1, 2048, 32000, 10
TEACHERS = (("per_step_logits", "per_step_indices", "metric_ce"),
            ("per_step_aligned_logits_0", "per_step_aligned_indices_0", "metric_ce_aligned_0"),
            ("per_step_aligned_logits_1", "per_step_aligned_indices_1", "metric_ce_aligned_1"))


def make_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(B):
        input_ids = rng.integers(0, V, T)
        row = {"input_ids": input_ids.tolist(), "attention_mask": [1] * T, "labels": input_ids.tolist()}
        for n, (logits_name, ids_name, metric) in enumerate(TEACHERS):
            ids_list, logits_list = [], []
            for t in range(T):
                u = rng.random()
                if n and u < 0.1:
                    ids_list.append([]), logits_list.append([])
                elif n and u < 0.2:
                    ids_list.append([int(input_ids[t])]), logits_list.append([1.0])
                else:
                    ids_list.append(rng.choice(V, K, replace=False).tolist())
                    logits_list.append(np.sort(rng.normal(0, 3, K))[::-1].astype(np.float16).astype(float).tolist())
            row[logits_name], row[ids_name] = logits_list, ids_list
            row[metric] = float(rng.uniform(1.5, 2.5)) - (n == 1)  # source 0 wins MinCE
        rows.append(row)
    return rows


def arrow_batch(rows: list[dict]) -> pa.Table:
    """The rows stored as the packing stage stores them (float16 logits), read back as the Trainer does."""
    from datasets import Dataset, Features, List, Value

    features = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8")),
                         "labels": List(Value("int32"))})
    for logits_name, ids_name, metric in TEACHERS:
        features[logits_name] = List(List(Value("float16")))
        features[ids_name] = List(List(Value("int64")))
        features[metric] = Value("float64")
    return ArrowRows(Dataset.from_list(rows, features=features)).__getitems__(range(len(rows)))


def dense_reference_targets(rows: list[dict], positions: int) -> list[torch.Tensor]:
    """The reference collator's three bfloat16 [B, positions, V] targets, filled in a Python loop."""
    dense = [torch.zeros(len(rows), positions, V, dtype=torch.bfloat16) for _ in TEACHERS]
    for i, row in enumerate(rows):
        for j in range(positions):
            for n, (logits_name, ids_name, _) in enumerate(TEACHERS):
                if n and not row[ids_name][j]:
                    dense[n][i][j] = dense[0][i][j]
                    continue
                p = torch.softmax(torch.tensor(row[logits_name][j], dtype=torch.bfloat16) / 1.0, -1)
                dense[n][i][j][torch.tensor(row[ids_name][j])] = p
    return dense


def dense_target(rows: list[dict], dense: list[torch.Tensor], mode: str) -> torch.Tensor:
    """The reference's final bf16 [B, T, V] target: each row's MinCE teacher, or the weighted sum."""
    metrics = np.array([[row[m] for _, _, m in TEACHERS] for row in rows])
    rewards = teacher_rewards(metrics)
    if mode == "greater":
        choice = mince_choice(rewards, True)
        return torch.stack([dense[c][b] for b, c in enumerate(choice.tolist())])
    weights = WEIGHTED.weights(rewards, True)
    target = torch.zeros_like(dense[0])
    for n in range(len(dense)):
        target = target + weights[:, n, None, None] * dense[n]
    return target


def dense_loss(target: torch.Tensor, log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_position = -(target.float() * log_probs).sum(-1)
    return (per_position * mask).sum() / mask.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense-positions", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("greater", "weighted"), default="greater")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = make_rows()
    table = arrow_batch(rows)
    collator = DistillCollator(pad_token_id=0, max_length=T, mode=args.mode)
    batch = collator(table)  # compiles the kernels once
    t_sparse = best_of(lambda: collator.targets(table, T), 10 * args.repeats)
    t_call = best_of(lambda: collator(table), 10 * args.repeats)
    sparse_bytes = sum(batch[k].element_size() * batch[k].nelement()
                       for k in ("target_ids", "target_probs", "target_mask", "teacher_choice", "teacher_reward"))

    start = time.perf_counter()
    dense_reference_targets(rows, args.dense_positions)
    t_lists = (time.perf_counter() - start) * T / args.dense_positions
    dense = dense_reference_targets(rows, T)
    start = time.perf_counter()
    target = dense_target(rows, dense, args.mode)
    t_combine = time.perf_counter() - start
    t_dense = t_lists + t_combine
    dense_bytes = len(TEACHERS) * B * T * V * 2

    print(f"teacher targets of one batch ({B} x {T} x {V} x top-{K}, three teachers, {args.mode})")
    scaled = f", timed on {args.dense_positions} positions and scaled" if args.dense_positions < T else ""
    print(f"    dense bf16 reference       {t_dense:9.3f} s    {dense_bytes / 2**20:9.1f} MiB   "
          f"(three teachers' loop {t_lists:.3f} s{scaled}; {'choice' if args.mode == 'greater' else 'sum'} "
          f"{t_combine * 1e3:.1f} ms)")
    print(f"    top-k targets (Arrow)      {t_sparse * 1e3:9.3f} ms   {sparse_bytes / 2**20:9.3f} MiB")
    print(f"    ratio                      {t_dense / t_sparse:9.0f}x faster   "
          f"{dense_bytes / sparse_bytes:9.0f}x smaller")
    print(f"    whole collator call        {t_call * 1e3:9.3f} ms   (with token padding: {t_dense / t_call:.0f}x)")

    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(B, T, V) * 2, dim=-1)
    mask = batch["attention_mask"].float()
    reference = float(dense_loss(target, log_probs, mask))
    _, ours = lm_and_distill_losses(log_probs, batch["labels"], batch["target_ids"], batch["target_probs"],
                                    batch["target_mask"], distill_mask=batch["attention_mask"].bool())
    print(f"    distill CE: dense {reference:.8f}  top-k {float(ours):.8f}  "
          f"relative difference {abs(float(ours) - reference) / abs(reference):.1e}")


if __name__ == "__main__":
    main()
