"""EMA arithmetic on tensors, full models and LoRA adapters (tiny random model)."""

import pytest
import torch

from agents import tiny_model
from agents.roles import adapter_parameters, shared_base_players
from algorithms.training.ema import ema_update, ema_update_adapter, ema_update_model


def test_one_update_from_zero_towards_one_gives_five_percent():
    ema, param = torch.zeros(3), torch.ones(3)
    ema_update([ema], [param], decay=0.95)
    # 0.95·0 + 0.05·1 = 0.05
    assert ema.tolist() == pytest.approx([0.05] * 3)
    assert param.tolist() == [1.0] * 3  # the online tensor is untouched


def test_k_updates_follow_the_closed_form():
    ema, param = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for _ in range(10):
        ema_update([ema], [param], decay=0.95)
    # the weight left on the start (0) is 0.95^k: 1 − 0.95^10 = 1 − 0.598736939 = 0.401263061
    assert ema.tolist() == pytest.approx([1 - 0.95**10] * 2, abs=1e-12)


def test_update_pairs_tensors_by_position_and_checks_them():
    a, b = torch.zeros(2), torch.full((3,), 10.0)
    ema_update([a, b], [torch.ones(2), torch.zeros(3)], decay=0.5)
    assert a.tolist() == [0.5, 0.5] and b.tolist() == [5.0] * 3
    half = torch.zeros(2)
    ema_update([half], [torch.ones(2, dtype=torch.bfloat16)], decay=0.5)  # cast to the EMA's dtype
    assert half.dtype == torch.float32 and half.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="shape"):
        ema_update([torch.zeros(2)], [torch.zeros(3)])
    with pytest.raises(ValueError):
        ema_update([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)])  # unmatched counts
    with pytest.raises(ValueError, match="decay"):
        ema_update([torch.zeros(2)], [torch.zeros(2)], decay=1.5)


def test_full_model_ema_averages_parameters_without_tracking_gradients():
    torch.manual_seed(0)
    model, ema_model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = {n: p.detach().clone() for n, p in ema_model.named_parameters()}
    ema_update_model(ema_model, model, decay=0.95)
    for name, param in model.named_parameters():
        expected = 0.95 * before[name] + 0.05 * param.detach()
        assert torch.allclose(dict(ema_model.named_parameters())[name], expected)
        assert dict(ema_model.named_parameters())[name].grad_fn is None
    with pytest.raises(ValueError, match="differ by name"):
        ema_update_model(torch.nn.Linear(3, 2), torch.nn.Sequential(torch.nn.Linear(3, 2)))


def test_adapter_ema_changes_only_the_target_adapter():
    base, _ = tiny_model(seed=0)
    model = shared_base_players(base, rank=4, alpha=8)
    with torch.no_grad():
        for p in adapter_parameters(model, "attacker").values():
            p.fill_(1.0)
    ema_update_adapter(model, "attacker", "attacker_ema", decay=0.95)  # created as a copy
    ema = adapter_parameters(model, "attacker_ema")
    assert all(torch.equal(p, torch.ones_like(p)) for p in ema.values())

    with torch.no_grad():
        for p in adapter_parameters(model, "attacker").values():
            p.fill_(3.0)
    others = {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if ".attacker_ema." not in name  # base weights, the attacker and the defender
    }
    ema_update_adapter(model, "attacker", "attacker_ema", decay=0.95)
    # 0.95·1 + 0.05·3 = 1.1
    assert all(torch.allclose(p, torch.full_like(p, 1.1)) for p in ema.values())
    assert all(torch.equal(p, others[name]) for name, p in model.named_parameters() if name in others)
    assert not any(p.requires_grad for p in ema.values())  # the EMA is never trained


def test_adapter_ema_is_not_the_ema_of_the_merged_delta():
    # the module docstring's 1×1 example: EMA adapter (B, A) = (0, 1), trained adapter (1, 2)
    b_ema, a_ema = torch.tensor([0.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    b, a = torch.tensor([1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    merged = 0.95 * (b_ema * a_ema) + 0.05 * (b * a)  # 0.95·0 + 0.05·2 = 0.1
    ema_update([b_ema, a_ema], [b, a], decay=0.95)  # B: 0.05, A: 1.05
    assert (b_ema * a_ema).item() == pytest.approx(0.0525)
    assert merged.item() == pytest.approx(0.1)
    # the gap is −decay·(1 − decay)·ΔB·ΔA = −0.95·0.05·1·1 = −0.0475
    assert (b_ema * a_ema - merged).item() == pytest.approx(-0.0475)
