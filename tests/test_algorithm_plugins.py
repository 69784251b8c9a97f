"""Algorithms from outside the package: the @register decorator, --plugin (a file or a module)
and the advgame.algorithms entry-point group; each trains 2 steps on the tiny model."""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from advgame_env.game import Game, Round
from algorithms.config import AlgorithmConfig, ConfigError, load_config, non_negative, ranged
from algorithms.training.algorithm import (
    Algorithm,
    Metrics,
    build_algorithm,
    load_plugin,
    names,
    policy_logprobs,
    register,
)
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.distributed import Dist
from algorithms.training.players import Player
from algorithms.training.runlog import read_metrics
from algorithms.training.trainer import Trainer
from tests.test_trainer import config

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "custom_algorithm.py"


# ----------------------------------------------------------------------------- an algorithm of the test's own


@dataclass
class ReinforceConfig(AlgorithmConfig):
    name: str = "test_reinforce"
    kl_coef: float = ranged(0.0, non_negative())  # no KL term: the reference is never run


@register("test_reinforce")
class Reinforce(Algorithm[Rollout]):
    """REINFORCE with each group's mean reward as baseline, on each sequence's summed log-prob."""

    config_class = ReinforceConfig
    config: ReinforceConfig
    metric_names = ("advantage",)

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str],
        dist: Dist,
    ) -> list[Rollout]:
        return rollouts(rounds, game, tokenizers, prefills=prefills)

    def loss(self, player: Player, chunk: Sequence[Rollout]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(r.prompt_ids, r.completion_ids) for r in chunk]
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        rewards = torch.tensor([r.reward for r in chunk])
        advantages = rewards - rewards.mean()
        return -(advantages * (logps * mask).sum(-1)), {"advantage": float(advantages.sum())}


def test_a_registered_algorithm_is_found_by_name_and_its_section_is_its_own_dataclass():
    assert "test_reinforce" in names() and "advgame_dpo_md" in names()
    cfg = load_config(None, ["algorithm.name=test_reinforce", "algorithm.kl_coef=0.5"])
    assert cfg.algorithm == ReinforceConfig(kl_coef=0.5)
    built = build_algorithm(cfg.algorithm, 512)
    assert isinstance(built, Reinforce) and built.config is cfg.algorithm and built.config.kl_coef == 0.5
    with pytest.raises(ConfigError, match=r"algorithm\.kl_coef: -1\.0 is not allowed; expected a number >= 0"):
        load_config(None, ["algorithm.name=test_reinforce", "algorithm.kl_coef=-1"])
    with pytest.raises(ConfigError, match=r"algorithm\.beta is not read by algorithm test_reinforce"):
        load_config(None, ["algorithm.name=test_reinforce", "algorithm.beta=0.1"])


def test_register_refuses_what_is_not_an_algorithm_and_a_taken_name():
    with pytest.raises(TypeError, match="not a subclass of"):
        register("not_an_algorithm")(dict)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="already taken"):

        @register("test_reinforce")
        class Other(Algorithm[Rollout]):
            pass


def test_an_unknown_name_lists_the_known_ones_and_how_to_add_one():
    with pytest.raises(ConfigError, match=r"'nope' is not one of 'advgame_dpo_md'.*--plugin"):
        load_config(None, ["algorithm.name=nope"])


# ----------------------------------------------------------------------------- --plugin


def test_the_example_plugin_loads_by_path_and_validates_its_section():
    load_plugin(str(EXAMPLE))
    cfg = load_config(None, ["algorithm.name=hinge", "algorithm.margin=0.5"])
    assert (cfg.algorithm.beta, cfg.algorithm.margin, cfg.algorithm.ema_decay) == (0.1, 0.5, None)
    with pytest.raises(ConfigError, match=r"algorithm\.margin: -1\.0 is not allowed; expected a number >= 0"):
        load_config(None, ["algorithm.name=hinge", "algorithm.margin=-1"])
    with pytest.raises(ConfigError, match=r"algorithm\.kl_beta is not read by algorithm hinge"):
        load_config(None, ["algorithm.name=hinge", "algorithm.kl_beta=0.1"])
    with pytest.raises(ConfigError, match=r"algorithm\.ema_decay is not read by algorithm hinge"):
        load_config(None, ["algorithm.name=hinge", "algorithm.ema_decay=0.9"])


def test_a_plugin_that_is_neither_a_file_nor_a_module_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_plugin(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="no module of that name"):
        load_plugin("no_such_advgame_plugin_module")


def test_a_plugin_loads_by_module_name(tmp_path, monkeypatch):
    (tmp_path / "advgame_test_module_plugin.py").write_text(
        textwrap.dedent(
            """
            from algorithms.training.algorithm import register
            from algorithms.algorithm_configs import DPOConfig
            from algorithms.training.preference import PreferenceOptimization

            register("test_module_dpo", config=DPOConfig)(PreferenceOptimization)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin("advgame_test_module_plugin")
    assert "test_module_dpo" in names()


# ----------------------------------------------------------------------------- entry points


def fake_distribution(folder: Path, name: str) -> None:
    """A package's installed metadata (a .dist-info with an entry point) and its module, on a
    folder that is put on sys.path: what ``pip install`` leaves behind, with nothing installed."""
    (folder / f"advgame_ep_{name}.py").write_text(
        textwrap.dedent(
            f"""
            from dataclasses import dataclass
            from algorithms.algorithm_configs import DPOConfig
            from algorithms.training.preference import PreferenceOptimization

            @dataclass
            class EntryConfig(DPOConfig):
                name: str = "{name}"

            class EntryDPO(PreferenceOptimization):
                config_class = EntryConfig
            """
        )
    )
    info = folder / f"advgame_ep_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: advgame-ep-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[advgame.algorithms]\n{name} = advgame_ep_{name}:EntryDPO\n")


def test_an_entry_point_makes_an_algorithm_usable_by_name(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "ep_dpo_fast")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, ["algorithm.name=ep_dpo_fast", "algorithm.beta=0.2"])
    assert type(cfg.algorithm).__name__ == "EntryConfig" and cfg.algorithm.beta == 0.2
    assert type(build_algorithm(cfg.algorithm, 512)).__name__ == "EntryDPO"


# ----------------------------------------------------------------------------- training, 2 steps each


def _trains(run: Path, learners: Sequence[str] = ("attacker", "defender")) -> None:
    metrics = read_metrics(run)
    losses = [m[f"train/{name}_loss"] for m in metrics for name in learners if f"train/{name}_loss" in m]
    assert len([m for m in metrics if "game/rounds" in m]) == 2 and losses and all(map(math.isfinite, losses))
    assert all((run / "final" / name).is_dir() for name in learners)


@pytest.mark.slow
def test_an_algorithm_registered_in_this_file_trains(tiny_chat, tmp_path):
    Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=test_reinforce")).train()
    _trains(tmp_path / "run")


@pytest.mark.slow
def test_the_example_plugin_trains_from_the_command_line(tiny_chat, tmp_path):
    from algorithms.cli.main import main

    run = tmp_path / "run"
    overrides = [f"model.name={tiny_chat}", f"run.out_dir={run}", "run.steps=2", "run.validate_every=0"]
    overrides += ["run.progress=false", "run.tensorboard=false", "algorithm.name=hinge"]
    code = main(["train", "--plugin", str(EXAMPLE), "--config", str(ROOT / "configs" / "cpu_smoke.yaml"), *overrides])
    assert code == 0
    _trains(run)
    assert any("train/defender_active" in m for m in read_metrics(run))


@pytest.mark.slow
def test_an_entry_point_algorithm_trains_by_name(tiny_chat, tmp_path, monkeypatch):
    fake_distribution(tmp_path, "ep_dpo_slow")
    monkeypatch.syspath_prepend(str(tmp_path))
    Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=ep_dpo_slow")).train()
    _trains(tmp_path / "run")
    assert "advgame_ep_ep_dpo_slow" in sys.modules
