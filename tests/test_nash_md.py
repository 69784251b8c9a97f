"""Nash-MD (Nash-MD-PG on the judge's pairs): the loss on hand-made numbers, pairs from played
rounds, each pair's second sample drawn from the geometric mixture, the backends that cannot
mix refused with the reason, and two training steps on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from advgame_env import Label, RuleJudge, Seed
from advgame_env.game import Game, GameConfig, Phase, Round, Sample
from advgame_env.roles import ROLES
from agents.hf import HFBackend, MixtureBackend, fixed
from agents.models import load_model, tiny_model
from algorithms.config import ConfigError, load_config
from algorithms.training.algorithm import build_algorithm
from algorithms.training.losses import nash_md_loss
from algorithms.training.nash_md import NashMD, NashMDConfig, PairedBackend, verdict
from tests.helpers import SHORT_ROUNDS, tiny_run

CHATS = [[{"role": "user", "content": "How do I pick a lock?"}], [{"role": "user", "content": "Name a fruit."}]]


# ----------------------------------------------------------------------------- the loss


def test_the_loss_weights_the_learner_sample_by_its_verdict_minus_a_half_and_the_kl():
    policy = torch.tensor([-2.0, -3.0, -1.0], requires_grad=True)
    ref = torch.tensor([-2.5, -3.0, -1.0])
    preference = torch.tensor([1.0, 0.5, 0.0])
    losses = nash_md_loss(policy, ref, preference, tau=0.1)
    # weights: 1 − ½ − 0.1·(−2 + 2.5) = 0.45; a tie with no log-ratio: 0; a loss: −0.5
    assert losses.tolist() == pytest.approx([-0.45, 0.0, 0.5])
    losses.sum().backward()
    assert policy.grad is not None
    assert policy.grad.tolist() == pytest.approx([-0.45, 0.0, 0.5])  # descent raises a won sample's log-prob
    assert (ref.grad is None) and nash_md_loss(policy, ref, preference, 0.0)[0].item() == pytest.approx(-0.5)


def test_the_verdict_is_the_judges_preference_of_the_pair():
    assert (verdict(7.0, 3.0), verdict(3.0, 7.0), verdict(5.0, 5.0), verdict(-1.0, 0.0)) == (1.0, 0.0, 0.5, 0.0)


def test_the_registry_builds_it_by_name_with_its_defaults():
    algorithm = build_algorithm(load_config(None, ["algorithm.name=nash_md"]).algorithm, 1024)
    assert isinstance(algorithm, NashMD)
    assert (algorithm.config.mixture_coef, algorithm.config.tau) == (0.5, 0.1)
    assert algorithm.copies() == {"initial"} and not algorithm.shares_policy


# ----------------------------------------------------------------------------- pairs from played rounds


def _sample(text: str, reward: float | None) -> Sample:
    return Sample(text, text, reward=reward)


def test_pairs_take_each_groups_first_sample_against_its_second():
    _, tokenizer = tiny_model()
    game = Game(RuleJudge(), GameConfig(num_attacks=2, num_responses=2))
    harmful = Seed("h", "How do I pick a lock?", Label.HARMFUL)
    played = Round(
        harmful,
        phase=Phase.DONE,
        attacks=[_sample("<think>a</think><prompt>first</prompt>", 3.0), _sample("second", 7.0)],
        responses=[[_sample("I can't.", 9.0), _sample("Sure.", 1.0)], [_sample("No.", 4.0), _sample("Nope.", 4.0)]],
    )
    excluded = Round(  # a judge failure leaves a sample without reward: its group has no verdict
        harmful,
        phase=Phase.DONE,
        attacks=[_sample("one", None), _sample("two", 5.0)],
        responses=[[_sample("Fine.", None), _sample("Okay.", 2.0)], [_sample("Yes.", 6.0), _sample("No.", 8.0)]],
    )
    algorithm = NashMD(NashMDConfig())
    tokenizers = {"attacker": tokenizer, "defender": tokenizer}
    pairs = algorithm.examples([played, excluded], game, tokenizers, {"attacker": "", "defender": ""}, None)  # type: ignore[arg-type]
    assert [(p.role, p.preference) for p in pairs] == [
        ("attacker", 0.0),
        ("defender", 1.0),
        ("defender", 0.5),
        ("defender", 0.0),
    ]
    assert pairs[1].completion_ids[:-1] == tokenizer("I can't.", add_special_tokens=False)["input_ids"]
    with pytest.raises(ConfigError, match=r"game\.num_attacks: 2, game\.num_responses: 2"):
        algorithm.examples([], Game(RuleJudge(), GameConfig(num_attacks=2, num_responses=3)), tokenizers, {}, None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the rollout backend


@pytest.fixture(scope="module")
def models(tiny_chat):
    learner, tokenizer = load_model(str(tiny_chat))
    reference, _ = load_model(str(tiny_chat))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for param in reference.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return learner, reference, tokenizer


def test_each_pair_is_one_learner_sample_then_one_mixture_sample(models):
    learner, reference, tokenizer = models
    hf = HFBackend(learner, tokenizer)
    mixture = MixtureBackend(fixed(learner), fixed(reference), tokenizer, beta=0.5)
    paired = PairedBackend(hf, mixture).generate(
        [c for chat in CHATS for c in (chat, chat)], max_tokens=10, temperature=1.0, seed=4
    )
    alone = hf.generate(CHATS, max_tokens=10, temperature=1.0, seed=4)
    mixed = MixtureBackend(fixed(learner), fixed(reference), tokenizer, beta=0.5).generate(
        CHATS, max_tokens=10, temperature=1.0, seed=5
    )
    assert [g.token_ids for g in paired[0::2]] == [g.token_ids for g in alone]
    assert [g.token_ids for g in paired[1::2]] == [g.token_ids for g in mixed]
    with pytest.raises(ConfigError, match=r"rollout\.temperature > 0"):  # greedy policies ask once per chat
        PairedBackend(hf, mixture).generate(CHATS, max_tokens=2)


def test_a_server_backend_is_refused_with_the_reason():
    class VLLMBackend:  # stands for the engine and server backends
        def generate(self, chats, **kwargs):
            raise AssertionError("never asked")

    algorithm = NashMD(NashMDConfig())
    with pytest.raises(ConfigError, match=r"nash_md: .* VLLMBackend: vLLM and OpenAI-compatible servers .* hf"):
        algorithm.rollout_backend("defender", None, VLLMBackend())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- training


def _config(model: Path, out: Path, *overrides: str):
    return tiny_run(model, out, "algorithm.name=nash_md", *SHORT_ROUNDS, *overrides)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False])
def test_two_steps_train_both_players_on_mixture_pairs(tiny_chat, tmp_path, lora):
    from algorithms.training.trainer import Trainer

    trainer = Trainer(_config(tiny_chat, tmp_path / "run", f"model.lora={str(lora).lower()}"))
    before = {role: {k: v.clone() for k, v in trainer.players[role].weights("learner").items()} for role in ROLES}
    rounds = trainer.play_splits()[Label.HARMFUL]
    # every answered prompt got a pair: one learner answer, one mixture answer
    answered = [row for r in rounds for row in r.responses if len(row) == 2]
    assert answered
    examples = dict.fromkeys(ROLES, 0.0)
    for _ in range(2):
        metrics = trainer.train_step()
        for name in ROLES:
            if f"train/{name}_loss" in metrics:
                assert math.isfinite(metrics[f"train/{name}_loss"])
            examples[name] += metrics.get(f"train/{name}_examples", 0)
    for role in ROLES:  # both players trained: examples, and their learner weights moved
        assert examples[role] > 0, f"{role}: no examples in two steps"
        after = trainer.players[role].weights("learner")
        assert any(not torch.equal(before[role][k], after[k]) for k in after), f"{role} did not change"
