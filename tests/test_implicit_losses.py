"""The DPO, LN-DPO and WRPO losses against docs/design.md 13.8's oracle and its worked example."""

import math

import numpy as np
import pytest
import torch

from fusechat.implicit import losses
from implicit_oracle import dpo_loss, ln_dpo_loss, wrpo_alpha, wrpo_loss

T = lambda *xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
# The worked example: policy p_ws, p_wt, p_l and reference r_ws, r_wt, r_l.
P, R = (-120.0, -95.0, -110.0), (-125.0, -96.0, -108.0)


@pytest.mark.parametrize("alpha, expected", [(0.0, 0.6782596763), (0.025, 0.6777673008), (0.1, 0.6762916736),
                                             (1.0, 0.6587595555)])
def test_wrpo_worked_example(alpha, expected):
    got = losses.wrpo_loss(*[T(x) for x in P], *[T(x) for x in R], beta=0.01, alpha=alpha).item()
    assert got == pytest.approx(expected, abs=1e-10)
    assert got == pytest.approx(float(wrpo_loss(*P, *R, 0.01, alpha)), abs=1e-12)


def test_dpo_and_ln_dpo_worked_example():
    assert losses.dpo_loss(T(P[0]), T(P[2]), T(R[0]), T(R[2]), 0.1).item() == pytest.approx(0.4031860489, abs=1e-10)
    got = losses.ln_dpo_loss(T(P[0]), T(P[2]), T(R[0]), T(R[2]), 200, 150, 10).item()
    assert got == pytest.approx(0.5197371972, abs=1e-10)
    mp = losses.multi_positive_dpo_loss(*[T(x) for x in P], *[T(x) for x in R], 0.01).item()
    assert mp == pytest.approx(0.6685096159, abs=1e-10)


def test_wrpo_gradients_and_batch_mean():
    p = [T(x).requires_grad_() for x in P]
    losses.wrpo_loss(*p, *[T(x) for x in R], beta=0.01, alpha=0.1).sum().backward()
    assert [x.grad.item() for x in p] == pytest.approx([-0.0004915008, -0.0044235074, 0.0049150082], abs=1e-10)
    batch = losses.wrpo_loss(T(-120, -300), T(-95, -250), T(-110, -240), T(-125, -290), T(-96, -252), T(-108, -235),
                             beta=0.01, alpha=0.1)
    assert batch[1].item() == pytest.approx(0.6645676216, abs=1e-10)
    assert batch.mean().item() == pytest.approx(0.6704296476, abs=1e-10)


def test_alpha_schedule():
    got = [losses.wrpo_alpha(t, 200, 0.1) for t in (0, 1, 50, 199, 200, 250)]
    assert got == pytest.approx([0, 0.0005, 0.025, 0.0995, 0.1, 0.1], abs=1e-15)
    assert losses.wrpo_alpha(3, 200, 0.1, dynamic=False) == 0.1


def close(got, want):
    """Within 1e-6, relative to the loss where it exceeds 1 (float32 carries 7 digits)."""
    return bool(np.all(np.abs(np.asarray(got) - want) <= 1e-6 * np.maximum(1.0, np.abs(want))))


def test_random_logps_match_oracle_in_float32_to_1e6():
    rng = np.random.default_rng(0)
    lp = rng.uniform(-400, -20, size=(6, 64))
    lengths = rng.integers(5, 300, size=(2, 64))
    t = [torch.tensor(x, dtype=torch.float32) for x in lp]
    for beta, alpha in [(0.01, 0.0), (0.01, 0.37), (0.1, 1.0), (0.5, 0.1)]:
        got = losses.wrpo_loss(*t, beta=beta, alpha=alpha).double().numpy()
        want = wrpo_loss(*[np.float32(x).astype(np.float64) for x in lp], beta, alpha)
        assert close(got, want)
    got = losses.dpo_loss(t[0], t[2], t[3], t[5], 0.1).double().numpy()
    assert close(got, dpo_loss(*[np.float32(lp[i]).astype(np.float64) for i in (0, 2, 3, 5)], 0.1))
    got = losses.ln_dpo_loss(t[0], t[2], t[3], t[5], torch.tensor(lengths[0]), torch.tensor(lengths[1]), 10).double()
    want = ln_dpo_loss(*[np.float32(lp[i]).astype(np.float64) for i in (0, 2, 3, 5)], lengths[0], lengths[1], 10)
    assert close(got.numpy(), want)


def test_alpha_ends_reduce_to_dpo_and_equal_policies_give_ln2():
    p, r = [T(x) for x in P], [T(x) for x in R]
    assert losses.wrpo_loss(*p, *r, 0.01, 0.0).item() == pytest.approx(losses.dpo_loss(p[1], p[2], r[1], r[2], 0.01).item())
    assert losses.wrpo_loss(*p, *r, 0.01, 1.0).item() == pytest.approx(losses.dpo_loss(p[0], p[2], r[0], r[2], 0.01).item())
    for value in (losses.wrpo_loss(*p, *p, 0.01, 0.3), losses.dpo_loss(p[0], p[1], p[0], p[1], 10),
                  losses.ln_dpo_loss(p[0], p[1], p[0], p[1], 3, 7, 10)):
        assert value.item() == pytest.approx(math.log(2), abs=1e-12)
    assert wrpo_alpha(50, 200, 0.1) == 0.025
