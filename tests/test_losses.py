"""DPO, IPO and GRPO losses against hand-computed values, and their gradients' signs."""

import math

import pytest
import torch

from algorithms.training.losses import dpo_loss, group_advantages, grpo_token_loss, ipo_loss, k3_kl, margin


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# ----------------------------------------------------------------------------- DPO / IPO

# Summed log-probs of one pair: policy (−10 chosen, −12 rejected), reference (−11, −12):
# h = (−10 − (−11)) − (−12 − (−12)) = 1 − 0 = 1.
PAIR = (-10.0, -12.0, -11.0, -12.0)


def test_margin_is_the_policy_gain_over_the_reference():
    assert margin(*(t(v) for v in PAIR)).item() == 1.0
    # a second pair where the policy likes the rejected sample more: h = (−5 + 5) − (−3 + 6) = −3
    assert margin(t(-10.0, -5.0), t(-12.0, -3.0), t(-11.0, -5.0), t(-12.0, -6.0)).tolist() == [1.0, -3.0]


def test_dpo_value_by_hand():
    # h = 1, β = 0.1: −log σ(0.1) = log(1 + e^−0.1) = log(1.904837418) = 0.644396660
    assert dpo_loss(*(t(v) for v in PAIR), beta=0.1).item() == pytest.approx(0.6443966600735709, abs=1e-12)
    # h = 0: −log σ(0) = log 2 = 0.693147181, whatever β
    assert dpo_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), beta=0.5).item() == pytest.approx(math.log(2), abs=1e-12)
    # h = 1, β = 1: log(1 + e^−1) = log(1.367879441) = 0.313261687
    assert dpo_loss(*(t(v) for v in PAIR), beta=1.0).item() == pytest.approx(0.3132616875182228, abs=1e-12)


def test_dpo_gradient_raises_chosen_and_lowers_rejected_and_skips_the_reference():
    chosen, rejected, ref_c, ref_r = (t(v, grad=True) for v in PAIR)
    dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.1).sum().backward()
    # dL/dπc = −β·σ(−βh) = −0.1·σ(−0.1) = −0.1·0.475020813 = −0.0475020813; dL/dπr is its opposite
    assert chosen.grad.item() == pytest.approx(-0.0475020812521060, abs=1e-12)
    assert rejected.grad.item() == pytest.approx(0.0475020812521060, abs=1e-12)
    # gradient DESCENT therefore raises log π(chosen) and lowers log π(rejected)
    assert ref_c.grad is None and ref_r.grad is None  # the reference is a constant


def test_ipo_value_gradient_and_minimum_at_the_target_margin():
    chosen, rejected, ref_c, ref_r = (t(v, grad=True) for v in PAIR)
    loss = ipo_loss(chosen, rejected, ref_c, ref_r, beta=0.1)
    # h = 1, target 1/(2·0.1) = 5: (1 − 5)² = 16; dL/dπc = 2·(1 − 5) = −8, dL/dπr = +8
    assert loss.item() == pytest.approx(16.0, abs=1e-12)
    loss.sum().backward()
    assert chosen.grad.item() == pytest.approx(-8.0) and rejected.grad.item() == pytest.approx(8.0)
    # minimum at h = 5 (zero loss, zero gradient); h = 7 overshoots: (7 − 5)² = 4, pushed back down
    hs = torch.linspace(-10.0, 20.0, 301, dtype=torch.float64)  # step 0.1
    losses = ipo_loss(hs, torch.zeros_like(hs), torch.zeros_like(hs), torch.zeros_like(hs), beta=0.1)
    assert hs[losses.argmin()].item() == pytest.approx(5.0)
    assert ipo_loss(t(7.0), t(0.0), t(0.0), t(0.0)).item() == pytest.approx(4.0)
    # β = 0.5: target 1 = h, so zero loss
    assert ipo_loss(*(t(v) for v in PAIR), beta=0.5).item() == pytest.approx(0.0, abs=1e-12)


def test_preference_losses_are_per_pair():
    chosen, rejected, ref_c, ref_r = t(-10.0, -5.0), t(-12.0, -3.0), t(-11.0, -5.0), t(-12.0, -6.0)  # h = 1, −3
    assert dpo_loss(chosen, rejected, ref_c, ref_r).shape == (2,)
    # IPO: (1 − 5)² = 16, (−3 − 5)² = 64
    assert ipo_loss(chosen, rejected, ref_c, ref_r).tolist() == pytest.approx([16.0, 64.0])


# ----------------------------------------------------------------------------- GRPO


def grpo_inputs(logp_values, advantages):
    logp = torch.tensor(logp_values, dtype=torch.float64, requires_grad=True)
    return logp, torch.tensor(advantages, dtype=torch.float64), torch.ones_like(logp)


def test_on_policy_grpo_gradient_is_minus_the_advantage_per_token():
    logp, adv, mask = grpo_inputs([[-1.0, -2.0, -0.5], [-0.1, -3.0, -1.5]], [1.5, -0.5])
    loss = grpo_token_loss(logp, logp.detach(), logp.detach(), adv, mask)
    # ratio 1, KL 0: each token contributes −Â, summed over 3 tokens: [−4.5, +1.5]
    assert loss.tolist() == pytest.approx([-4.5, 1.5])
    loss.sum().backward()
    assert logp.grad.tolist() == [[-1.5] * 3, [0.5] * 3]  # d/dl (−exp(l − sg l)·Â) = −Â


def test_padding_is_masked_even_when_it_holds_infinities():
    logp, adv, _ = grpo_inputs([[-1.0, -2.0, float("-inf")], [-0.5, float("-inf"), float("-inf")]], [2.0, 1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    ref = torch.tensor([[-1.5, -2.0, float("-inf")], [-0.5, 0.0, float("nan")]], dtype=torch.float64)
    loss = grpo_token_loss(logp, logp.detach(), ref, adv, mask, kl_beta=0.1)
    # row 0: −2·2 + 0.1·k3(r − l = −0.5) = −4 + 0.1·(e^−0.5 + 0.5 − 1) = −4 + 0.1·0.106530660 = −3.989346934
    # row 1: one token, −1 (ref equals logp there)
    assert loss.tolist() == pytest.approx([-4 + 0.1 * (math.exp(-0.5) - 0.5), -1.0], abs=1e-12)
    loss.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 2] == 0 and logp.grad[1, 1:].eq(0).all()


def test_truncated_importance_ratio_is_a_detached_weight_capped_at_two():
    # l − l_rollout = log 1.5 on token 0 (ratio 1.5) and log 3 on token 1 (ratio 3, capped to 2)
    logp, adv, mask = grpo_inputs([[-1.0, -1.0]], [2.0])
    rollout = logp.detach() - torch.tensor([[math.log(1.5), math.log(3.0)]], dtype=torch.float64)
    loss = grpo_token_loss(logp, rollout, logp.detach(), adv, mask, tis_cap=2.0)
    # value: −Â·w summed = −2·1.5 − 2·2 = −7
    assert loss.item() == pytest.approx(-7.0)
    loss.sum().backward()
    # manual gradient with the weight held constant: −Â·w = [−3, −4]. An undetached ratio would
    # add its own derivative Â·ratio on the uncapped token, doubling it to −6.
    assert logp.grad[0].tolist() == pytest.approx([-3.0, -4.0])
    logp.grad = None
    undetached = -(torch.exp(logp - logp.detach()) * adv * torch.exp(logp - rollout).clamp(max=2.0)).sum()
    undetached.backward()
    assert logp.grad[0].tolist() == pytest.approx([-6.0, -4.0])  # the reference code's gradient


def test_no_rollout_logprobs_or_no_cap_turns_importance_sampling_off():
    logp, adv, mask = grpo_inputs([[-1.0, -1.0]], [2.0])
    rollout = logp.detach() - 1.0  # ratio e ≈ 2.718 if it were used
    for loss in (
        grpo_token_loss(logp, None, logp.detach(), adv, mask),
        grpo_token_loss(logp, rollout, logp.detach(), adv, mask, tis_cap=None),
    ):
        assert loss.item() == pytest.approx(-4.0)  # −2 per token, weight 1


def test_k3_kl_is_zero_when_equal_and_positive_otherwise():
    ref = t(-1.0, -1.0, -1.0)
    logp = t(-1.0, -2.0, 0.0, grad=True)  # r − l = 0, 1, −1
    kl = k3_kl(logp, ref)
    # e^0 − 0 − 1 = 0; e^1 − 1 − 1 = 0.718281828; e^−1 + 1 − 1 = 0.367879441
    assert kl.tolist() == pytest.approx([0.0, math.e - 2, math.exp(-1)], abs=1e-12)
    kl.sum().backward()
    # d/dl = 1 − e^(r − l): 0; 1 − e = −1.718 (descent raises l toward r); 1 − e^−1 = 0.632 (lowers it)
    assert logp.grad.tolist() == pytest.approx([0.0, 1 - math.e, 1 - math.exp(-1)], abs=1e-12)
    # inside the GRPO loss, with zero advantage only β·KL is left: 0.1·(0.718281828 + 0.367879441)
    token_logp, adv, mask = grpo_inputs([[-1.0, -2.0, 0.0]], [0.0])
    loss = grpo_token_loss(token_logp, None, ref.unsqueeze(0), adv, mask, kl_beta=0.1)
    assert loss.item() == pytest.approx(0.1 * (math.e - 2 + math.exp(-1)), abs=1e-12)


# ----------------------------------------------------------------------------- advantages


def test_batch_mean_advantages_exclude_none():
    # valid rewards 1, 3, 5: mean 3; no std scaling
    assert group_advantages([1.0, 3.0, None, 5.0]) == [-2.0, 0.0, None, 2.0]
    assert group_advantages([None, None]) == [None, None]
    assert group_advantages([]) == []


def test_group_mean_advantages_use_each_groups_own_mean():
    rewards = [1.0, 3.0, None, 4.0, 6.0, -1.0]
    groups = [(0,), (0,), (1,), (1,), (1,), (2,)]
    # group (0,): mean 2 -> −1, +1; group (1,): mean of 4, 6 = 5 -> None, −1, +1; a lone member -> 0
    assert group_advantages(rewards, "group_mean", groups) == [-1.0, 1.0, None, -1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="group key"):
        group_advantages(rewards, "group_mean")
    with pytest.raises(ValueError, match="baseline"):
        group_advantages(rewards, "std")  # type: ignore[arg-type]
