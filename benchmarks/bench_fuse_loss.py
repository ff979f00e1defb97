"""Fuse targets and fuse loss: the reference's dense formulation vs the sparse top-k one (docs/design.md 8).

Batch 4 x length 2048 x vocabulary 32002 x top-10, pivot lists full, source lists a mix of full
(80%), EMPTY (10%) and ONE-HOT (10%) entries.

(a) Building the targets in the collator. Dense: the reference's loop, two bfloat16 [B, T, V]
    tensors filled position by position (softmax, scatter; EMPTY copies the pivot's row). Sparse:
    the whole TrainCollator call (padding included) on an Arrow batch (what the Trainer feeds it)
    and on Python row dicts. Time and bytes held by the targets.
(b) The fuse loss given the student's log-softmax (shared with the LM loss, so not timed): dense
    -sum(target * log_probs) over the vocabulary vs the gather of distill_loss (the target's softmax included), forward; and
    LM + fuse loss, forward + backward down to the log-softmax (the trainer's lm_and_fuse_losses:
    one gather for both), next to the LM loss alone. Same float32 targets for both; the relative
    difference of the two fuse losses is printed.

    python benchmarks/bench_fuse_loss.py [--dense-positions 512] [--repeats 3] [--threads 1]

--dense-positions times the dense loop of (a) on the first positions of each row only and
scales the time to the full length (the loop costs the same at every position).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import torch

from fusechat import schema
from fusechat.training.collator import TrainCollator
from fusechat.training.datasets import ArrowRows
from fusechat.kernels.losses import distill_loss, lm_loss, masked_mean, next_label_mask, target_probabilities
from fusechat.training.fuse_loss import lm_and_fuse_losses

B, T, V, K = 4, 2048, 32002, 10


def make_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(B):
        input_ids = rng.integers(0, V, T)
        labels = np.where(rng.random(T) < 0.6, input_ids, -100)
        pivot_ids = np.argsort(rng.random((T, V // 64)), axis=1)[:, :K] * 64 + rng.integers(0, 64, (T, 1))
        pivot_logits = rng.normal(0, 3, (T, K)).astype(np.float16)
        fused_ids, fused_logits = [], []
        for t in range(T):
            u = rng.random()
            if u < 0.1:
                fused_ids.append([]), fused_logits.append([])
            elif u < 0.2:
                fused_ids.append([int(input_ids[min(t + 1, T - 1)])]), fused_logits.append([1.0])
            else:
                fused_ids.append(((pivot_ids[t] + 7) % V).tolist())
                fused_logits.append(rng.normal(0, 3, K).astype(np.float16).astype(float).tolist())
        rows.append({"input_ids": input_ids.tolist(), "labels": labels.tolist(), "attention_mask": [1] * T,
                     schema.LOGITS: pivot_logits.astype(float).tolist(), schema.INDICES: pivot_ids.tolist(),
                     schema.METRIC_CE: float(rng.uniform(0.5, 2)), schema.FUSED_LOGITS: fused_logits,
                     schema.FUSED_INDICES: fused_ids, schema.FUSED_METRIC_CE: float(rng.uniform(0.5, 2))})
    return rows


def arrow_batch(rows: list[dict]) -> pa.Table:
    """The rows stored with the schema's types (float16 logits, uint16 ids), read back as ArrowRows does."""
    from datasets import Dataset, List, Value

    features = schema.representation_features(index_dtype=schema.index_dtype_for(V))
    del features[schema.ID]
    features[schema.FUSED_LOGITS] = List(List(Value("float16")))
    features[schema.FUSED_INDICES] = List(List(Value(schema.index_dtype_for(V))))
    features[schema.FUSED_METRIC_CE] = Value("float32")
    return ArrowRows(Dataset.from_list(rows, features=features)).__getitems__(range(len(rows)))


def dense_reference_targets(rows: list[dict], positions: int, temperature: float = 1.0):
    """The reference collator's two bfloat16 [B, positions, V] targets, filled in a Python loop."""
    base = torch.zeros(len(rows), positions, V, dtype=torch.bfloat16)
    aligned = torch.zeros(len(rows), positions, V, dtype=torch.bfloat16)
    for i, row in enumerate(rows):
        for j in range(positions):
            p = torch.softmax(torch.tensor(row[schema.LOGITS][j], dtype=torch.bfloat16) / temperature, -1)
            base[i][j] = base[i][j].scatter_(-1, torch.tensor(row[schema.INDICES][j]), p)
            if len(row[schema.FUSED_INDICES][j]) > 0:
                q = torch.softmax(torch.tensor(row[schema.FUSED_LOGITS][j], dtype=torch.bfloat16) / temperature, -1)
                aligned[i][j] = aligned[i][j].scatter_(-1, torch.tensor(row[schema.FUSED_INDICES][j]), q)
            else:
                aligned[i][j] = base[i][j]
    return base, aligned


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs (the machine's other load only ever adds time)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_targets(rows, table, dense_positions: int, repeats: int) -> dict:
    collator = TrainCollator(pad_token_id=0, fuse=True)
    t_arrow = best_of(lambda: collator(table), 10 * repeats)
    t_rows = best_of(lambda: collator(rows), repeats)
    batch = collator(table)
    sparse_bytes = sum(batch[k].element_size() * batch[k].nelement()
                       for k in ("target_logits", "target_ids", "target_mask", "source_chosen"))
    start = time.perf_counter()
    base, aligned = dense_reference_targets(rows, dense_positions)
    t_dense = (time.perf_counter() - start) * T / dense_positions
    dense_bytes = 2 * B * T * V * base.element_size()
    del base, aligned
    print("(a) building the fuse targets of one batch")
    scaled = f" (timed on {dense_positions} positions, scaled to {T})" if dense_positions < T else ""
    print(f"    dense reference loop   {t_dense:9.3f} s{scaled}   {dense_bytes / 2**20:9.1f} MiB")
    print(f"    collator, Arrow batch  {t_arrow * 1e3:9.3f} ms   {sparse_bytes / 2**20:9.1f} MiB   "
          f"{t_dense / t_arrow:8.0f}x faster  {dense_bytes / sparse_bytes:6.0f}x smaller")
    print(f"    collator, Python rows  {t_rows * 1e3:9.3f} ms   {'':>13}   {t_dense / t_rows:8.0f}x faster")
    return batch


def bench_loss(batch: dict, repeats: int) -> None:
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(B, T, V) * 3, -1)  # shared with the LM loss: not timed
    labels = batch["labels"]
    mask = next_label_mask(labels)
    # The same float32 targets, dense: the reference's full-vocabulary formulation.
    probs = target_probabilities(batch["target_logits"], batch["target_mask"])
    dense_target = torch.zeros(B, T, V).scatter_add_(-1, batch["target_ids"], probs)
    targets = (batch["target_logits"], batch["target_ids"], batch["target_mask"])

    def dense(lp):
        return masked_mean(-(dense_target * lp).sum(-1), mask)

    def sparse(lp):
        sparse_probs = target_probabilities(batch["target_logits"], batch["target_mask"])
        return distill_loss(lp, batch["target_ids"], sparse_probs, batch["target_mask"], next_label_mask(labels))

    def backward(losses):
        lp = log_probs.detach().requires_grad_(True)
        sum(losses(lp)).backward()

    with torch.no_grad():
        t_dense = best_of(lambda: dense(log_probs), repeats)
        t_sparse = best_of(lambda: sparse(log_probs), 10 * repeats)
        dense_value, sparse_value = dense(log_probs).item(), sparse(log_probs).item()
    tb_lm = best_of(lambda: backward(lambda lp: [lm_loss(lp, labels)]), repeats)
    tb_dense = best_of(lambda: backward(lambda lp: [lm_loss(lp, labels), dense(lp)]), repeats)
    tb_sparse = best_of(lambda: backward(lambda lp: lm_and_fuse_losses(lp, labels, *targets)), repeats)
    print("(b) the fuse loss given the student's log-softmax (float32)")
    print(f"    fuse loss, forward            dense {t_dense * 1e3:9.2f} ms   sparse {t_sparse * 1e3:8.2f} ms   "
          f"{t_dense / t_sparse:6.0f}x")
    print(f"    LM + fuse, forward + backward dense {tb_dense * 1e3:9.2f} ms   sparse {tb_sparse * 1e3:8.2f} ms   "
          f"{tb_dense / tb_sparse:6.1f}x   (LM loss alone {tb_lm * 1e3:.2f} ms: the fuse term adds "
          f"{(tb_dense - tb_lm) * 1e3:.2f} ms dense, {(tb_sparse - tb_lm) * 1e3:.2f} ms sparse)")
    print(f"    loss: dense {dense_value:.7f}  sparse {sparse_value:.7f}  relative difference "
          f"{abs(dense_value - sparse_value) / abs(dense_value):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dense-positions", type=int, default=T, help="positions per row timed in the dense loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine a "
                        "2-thread op stalls whenever another job holds the second core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {B} x length {T} x vocabulary {V} x top-{K}, torch threads {torch.get_num_threads()}")
    rows = make_rows()
    table = arrow_batch(rows)
    batch = bench_targets(rows, table, min(args.dense_positions, T), args.repeats)
    bench_loss(batch, args.repeats)


if __name__ == "__main__":
    main()
