"""The trainer's typed seams without a model: the step's metrics record and its flat keys, and
the schedule (``train.schedule``) that decides which roles learn."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from algorithms.config import load_config
from algorithms.training.metrics import StepMetrics
from algorithms.training.trainer import Trainer


def test_step_metrics_flatten_to_the_keys_metrics_jsonl_has_always_had():
    metrics = StepMetrics(
        game={"harmful": {"rounds": 2.0, "defender_reward": 4.0}, "benign": {"rounds": 2.0, "defender_reward": 8.0}},
        train={
            "harmful": {"defender": {"loss": 1.0, "examples": 3.0}},
            "benign": {"defender": {"loss": 3.0, "examples": 5.0}, "attacker": {"loss": 2.0}},
        },
        seconds={"play": 1.5, "step": 2.0},
    )
    assert metrics.flat() == {
        "game_harmful/rounds": 2.0,
        "game_harmful/defender_reward": 4.0,
        "game_benign/rounds": 2.0,
        "game_benign/defender_reward": 8.0,
        "train_harmful/defender_loss": 1.0,
        "train_harmful/defender_examples": 3.0,
        "train_benign/defender_loss": 3.0,
        "train_benign/defender_examples": 5.0,
        "train_benign/attacker_loss": 2.0,
        "game/rounds": 2.0,  # means over the splits that have the figure
        "game/defender_reward": 6.0,
        "train/defender_loss": 2.0,
        "train/defender_examples": 8.0,  # example counts add up
        "train/attacker_loss": 2.0,
        "time/play_s": 1.5,
        "time/step_s": 2.0,
    }


def test_a_mixed_update_is_logged_under_train_without_a_split():
    flat = StepMetrics(train={None: {"policy": {"loss": 0.5}}}).flat()
    assert flat == {"train/policy_loss": 0.5}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], [["attacker", "defender"]] * 4),
        (["train.schedule=defender"], [["defender"]] * 4),
        (["train.schedule=attacker"], [["attacker"]] * 4),
        (["train.schedule=alternate", "train.period=2"], [["attacker"], ["attacker"], ["defender"], ["defender"]]),
        (["roles.attacker.train=false"], [["defender"]] * 4),
        (["algorithm.name=grpo", "train.schedule=alternate", "train.period=1"], [["attacker"], ["defender"]] * 2),
    ],
)
def test_the_schedule_decides_who_learns_for_any_algorithm(overrides, expected):
    trainer = SimpleNamespace(cfg=load_config(None, overrides))
    assert [Trainer.trained_roles(trainer, step) for step in range(4)] == expected  # type: ignore[arg-type]
