"""Oracles of the merge kernels, written from docs/design.md 9 (numpy, float64), and float comparisons
in units in the last place."""

import numpy as np
import torch


def sce_oracle(base, targets, select_topk):
    base = np.asarray(base, dtype=np.float64)
    d = np.stack([np.asarray(t, dtype=np.float64) - base for t in targets])
    n, numel = d.shape[0], base.size
    mask = np.ones(base.size)
    if select_topk < 1:
        v = d.reshape(n, -1).var(axis=0)  # population variance
        k = int(select_topk * np.count_nonzero(v))
        mask = np.zeros(base.size)
        mask[np.argsort(-np.abs(v), kind="stable")[:k]] = 1
    masked = d.reshape(n, -1) * mask
    w = (masked ** 2).sum(axis=1) / numel
    w = w / w.sum() if w.sum() != 0 else np.full(n, 1.0 / n)
    majority = np.where(d.sum(axis=0) >= 0, 1.0, -1.0)
    keep = np.sign(d) == majority
    wk = w.reshape((n,) + (1,) * base.ndim) * keep
    divisor = wk.sum(axis=0)
    divisor[divisor == 0] = 1
    return base + (wk * d).sum(axis=0) / divisor


def varm_oracle(base, targets, softmax=False, temperature=1.0):
    base = np.asarray(base, dtype=np.float64)
    ws = [np.asarray(t, dtype=np.float64) for t in targets]
    r = np.array([((w - base) ** 2).mean() for w in ws])
    if (r == 0).any():
        weights = np.full(len(r), 1.0 / len(r))
    elif softmax:
        e = np.exp(r / temperature - (r / temperature).max())
        weights = e / e.sum()
    else:
        weights = r / r.sum()
    return sum(wt * w for wt, w in zip(weights, ws))


def as64(t):
    return t.to(torch.float64).numpy()


def ulp(values, dtype):
    """Spacing of ``dtype`` numbers at the magnitude of ``values`` (normal range)."""
    info = torch.finfo(dtype)
    mag = np.maximum(np.abs(values), info.tiny)
    return info.eps * np.exp2(np.floor(np.log2(mag)))


def assert_within_ulp(actual, expected, dtype, ulps=1.0):
    assert actual.dtype == dtype
    err = np.abs(as64(actual) - expected)
    bound = ulps * ulp(expected, dtype)
    worst = np.argmax(err - bound)
    assert (err <= bound).all(), f"{err.flat[worst]} > {bound.flat[worst]} at {worst}"
