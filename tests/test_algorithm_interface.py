"""One way to write an algorithm: its knobs, their defaults and ranges live in its config
dataclass only, the algorithm reads them as ``self.config``, and the config layer never imports
the training code that holds the algorithm classes."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from algorithms.algorithm_configs import BUILTIN, DPOConfig, GRPOConfig, SelfRedTeamConfig
from algorithms.config import AlgorithmConfig, Rule, load_config, positive, register_section
from algorithms.training.algorithm import Algorithm, build_algorithm, names, register
from algorithms.training.batches import Rollout
from algorithms.training.grpo import GRPO

ROOT = Path(__file__).parent.parent


def _knobs(section: type[AlgorithmConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(section)}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_a_built_in_algorithm_keeps_no_knob_of_its_own_and_reads_the_config_it_was_built_with(name):
    section = BUILTIN[name]()
    algorithm = build_algorithm(section, 512)
    assert algorithm.config is section
    knobs = _knobs(type(section))
    assert not knobs & vars(algorithm).keys()  # no copy made in __init__ that could drift
    below = type(algorithm).__mro__[: type(algorithm).__mro__.index(Algorithm)]
    assert not any(knobs & vars(owner).keys() for owner in below)  # no class default beside the config's
    for hook, fallback in (("sampler", "learner"), ("reference", "initial"), ("minibatches", 1), ("ema_decay", None)):
        assert getattr(algorithm, hook) == getattr(section, hook, fallback), hook


def test_the_drifted_class_defaults_are_gone_the_configs_values_are_the_ones_used():
    # the classes once said kl_beta 0.1 (GRPO) and minibatches 4 (Self-RedTeam); the configs, and
    # the paper notes (docs/paper-fidelity.md), 0.05 and 6
    grpo = build_algorithm(load_config(None, ["algorithm.name=grpo"]).algorithm, 512)
    srt = build_algorithm(load_config(None, ["algorithm.name=self_redteam"]).algorithm, 512)
    assert isinstance(grpo, GRPO) and grpo.config.kl_beta == 0.05 and srt.minibatches == 6
    assert GRPO(GRPOConfig()).config.kl_beta == 0.05  # built directly: the same defaults, from the same place


def test_register_refuses_a_class_that_sets_one_of_its_knobs_itself():
    with pytest.raises(TypeError, match=r"Drifted sets kl_beta itself.*self\.config\.kl_beta"):

        @register("test_drifted_grpo")
        class Drifted(GRPO):
            kl_beta = 0.1

    with pytest.raises(TypeError, match=r"sets minibatches itself"):

        @register("test_drifted_srt")
        class Own(Algorithm[Rollout]):
            config_class = SelfRedTeamConfig
            minibatches = 4

    assert "test_drifted_grpo" not in names() and "test_drifted_srt" not in names()


def test_register_refuses_a_config_the_class_does_not_read_and_the_class_refuses_another_section():
    with pytest.raises(TypeError, match=r"DPOConfig is not a GRPOConfig"):
        register("test_wrong_section", config=DPOConfig)(GRPO)
    with pytest.raises(TypeError, match=r"GRPO reads a GRPOConfig section, got DPOConfig"):
        GRPO(DPOConfig())


def test_ranges_are_declared_one_way_a_rules_table_is_refused():
    @dataclass
    class OldStyle(AlgorithmConfig):
        rules: ClassVar[dict[str, Rule]] = {"beta": positive()}
        name: str = "test_old_style"
        beta: float = 0.1

    with pytest.raises(TypeError, match=r"rules table; declare each knob's range on its field"):
        register_section("test_old_style", OldStyle)


def test_reading_a_knob_the_section_does_not_have_is_an_error_not_none():
    section = load_config(None, ["algorithm.name=self_redteam"]).algorithm
    for knob in ("kl_beta", "beta", "tis_cap", "minibatchs"):  # other algorithms' knobs, and a typo
        with pytest.raises(AttributeError, match=knob):
            getattr(section, knob)
    assert isinstance(section, SelfRedTeamConfig) and section.minibatches == 6


def _imported(path: Path) -> set[str]:
    """Every module an import statement in the file names, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", ["config.py", "algorithm_configs.py"])
def test_the_config_layer_imports_nothing_above_it(module):
    ours = {m for m in _imported(ROOT / "algorithms" / module) if m.startswith("algorithms")}
    assert ours <= {"algorithms.config", "algorithms.algorithm_configs", "algorithms.recipes"}, ours
