"""FuseChat's SCE and VaRM kernels against oracles written from docs/design.md 9 (numpy, float64)."""

import logging
import math

import numpy as np
import pytest
import torch

from merge_oracles import as64, assert_within_ulp, sce_oracle, varm_oracle

from fusechat.errors import InputError
from fusechat.merge import fusechat_sce, fusechat_varm, group_key, varm_weights


def make_inputs(shape, n=3, seed=0, scale=0.05, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    targets = [base + scale * torch.randn(shape, generator=g) for _ in range(n)]
    return base.to(dtype), [t.to(dtype) for t in targets]


# ---------------------------------------------------------------- SCE

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("select_topk", [1.0, 0.1, 0.0])
@pytest.mark.parametrize("shape", [(48, 32), (7,), (1,), (2, 1)])
def test_sce_matches_oracle(dtype, select_topk, shape):
    base, targets = make_inputs(shape, n=4, seed=hash((shape, select_topk)) % 1000, dtype=dtype)
    got = fusechat_sce(base, targets, select_topk)
    want = sce_oracle(as64(base), [as64(t) for t in targets], select_topk)
    assert got.shape == base.shape
    assert_within_ulp(got, want, dtype)


def test_sce_hand_computed_example():
    # The worked example of mergekit/README.md: selection drives the weights only.
    base = torch.zeros(4)
    d = [torch.tensor([3.0, -1, 1, 2]), torch.tensor([-3.0, 1, 1, 2]), torch.tensor([1.0, -1, 1, 0])]
    assert fusechat_sce(base, d, 0.5).tolist() == pytest.approx([2.8, -1, 1, 2])
    assert fusechat_sce(base, d, 1.0).tolist() == pytest.approx([8 / 3, -1, 1, 2])


def test_mergekit_sce_differs_from_fusechat_sce():
    from mergekit.merge_methods import merge_tensors

    base = torch.zeros(4)
    d = [torch.tensor([3.0, -1, 1, 2]), torch.tensor([-3.0, 1, 1, 2]), torch.tensor([1.0, -1, 1, 0])]
    builtin = merge_tensors([base, *d], "sce", base_index=0, parameters={"select_topk": 0.5})
    assert builtin.tolist() == pytest.approx([2.8, 0, 0, 0])


def test_sce_sign_election_with_zeros():
    base = torch.zeros(4)
    # element 0: deltas sum to 0 -> majority +1, only the positive one is kept
    # element 1: all zero -> nothing kept, divisor 0 -> 1, merged delta 0
    # element 2: zeros and one negative -> majority -1 (sum < 0), the zeros are never kept
    # element 3: zeros and one positive -> only the positive kept
    d = [torch.tensor([2.0, 0, 0, 0]), torch.tensor([-2.0, 0, 0, 0]), torch.tensor([0.0, 0, -3, 5])]
    got = fusechat_sce(base, d, 1.0)
    assert got.tolist() == [2.0, 0.0, -3.0, 5.0]
    np.testing.assert_allclose(got.numpy(), sce_oracle(base.numpy(), [t.numpy() for t in d], 1.0))


def test_sce_zero_weight_divisor_is_one_and_ties_go_to_earlier_elements():
    base = torch.zeros(3)
    d = [torch.tensor([2.0, 0, 0]), torch.tensor([0.0, 2, 0])]
    # variance [1, 1, 0]: k = int(0.5 * 2) = 1 and the tie goes to element 0, so the weights are
    # [1, 0]. Element 1 keeps only the second target, whose weight is 0: divisor 0 -> 1, delta 0.
    assert fusechat_sce(base, d, 0.5).tolist() == [2.0, 0.0, 0.0]


def test_sce_ties_in_quantised_variances_match_oracle():
    # bfloat16-like deltas (multiples of 1/8) make many equal variances around the threshold.
    g = torch.Generator().manual_seed(11)
    base = torch.zeros(200)
    d = [torch.randint(-3, 4, (200,), generator=g).float() / 8 for _ in range(3)]
    for select_topk in (0.1, 0.33, 0.5):
        want = sce_oracle(base.numpy(), [t.numpy() for t in d], select_topk)
        assert_within_ulp(fusechat_sce(base, d, select_topk), want, torch.float32)


def test_sce_all_zero_weights_are_uniform():
    base = torch.zeros(4)
    d = [torch.tensor([1.0, 2, 3, 4]), torch.tensor([3.0, 2, 1, 0])]
    # select_topk 0 -> empty mask -> weights sum to 0 -> uniform 1/2; the last element keeps only
    # the first target's 4 (the second's delta there is 0)
    got = fusechat_sce(base, d, 0.0)
    assert got.tolist() == [2.0, 2.0, 2.0, 4.0]


def test_sce_identical_targets_return_base():
    base, _ = make_inputs((5, 5))
    assert torch.equal(fusechat_sce(base, [base.clone(), base.clone()], 0.1), base)


def test_sce_leading_block_of_larger_embedding():
    base, targets = make_inputs((10, 6), n=3, seed=3)
    g = torch.Generator().manual_seed(9)
    wide = torch.cat([targets[1], torch.randn(4, 6, generator=g)])  # 4 extra vocabulary rows
    got = fusechat_sce(base, [targets[0], wide, targets[2]], 0.1, name="model.embed_tokens.weight")
    want = sce_oracle(as64(base), [as64(t) for t in targets], 0.1)
    assert got.shape == base.shape
    assert_within_ulp(got, want, torch.float32)


def test_sce_other_mismatch_skips_that_target_with_warning(caplog):
    base, targets = make_inputs((8, 4), n=3, seed=4)
    odd = torch.randn(9, 4)
    with caplog.at_level(logging.WARNING):
        got = fusechat_sce(base, [targets[0], odd, targets[2]], 1.0, name="model.layers.0.mlp.up_proj.weight",
                           labels=["a", "b", "c"])
    assert "skipping b" in caplog.text and "model.layers.0.mlp.up_proj.weight" in caplog.text
    want = sce_oracle(as64(base), [as64(targets[0]), as64(targets[2])], 1.0)
    assert_within_ulp(got, want, torch.float32)


def test_sce_smaller_embedding_is_skipped(caplog):
    base, targets = make_inputs((10, 6), n=2, seed=5)
    with caplog.at_level(logging.WARNING):
        got = fusechat_sce(base, [targets[0], targets[1][:8]], 1.0, name="lm_head.weight")
    assert "skipping" in caplog.text
    assert_within_ulp(got, sce_oracle(as64(base), [as64(targets[0])], 1.0), torch.float32)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_sce_rejects_select_topk_outside_unit_interval(bad):
    base, targets = make_inputs((3,))
    with pytest.raises(InputError, match="select_topk"):
        fusechat_sce(base, targets, bad)


# ---------------------------------------------------------------- VaRM

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softmax,temperature", [(False, 1.0), (True, 1.0), (True, 0.001)])
@pytest.mark.parametrize("shape", [(40, 24), (3,), (1,)])
def test_varm_matches_oracle(dtype, softmax, temperature, shape):
    base, targets = make_inputs(shape, n=3, seed=7, dtype=dtype)
    targets = [base + (i + 1) * (t - base) for i, t in enumerate(targets)]  # distinct variations
    got = fusechat_varm(base, targets, softmax=softmax, temperature=temperature)
    assert_within_ulp(got, varm_oracle(as64(base), [as64(t) for t in targets], softmax, temperature), dtype)


def test_varm_weights_exact_values():
    assert varm_weights([1.0, 3.0]).tolist() == [0.25, 0.75]
    assert varm_weights([1.0, 0.0, 3.0]).tolist() == [1 / 3] * 3  # any zero -> uniform
    soft = varm_weights([1.0, 2.0], softmax=True, temperature=0.5)
    assert soft.tolist() == pytest.approx([1 / (1 + math.exp(2)), math.exp(2) / (1 + math.exp(2))])
    with pytest.raises(InputError, match="temperature"):
        varm_weights([1.0], temperature=0.0)


def test_varm_unchanged_target_gives_uniform_average():
    base, targets = make_inputs((6, 2), n=2, seed=8)
    got = fusechat_varm(base, [base.clone(), targets[1]])
    np.testing.assert_allclose(got.numpy(), (as64(base) + as64(targets[1])) / 2, rtol=1e-6)


def test_varm_given_variations_and_leading_block():
    base, targets = make_inputs((5, 3), n=2, seed=9)
    wide = torch.cat([targets[1], torch.ones(2, 3)])
    got = fusechat_varm(base, [targets[0], wide], variations=[1.0, 3.0], name="lm_head.weight")
    np.testing.assert_allclose(got.numpy(), 0.25 * as64(targets[0]) + 0.75 * as64(targets[1]), rtol=1e-6)


@pytest.mark.parametrize("name,granularity,key", [
    ("model.layers.12.self_attn.q_proj.weight", "tensor", "model.layers.12.self_attn.q_proj.weight"),
    ("model.layers.12.self_attn.q_proj.weight", "module", "model.layers.12.self_attn"),
    ("model.layers.12.post_attention_layernorm.weight", "module", "model.layers.12.post_attention_layernorm"),
    ("model.layers.12.mlp.up_proj.weight", "layer", "12"),
    ("model.embed_tokens.weight", "module", "model.embed_tokens.weight"),
    ("lm_head.weight", "layer", "lm_head.weight"),
    ("model.norm.weight", "model", "*"),
])
def test_group_keys(name, granularity, key):
    assert group_key(name, granularity) == key


def test_group_key_rejects_unknown_granularity():
    with pytest.raises(InputError, match="granularity"):
        group_key("model.norm.weight", "block")


def test_kth_largest_is_exact_on_ties_and_spread_values():
    from fusechat.merge.sce import kth_largest, top_positions

    g = torch.Generator().manual_seed(12)
    cases = [torch.rand(5000, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-30, 30, (5000,), generator=g),
             torch.randint(0, 4, (3000,), generator=g).double() / 3, torch.zeros(10, dtype=torch.float64)]
    for values in cases:
        ordered = np.sort(values.numpy())[::-1]
        for k in (1, 2, 7, values.numel() // 3, values.numel()):
            assert kth_largest(values, k).item() == ordered[k - 1]
            chosen = top_positions(values, k)
            assert chosen.numel() == k and np.sort(values[chosen].numpy())[::-1].tolist() == ordered[:k].tolist()
