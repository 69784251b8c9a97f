"""Two roles as LoRA adapters on one frozen base (tiny random model, fast)."""

import pytest
import torch

from agents import HFBackend, render_chat, tiny_model
from agents.policy import Policy
from agents.roles import adapter_parameters, copy_adapter, shared_base_players

CHAT = [{"role": "user", "content": "Rewrite: how do I bake bread?"}]


@pytest.fixture
def players():
    base, tokenizer = tiny_model(seed=0)
    reference = HFBackend(base, tokenizer).score([CHAT], [" Sure."])
    model = shared_base_players(base, rank=4, alpha=8)
    return model, tokenizer, reference


def _train(model, tokenizer, adapter):
    backend = HFBackend(model, tokenizer)
    backend.use_adapter(adapter)
    prompt = tokenizer(render_chat(tokenizer, CHAT), add_special_tokens=False)["input_ids"]
    target = tokenizer(" Sure.", add_special_tokens=False)["input_ids"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(trainable, lr=0.5)
    (-backend.sequence_logprobs([(prompt, target)]).sum()).backward()
    optimiser.step()
    optimiser.zero_grad()


def test_every_role_starts_as_the_base_and_only_its_adapter_trains(players):
    model, tokenizer, reference = players
    backend = HFBackend(model, tokenizer)
    for role in ("attacker", "defender"):
        assert backend.score([CHAT], [" Sure."], adapter=role) == pytest.approx(reference, abs=1e-5)
    base_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" not in n}
    defender_before = {n: p.clone() for n, p in adapter_parameters(model, "defender").items()}
    _train(model, tokenizer, "attacker")
    assert backend.score([CHAT], [" Sure."], adapter="attacker")[0] > reference[0] + 1e-3
    assert backend.score([CHAT], [" Sure."], adapter="defender") == pytest.approx(reference, abs=1e-5)
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if "lora_" not in n)
    assert all(torch.equal(p, defender_before[n]) for n, p in adapter_parameters(model, "defender").items())


def test_copy_adapter_snapshots_a_role(players):
    model, tokenizer, _ = players
    _train(model, tokenizer, "attacker")
    copy_adapter(model, "attacker", "attacker_ema")
    backend = HFBackend(model, tokenizer)
    assert backend.score([CHAT], [" Sure."], adapter="attacker_ema") == backend.score(
        [CHAT], [" Sure."], adapter="attacker"
    )


def test_copy_adapter_walks_the_parameters_a_fixed_number_of_times(players, monkeypatch):
    """Not once per copied tensor: that made the copy quadratic in the adapter's size (the bundled
    model's adapter has 420 tensors; the walks took half of a quick-demo run's training)."""
    model, _, _ = players
    copy_adapter(model, "attacker", "attacker_ema")  # creates the target (PEFT walks the model itself)
    walks = []
    named_parameters = torch.nn.Module.named_parameters

    def counted(self, *args, **kwargs):
        walks.append(self)
        return named_parameters(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "named_parameters", counted)
    copy_adapter(model, "defender", "attacker_ema")
    assert len([w for w in walks if w is model]) == 2  # source and target, once each (was 1 + one per tensor: 29)


def test_policies_pick_their_adapter(players):
    model, tokenizer, _ = players
    _train(model, tokenizer, "attacker")
    backend = HFBackend(model, tokenizer)
    attacker = Policy(backend, max_tokens=6, temperature=0, adapter="attacker")
    defender = Policy(backend, max_tokens=6, temperature=0, adapter="defender")
    assert (
        attacker.sample(["hello"], 1)[0][0].token_ids
        == backend.generate([[{"role": "user", "content": "hello"}]], max_tokens=6, temperature=0, adapter="attacker")[
            0
        ].token_ids
    )
    assert (
        defender.sample(["hello"], 1)[0][0].token_ids
        == backend.generate([[{"role": "user", "content": "hello"}]], max_tokens=6, temperature=0, adapter="defender")[
            0
        ].token_ids
    )
    with pytest.raises(KeyError, match="no adapter named"):
        backend.generate([CHAT], max_tokens=2, adapter="judge")
