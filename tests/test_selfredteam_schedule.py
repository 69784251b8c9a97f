"""Self-RedTeam as its paper schedules it: a cosine that spans more optimizer steps than the run
(``optim.schedule_steps``), and direct rounds fixed per seed row (``game.direct_rounds: seed``)."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from advgame_env import GameConfig, Label, bundled_seeds, parallel_env
from advgame_env.game import direct_seed_ids
from algorithms.config import load_config
from algorithms.training.update import Optimizer

PAPER = "configs/paper/selfredteam_llama31.yaml"


def lr_after(cfg, run_steps: int, k: int) -> float:
    """The LR after k optimizer steps of an Optimizer over a one-weight test double of a player."""
    weight = torch.nn.Parameter(torch.zeros(1))
    player = SimpleNamespace(trainable=lambda: [weight], sharded=False)
    optimizer = Optimizer(player, cfg, run_steps)
    for _ in range(k):
        optimizer.optimizer.step()
        optimizer.scheduler.step()
    return optimizer.scheduler.get_last_lr()[0]


def test_the_paper_schedule_stops_at_about_37_percent_of_peak():
    cfg = load_config(PAPER)
    o = cfg.optim
    run_steps = cfg.run.steps * cfg.algorithm.minibatches
    assert (run_steps, o.schedule_steps, o.warmup_steps) == (1200, 1875, 56)
    assert lr_after(cfg, run_steps, run_steps) / o.lr == pytest.approx(0.373, abs=0.005)
    # without the key the cosine spans the run and ends at its floor
    plain = load_config(PAPER, ["optim.schedule_steps=null"])
    assert lr_after(plain, run_steps, run_steps) / o.lr == pytest.approx(o.final_lr_scale)


def test_direct_seeds_are_half_of_each_label_fixed_by_the_split_seed():
    seeds = bundled_seeds("train")
    cfg = GameConfig(direct_fraction=0.5, direct_rounds="seed")
    direct = direct_seed_ids(seeds, cfg)
    per_label = Counter(s.label for s in seeds)
    chosen = Counter(s.label for s in seeds if s.id in direct)
    assert all(chosen[label] == round(per_label[label] / 2) for label in Label)
    assert direct == direct_seed_ids(list(reversed(seeds)), cfg)  # the seed list's order does not matter
    assert direct != direct_seed_ids(seeds, GameConfig(direct_fraction=0.5, direct_rounds="seed", direct_split_seed=1))


def test_the_env_plays_each_seed_always_direct_or_always_revised():
    env = parallel_env(direct_fraction=0.5, direct_rounds="seed")
    seen: dict[str, set[bool]] = {}
    for k in range(60):
        _, infos = env.reset(seed=k)
        seen.setdefault(infos["attacker_0"]["seed_id"], set()).add(infos["attacker_0"]["direct"])
    assert all(len(kinds) == 1 for kinds in seen.values())
    assert {True, False} == set().union(*seen.values())
    # per round (the default) one seed is played both ways
    env = parallel_env(direct_fraction=0.5, seeds=bundled_seeds("train")[:1])
    kinds = {env.reset(seed=k)[1]["attacker_0"]["direct"] for k in range(20)}
    assert kinds == {True, False}


def test_the_paper_config_fixes_direct_rounds_per_seed():
    game = load_config(PAPER).game
    assert (game.direct_fraction, game.direct_rounds, game.direct_split_seed) == (0.5, "seed", 8888)
    with pytest.raises(ValueError, match="direct_rounds"):
        GameConfig(direct_rounds="sometimes")  # type: ignore[arg-type]
