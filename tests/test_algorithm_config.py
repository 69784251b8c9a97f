"""The algorithm section of a run config: each algorithm reads its own knobs, with its paper's
defaults, and a knob it does not read is an error (never silently ignored or overridden)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from algorithms.config import ConfigError, _number, load_config, save_config
from algorithms.training.algorithm import build_algorithm
from algorithms.training.grpo import GRPO
from algorithms.training.preference import PreferenceOptimization
from algorithms.training.self_redteam import SelfRedTeam

PAPER = sorted(p for p in (Path(__file__).parent.parent / "configs").rglob("*.yaml") if p.parent.name != "accelerate")


def algorithm(*overrides: str):
    cfg = load_config(None, list(overrides))
    return cfg.algorithm, build_algorithm(cfg.algorithm, 512)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["algorithm.name=self_redteam", "algorithm.sampler=ema"], "sampler"),  # it built a learner sampler
        (["algorithm.name=grpo", "algorithm.minibatches=8"], "minibatches"),  # it dropped the 8
        (["algorithm.name=self_redteam", "algorithm.kl_beta=0.1"], "kl_beta"),  # GRPO's KL, not the reward's
        (["algorithm.name=grpo", "algorithm.beta=0.2"], "beta"),
        (["algorithm.name=advgame_dpo_md", "algorithm.baseline=group_mean"], "baseline"),
        (["algorithm.name=dpo", "algorithm.ema_decay=0.9"], "ema_decay"),  # learner samples, initial anchors
        (["algorithm.sft_coef=2.0"], "sft_coef"),  # no SFT file: no SFT term
        (["algorithm.name=grpo", "algorithm.tis=false", "algorithm.tis_cap=3"], "tis_cap"),
        (["algorithm.name=dpo", "algorithm.train=alternate"], "train"),  # the schedule is train.schedule now
        (["algorithm.name=dpo", "algorithm.alternate_every=3"], "alternate_every"),
    ],
)
def test_a_knob_the_algorithm_does_not_read_is_an_error_naming_knob_and_algorithm(overrides, key):
    name = overrides[0].partition("=")[2] if overrides[0].startswith("algorithm.name") else "advgame_dpo_md"
    with pytest.raises(ConfigError, match=rf"algorithm\.{key} is not read by algorithm {name}"):
        load_config(None, overrides)


def test_each_algorithm_gets_its_papers_defaults():
    cfg, srt = algorithm("algorithm.name=self_redteam")
    assert isinstance(srt, SelfRedTeam) and (srt.config.reward_kl_beta, srt.config.clip, srt.minibatches) == (
        0.01,
        0.2,
        6,
    )
    for knob in ("kl_beta", "sampler"):  # GRPO's KL and the sampler are not its knobs: asking is an error
        with pytest.raises(AttributeError, match=knob):
            getattr(cfg, knob)
    cfg, grpo = algorithm("algorithm.name=grpo")
    assert isinstance(grpo, GRPO) and (grpo.config.kl_beta, grpo.config.tis_cap, grpo.config.baseline) == (
        0.05,
        2.0,
        "batch_mean",
    )
    assert (grpo.sampler, grpo.reference) == ("learner", "initial") and not hasattr(cfg, "beta")
    _, md = algorithm("algorithm.name=advgame_ipo_md")
    assert isinstance(md, PreferenceOptimization) and (md.sampler, md.reference, md.config.beta) == ("ema", "ema", 0.1)
    full = load_config(None, ["algorithm.name=grpo", "train.schedule=alternate"])
    assert (full.algorithm.kl_beta, full.train.schedule, full.train.period) == (0.05, "alternate", 10)


def test_set_knobs_are_kept_and_off_policy_grpo_turns_the_ratio_off():
    _, srt = algorithm("algorithm.name=self_redteam", "algorithm.minibatches=8", "algorithm.reward_kl_beta=0.1")
    assert (srt.minibatches, srt.config.reward_kl_beta, srt.config.weighting) == (8, 0.1, "token")
    _, grpo = algorithm("algorithm.name=grpo", "algorithm.minibatches=null", "algorithm.sampler=ema")
    assert grpo.sampler == "ema" and grpo.config.tis_cap is None  # the reference forbids TIS off-policy
    _, grpo = algorithm("algorithm.name=grpo", "algorithm.tis=false")
    assert grpo.config.tis_cap is None
    cfg, _ = algorithm("roles.defender.sft_data=x.jsonl")
    assert (cfg.sft_coef, cfg.sft_batch_size) == (1.0, 4)


def test_self_redteam_weights_tokens_as_the_reference_run_or_sequences_on_request():
    from algorithms.training.self_redteam import PPORollout as Rollout

    short, long = Rollout("defender", [1], [5], 1.0, (0,)), Rollout("defender", [1], [5, 6, 7], 1.0, (1,))
    _, tokens = algorithm("algorithm.name=self_redteam")
    _, sequences = algorithm("algorithm.name=self_redteam", "algorithm.weighting=sequence")
    # losses are token means per sequence: weights of 1 and 3 make Σ w·loss / Σ w the mean over all 4 tokens
    assert [tokens.weight(r) for r in (short, long)] == [1.0, 3.0]
    assert [sequences.weight(r) for r in (short, long)] == [1.0, 1.0]
    with pytest.raises(ConfigError, match="weighting is not read by algorithm grpo"):
        load_config(None, ["algorithm.name=grpo", "algorithm.weighting=token"])


def test_an_ablation_that_switches_algorithm_does_not_inherit_the_base_algorithms_knobs(tmp_path):
    (tmp_path / "dpo.yaml").write_text("algorithm:\n  name: advgame_dpo_md\n  beta: 0.3\nrun:\n  steps: 7\n")
    (tmp_path / "grpo.yaml").write_text("base: dpo.yaml\nalgorithm:\n  name: grpo\n")
    (tmp_path / "ipo.yaml").write_text("base: dpo.yaml\nalgorithm:\n  name: advgame_dpo_md\n  ema_decay: 0.9\n")
    grpo = load_config(tmp_path / "grpo.yaml")
    assert not hasattr(grpo.algorithm, "beta") and grpo.run.steps == 7
    assert load_config(tmp_path / "ipo.yaml").algorithm.beta == 0.3  # same algorithm: merged
    with pytest.raises(ConfigError, match=r"algorithm\.beta is not read by algorithm grpo"):
        load_config(tmp_path / "dpo.yaml", ["algorithm.name=grpo"])  # an override on top is no new file


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _as_loaded(value: object) -> object:
    """A YAML value as the config holds it: 1e-6 a number (PyYAML reads it as text), lists tuples."""
    value = _number(value)
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize("path", PAPER, ids=[str(p.relative_to(p.parents[1])) for p in PAPER])
def test_every_shipped_config_carries_its_values_and_round_trips_with_its_resolved_knobs(path, tmp_path):
    cfg = load_config(path)
    own = yaml.safe_load(path.read_text()) or {}
    own.pop("base", None)
    for key, want in _leaves(own):  # every value the file sets itself is the value loaded
        got = cfg
        for part in key.split("."):
            got = getattr(got, part)
        if isinstance(got, str) and Path(got).is_absolute() and isinstance(want, str):
            assert Path(got) == (path.parent / want).resolve(), key  # a data file found beside the config
        else:
            assert got == _as_loaded(want), f"{key}: loaded {got!r}, the file says {want!r}"
    build_algorithm(cfg.algorithm, 512)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "spelling"),
    [
        (
            ["algorithm.name=sequential"],
            "algorithm.name: advgame_dpo_md and train.schedule: alternate and train.period: 10",
        ),
        (
            ["algorithm.name=sequential", "algorithm.base=grpo", "algorithm.train=defender"],
            "algorithm.name: grpo and train.schedule: defender",
        ),
        (["algorithm.alternate_every=3"], "write train.period"),
        (["algorithm.base=dpo"], "write algorithm.name"),
    ],
)
def test_the_old_sequential_spelling_is_an_error_that_gives_the_new_one(overrides, spelling):
    with pytest.raises(ConfigError, match=spelling):
        load_config(None, overrides)


def test_the_schedule_is_a_trainer_option_of_any_algorithm():
    cfg = load_config(None, ["algorithm.name=self_redteam", "train.schedule=defender"])
    assert (cfg.algorithm.name, cfg.train.schedule) == ("self_redteam", "defender")
    with pytest.raises(ConfigError, match=r"train\.period: 0 is not allowed"):
        load_config(None, ["train.schedule=alternate", "train.period=0"])
    with pytest.raises(ConfigError, match=r"config\.train\.schedule: 'sometimes' is not one of"):
        load_config(None, ["train.schedule=sometimes"])


def test_an_algorithm_section_is_its_algorithms_own_dataclass():
    from algorithms.training.grpo import GRPOConfig
    from algorithms.training.preference import DPOConfig

    assert isinstance(load_config(None, ["algorithm.name=grpo"]).algorithm, GRPOConfig)
    assert load_config(None, ["algorithm.name=dpo"]).algorithm == DPOConfig()
    with pytest.raises(ConfigError, match=r"algorithm\.minibatches is not read by algorithm dpo.*dpo reads: .*beta"):
        load_config(None, ["algorithm.name=dpo", "algorithm.minibatches=2"])
