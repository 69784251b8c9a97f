"""SPIRAL's role-conditioned advantage estimation and the spiral_rae algorithm: baselines move
as specified, per role, and are state that survives a checkpoint and a resume."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import pytest
import torch

from algorithms.config import load_config
from algorithms.training.algorithm import build_algorithm
from algorithms.training.checkpoints import checkpoints, load_checkpoint
from algorithms.training.losses import role_conditioned_advantages
from algorithms.training.spiral_rae import SpiralRAE, SpiralRAEConfig
from tests.helpers import SHORT_ROUNDS, tiny_run

# ----------------------------------------------------------------------------- the maths


def test_a_first_batch_starts_each_baseline_at_its_mean():
    rewards = [2.0, 4.0, 10.0, 6.0]
    roles = ["attacker", "attacker", "defender", "defender"]
    advantages, baselines = role_conditioned_advantages(rewards, roles, {}, alpha=0.9)
    assert advantages == pytest.approx([-1.0, 1.0, 2.0, -2.0])  # r − batch mean of its role
    assert baselines == pytest.approx({"attacker": 3.0, "defender": 8.0})


def test_baselines_move_by_alpha_per_role_and_advantages_use_the_one_before():
    baselines = {"attacker": 3.0, "defender": 8.0}
    advantages, after = role_conditioned_advantages(
        [5.0, 7.0, 0.0], ["attacker", "attacker", "defender"], baselines, 0.5
    )
    # against the baselines before the batch: 5 − 3, 7 − 3, 0 − 8
    assert advantages == pytest.approx([2.0, 4.0, -8.0])
    # b ← 0.5·b + 0.5·mean: attacker 0.5·3 + 0.5·6 = 4.5, defender 0.5·8 + 0.5·0 = 4
    assert after == pytest.approx({"attacker": 4.5, "defender": 4.0})
    assert baselines == {"attacker": 3.0, "defender": 8.0}  # the input is not changed


def test_a_role_without_samples_keeps_its_baseline_and_the_default_decay_is_spirals():
    advantages, after = role_conditioned_advantages([1.0], ["defender"], {"attacker": -0.5, "defender": 0.0})
    assert advantages == [1.0]
    assert after == pytest.approx({"attacker": -0.5, "defender": 0.05})  # 0.95·0 + 0.05·1


def test_means_over_every_process_replace_the_local_ones():
    # this process holds rewards 1 and 3 (mean 2), but the global batch's mean is 5
    advantages, after = role_conditioned_advantages(
        [1.0, 3.0], ["attacker", "attacker"], {"attacker": 4.0}, 0.5, means={"attacker": 5.0}
    )
    assert advantages == pytest.approx([-3.0, -1.0])
    assert after == pytest.approx({"attacker": 4.5})


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\)"):
        role_conditioned_advantages([1.0], ["attacker"], {}, alpha=1.0)
    with pytest.raises(ValueError, match="2 rewards but 1 roles"):
        role_conditioned_advantages([1.0, 2.0], ["attacker"], {})


def test_the_baselines_are_state_that_round_trips_through_a_checkpoint_file():
    algorithm = SpiralRAE(SpiralRAEConfig())
    algorithm.baselines = {"harmful/attacker": 1.25, "benign/defender": -0.5}
    buffer = io.BytesIO()
    torch.save({"algorithm": algorithm.state_dict()}, buffer)
    buffer.seek(0)
    fresh = SpiralRAE(SpiralRAEConfig())
    fresh.load_state_dict(torch.load(buffer, weights_only=True)["algorithm"])
    assert fresh.baselines == algorithm.baselines
    assert fresh.keys() == ["harmful/attacker", "harmful/defender", "benign/attacker", "benign/defender"]
    assert SpiralRAE(SpiralRAEConfig(per_label=False)).keys() == ["attacker", "defender"]


def test_the_registry_builds_it_by_name_with_its_paper_defaults():
    cfg = load_config(None, ["algorithm.name=spiral_rae"])
    algorithm = build_algorithm(cfg.algorithm, 1024)
    assert isinstance(algorithm, SpiralRAE) and algorithm.shares_policy and algorithm.mix_splits
    assert (algorithm.config.alpha, algorithm.config.kl_beta) == (0.95, 0.0)
    assert algorithm.copies() == set()  # no KL term: no reference copy is kept
    with_kl = build_algorithm(load_config(None, ["algorithm.name=spiral_rae", "algorithm.kl_beta=0.01"]).algorithm, 1)
    assert with_kl.copies() == {"initial"}


# ----------------------------------------------------------------------------- training


def _config(model: Path, out: Path, *overrides: str):
    return tiny_run(model, out, "algorithm.name=spiral_rae", "run.checkpoint_every=1", *SHORT_ROUNDS, *overrides)


@pytest.mark.slow
def test_two_steps_train_and_the_baselines_survive_a_resume(tiny_chat, tmp_path):
    from algorithms.training.trainer import Trainer

    whole = tmp_path / "whole"
    trainer = Trainer(_config(tiny_chat, whole))
    first = trainer.train_step()
    assert first["train/policy_examples"] > 0 and math.isfinite(first["train/policy_loss"])
    trainer.save()
    second = trainer.train_step()
    assert math.isfinite(second["train/policy_loss"])
    trainer.save()
    saved = [load_checkpoint(p)["algorithm"]["baselines"] for p in checkpoints(whole)]
    assert saved[0] and set(saved[0]) <= set(trainer.algorithm.keys())
    assert saved[1] == pytest.approx(trainer.algorithm.baselines)
    moved = [k for k in saved[0] if k in saved[1] and saved[1][k] != saved[0][k]]
    assert moved, "a second step of samples moves the baselines it has samples of"

    # resume from the step-1 checkpoint: the baselines come back, and step 2 ends where it did
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_0000002")
    again = Trainer(_config(tiny_chat, resumed), resume=True)
    assert again.step == 1 and again.algorithm.baselines == pytest.approx(saved[0])
    again.train_step()
    assert again.algorithm.baselines == pytest.approx(saved[1])
