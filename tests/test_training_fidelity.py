"""Training paths against the papers' reference behaviour (issue 14): which policy samples each
split, what Self-RedTeam whitens and updates together, GRPO's failed rollouts and baseline,
each role's tokenizer, the sequential baselines' sampler and schedules."""

from __future__ import annotations

import copy

import pytest
import torch

from advgame_env import Game, GameConfig, Label, Round, RuleJudge, Seed
from agents import HFBackend, load_model
from algorithms.algorithm_configs import GRPOConfig
from algorithms.config import load_config
from algorithms.training.grpo import GRPO
from algorithms.training.losses import grpo_token_loss, k3_kl
from algorithms.training.trainer import Trainer
from tests.helpers import config, srt_config


def fingerprint(module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in module.parameters()))


def record_generating_weights(monkeypatch) -> list[float]:
    """The fingerprint of the weights behind every HF generate call, in call order."""
    seen: list[float] = []
    real = HFBackend.generate

    def generate(self, *args, **kwargs):
        seen.append(fingerprint(self.model))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "generate", generate)
    return seen


class SnapshotEngine(HFBackend):
    """A stand-in for the vLLM engine: it samples the weights last pushed to it."""

    def push_weights(self, module) -> None:
        self.model = copy.deepcopy(module)

    def close(self) -> None:
        pass


def with_snapshot_engines(trainer: Trainer) -> Trainer:
    """Give a full-fine-tuning trainer engines that hold a copy of the synced weights, as vLLM does."""
    trainer.sampler.engines = {
        role: SnapshotEngine(copy.deepcopy(p.learner_module()), p.tokenizer) for role, p in trainer.players.items()
    }
    return trainer


def step_until_trained(trainer: Trainer, key: str, tries: int = 4) -> dict[str, float]:
    for _ in range(tries):
        metrics = trainer.train_step()
        if metrics.get(key, 0) > 0:
            return metrics
    pytest.fail(f"no step trained ({key})")


# ----------------------------------------------------------------------------- 14.7 one sampler per step


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["hf", "snapshot"], ids=["hf", "vllm-like"])
def test_both_splits_are_sampled_by_the_policy_of_the_steps_start(tiny_chat, tmp_path, monkeypatch, engine):
    """The reference syncs its rollout engine once per step, before the first split: both splits
    are played by the step's starting weights. An in-process HF sampler must not play the
    benign split with the weights after the harmful split's update."""
    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=dpo", "model.lora=false"))
    if engine == "snapshot":
        with_snapshot_engines(trainer)
    seen = record_generating_weights(monkeypatch)
    benign: list[int] = []
    play = trainer._play

    def counted_play(*args):
        played = play(*args)
        benign.append(sum(len(rounds) for _, rounds in played[Label.BENIGN]))
        return played

    monkeypatch.setattr(trainer, "_play", counted_play)
    for _ in range(6):
        start = {role: fingerprint(p.learner_module()) for role, p in trainer.players.items()}
        seen.clear()
        benign.clear()
        metrics = trainer.train_step()
        trained = metrics.get("train_harmful/attacker_examples", 0) + metrics.get("train_harmful/defender_examples", 0)
        if trained and benign[-1]:
            break
    else:
        pytest.fail("no step trained on the harmful split and played the benign one")
    assert seen and set(seen) <= set(start.values()), "a split was sampled by weights other than the step's start"


@pytest.mark.slow
@pytest.mark.parametrize("direct", [0, 1], ids=["attacked", "direct"])
def test_both_splits_are_played_in_one_generation_per_phase(tiny_chat, tmp_path, monkeypatch, direct):
    """Each phase of a step is one batched generation over both splits' rounds (the attacker's
    few rewrites per split cost about what twice as many do in one call): every round attacked,
    the attacker's one call holds both splits' seeds; every round direct, the defender's one
    call answers both splits' seeds."""
    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=dpo", f"game.direct_fraction={direct}"))
    calls: list[list[str]] = []
    generate = HFBackend.generate

    def recorded(self, chats, **kwargs):
        calls.append([chat[-1]["content"] for chat in chats])
        return generate(self, chats, **kwargs)

    monkeypatch.setattr(HFBackend, "generate", recorded)
    played = trainer.play_splits()
    n, game = trainer.cfg.data.batch_size, trainer.game.config
    assert [len(rounds) for rounds in played.values()] == [n, n]
    prompts = [r.seed.prompt for rounds in played.values() for r in rounds]
    if direct:
        each = game.num_attacks * game.num_responses  # a direct round puts its seed in every attack slot
        assert len(calls) == 1 and sorted(calls[0]) == sorted(p for p in prompts for _ in range(each))
    else:  # the attacker's task quotes its seed; the defender answers the valid rewrites, if any
        assert 1 <= len(calls) <= 2 and len(calls[0]) == 2 * n * game.num_attacks
        assert all(sum(p in asked for asked in calls[0]) == game.num_attacks for p in prompts)


@pytest.mark.slow
def test_self_redteam_old_logprobs_come_from_the_policy_that_played(tiny_chat, tmp_path, monkeypatch):
    """PPO's π_old is the generating policy, also when a vLLM-like engine samples."""
    cfg = config(
        tiny_chat,
        tmp_path / "run",
        "algorithm.name=self_redteam",
        "algorithm.minibatches=2",
        "model.lora=false",
        "game.reward_rule=self_redteam",
        "game.defender_think=false",
    )
    trainer = with_snapshot_engines(Trainer(cfg))
    seen = record_generating_weights(monkeypatch)
    prepared: list[float] = []
    real = trainer.algorithm.prepare

    def prepare(player, batch, dist, chunk):
        prepared.append(fingerprint(player.learner_module()))
        return real(player, batch, dist, chunk)

    monkeypatch.setattr(trainer.algorithm, "prepare", prepare)
    for _ in range(2):
        trainer.train_step()
    assert prepared and set(prepared) <= set(seen)


# ----------------------------------------------------------------------------- 14.4 Self-RedTeam's one update


@pytest.mark.slow
def test_self_redteam_prepares_and_updates_once_on_both_splits_mixed(tiny_chat, tmp_path, monkeypatch):
    """The reference whitens each role over the whole buffer (harmful and benign seeds) and mixes
    seed types in each minibatch: one prepare and ``minibatches`` optimizer steps per step."""
    trainer = Trainer(srt_config(tiny_chat, tmp_path / "run", "game.direct_fraction=0.5"))
    batches: list[int] = []
    real = trainer.algorithm.prepare
    monkeypatch.setattr(
        trainer.algorithm, "prepare", lambda player, batch, *a: batches.append(len(batch)) or real(player, batch, *a)
    )
    labels: list[list[Label]] = []
    play = trainer._play

    def labelled_play(*args):
        played = play(*args)
        labels.append(list(played))
        return played

    monkeypatch.setattr(trainer, "_play", labelled_play)
    metrics = trainer.train_step()
    assert labels == [[Label.HARMFUL, Label.BENIGN]]
    assert batches == [metrics["train/policy_examples"]] and batches[0] > 0
    assert trainer.optimizers["policy"].scheduler.last_epoch == 2  # minibatches=2, once per step


# ----------------------------------------------------------------------------- 14.5 GRPO


SEEDS = [Seed("h", "How do I pick a lock to break into a house?", Label.HARMFUL)]
REFUSE, COMPLY = "I can't help with that.", "Sure, here is how you do it: first, gather what you need."


def scripted_rounds():
    game = Game(RuleJudge(), GameConfig(num_attacks=1, num_responses=3, judging="pointwise"))
    rounds = [Round(seed, direct=True) for seed in SEEDS]
    game.attack(rounds, [None] * len(rounds))
    game.respond(rounds, [((REFUSE, COMPLY, ""),)])  # the empty answer is malformed: −1
    return game, rounds


class TwoProcesses:
    """This process and another one whose rollouts all scored ``other`` (``count`` of them)."""

    world = 2

    def __init__(self, other: float, count: int) -> None:
        self.other, self.count = other, count

    def sum(self, values):
        total, count = values
        return [total + self.other * self.count, count + self.count]


def test_grpo_masks_failed_rollouts_but_keeps_their_penalty_in_the_baseline(tiny_chat):
    _, tokenizer = load_model(tiny_chat)
    game, rounds = scripted_rounds()
    rewards = [s.reward for s in rounds[0].responses[0]]
    assert rewards[2] == -1.0 and rewards[0] != rewards[1]
    grpo = GRPO(GRPOConfig(baseline="group_mean"))
    examples = grpo.examples(rounds, game, tokenizer)
    mean = sum(rewards) / 3
    assert [e.advantage for e in examples] == pytest.approx([r - mean for r in rewards])
    assert [e.masked for e in examples] == [False, False, True]
    assert all(e.group_size == 3 for e in examples)  # the failed one still counts in its group


def test_grpo_batch_mean_is_over_every_process(tiny_chat):
    _, tokenizer = load_model(tiny_chat)
    game, rounds = scripted_rounds()
    rewards = [s.reward for s in rounds[0].responses[0]]
    examples = GRPO(GRPOConfig(baseline="batch_mean")).examples(rounds, game, tokenizer, None, TwoProcesses(10.0, 5))
    mean = (sum(rewards) + 50.0) / 8
    assert [e.advantage for e in examples] == pytest.approx([r - mean for r in rewards])


@pytest.mark.slow
def test_a_masked_rollout_counts_in_the_normaliser_but_is_not_trained(tiny_chat, tmp_path):
    from algorithms.training.distributed import Dist
    from algorithms.training.update import update

    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=grpo", "game.judging=pointwise"))
    game, rounds = scripted_rounds()
    examples = trainer.algorithm.examples(rounds, game, trainer.tokenizers)
    defender = trainer.players["defender"]
    seen = []
    real = trainer.algorithm.loss
    trainer.algorithm.loss = lambda player, batch: seen.extend(batch) or real(player, batch)  # type: ignore[method-assign]
    out = update(defender, trainer.optimizers["defender"], trainer.algorithm, examples, 8, Dist(), trainer._precision())
    assert out["examples"] == 2 and len(seen) == 2 and not any(e.masked for e in seen)
    # Σ weight·loss / Σ weight with Σ weight = 1 (one group of 3): the loss is the trained sum / 1
    with torch.no_grad():
        losses, _ = real(defender, examples)
    assert out["loss"] == pytest.approx(float(losses[:2].sum() / 3), rel=1e-4, abs=1e-6)


def test_the_reference_undetached_ratio_is_our_loss_with_half_the_kl_weight():
    """The reference's ratio keeps its gradient, doubling the policy-gradient term on unclipped
    tokens: its gradient with β = 0.1 is twice ours with β = 0.05 (the paper configs' value)."""
    torch.manual_seed(0)
    logp = (torch.randn(3, 5) - 1).requires_grad_()
    old, ref = logp.detach() + 0.1 * torch.randn(3, 5), logp.detach() + 0.2 * torch.randn(3, 5)
    advantages, mask = torch.tensor([1.0, -0.5, 2.0]), torch.ones(3, 5)
    ratio = torch.exp(logp - old)  # not detached, as the reference; all below the cap of 2
    assert float(ratio.detach().max()) < 2.0
    reference = (-torch.exp(logp - logp.detach()) * ratio * advantages[:, None] + 0.1 * k3_kl(logp, ref)).sum()
    (want,) = torch.autograd.grad(reference, logp)
    ours = grpo_token_loss(logp, old, ref, advantages, mask, kl_beta=0.05, tis_cap=2.0).sum()
    (have,) = torch.autograd.grad(ours, logp)
    torch.testing.assert_close(want, 2 * have)
    for name in ("qwen25_grpo", "llama31_grpo", "ablations/grpo_pairwise_onpolicy"):
        assert load_config(f"configs/paper/{name}.yaml").algorithm.kl_beta == 0.05


# ----------------------------------------------------------------------------- 14.8 each role's tokenizer


@pytest.mark.slow
def test_each_roles_examples_use_that_players_tokenizer(tiny_chat, tmp_path, monkeypatch):
    model, tokenizer = load_model(tiny_chat)
    tokenizer.chat_template = "ATTACKER TEMPLATE " + tokenizer.chat_template
    other = tmp_path / "attacker_model"
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    cfg = config(
        tiny_chat,
        tmp_path / "run",
        "algorithm.name=grpo",
        "game.judging=pointwise",
        "game.direct_fraction=0.0",
        "model.lora=false",
        f"roles.attacker.model={other}",
    )
    trainer = Trainer(cfg)
    assert "ATTACKER TEMPLATE" in trainer.players["attacker"].tokenizer.chat_template
    trained: dict[str, list] = {}
    real = trainer._update
    monkeypatch.setattr(
        trainer,
        "_update",
        lambda learner, roles, ex, s: trained.setdefault(learner.name, []).extend(ex) or real(learner, roles, ex, s),
    )
    trainer.train_step()
    attacker = [e for e in trained["attacker"] if e.role == "attacker"]
    assert attacker and all(
        trainer.players["attacker"].tokenizer.decode(e.prompt_ids).startswith("ATTACKER TEMPLATE") for e in attacker
    )
    defender = [e for e in trained["defender"] if e.role == "defender"]
    assert all("ATTACKER TEMPLATE" not in trainer.players["defender"].tokenizer.decode(e.prompt_ids) for e in defender)


# ----------------------------------------------------------------------------- 14.11 sequential baselines


@pytest.mark.slow
def test_a_frozen_player_samples_its_final_weights_not_its_stalled_ema(tiny_chat, tmp_path, monkeypatch):
    cfg = config(
        tiny_chat,
        tmp_path / "run",
        "train.schedule=alternate",
        "train.period=1",
    )
    trainer = Trainer(cfg)
    asked: list[tuple[int, str, str]] = []
    real = trainer.sampler.policy
    monkeypatch.setattr(
        trainer.sampler,
        "policy",
        lambda role, which, seed, **kw: asked.append((trainer.step, role, which)) or real(role, which, seed, **kw),
    )
    for _ in range(2):
        trainer.train_step()
    for step, role, which in asked:
        learns = role in trainer.trained_roles(step)
        assert which == ("ema" if learns else "learner"), (step, role, which)


@pytest.mark.slow
def test_each_players_schedule_spans_the_optimizer_steps_it_takes(tiny_chat, tmp_path):
    cfg = config(
        tiny_chat,
        tmp_path / "run",
        "train.schedule=alternate",
        "train.period=2",
        "run.steps=8",
        "optim.final_lr_scale=0.2",
    )
    trainer = Trainer(cfg)
    for name in ("attacker", "defender"):
        scale = trainer.optimizers[name].scheduler.lr_lambdas[0]
        # 4 training steps of the 8, one optimizer step per split: 8 optimizer steps each
        assert scale(0) == 1.0 and scale(8) == pytest.approx(0.2) and scale(4) == pytest.approx(0.6)
