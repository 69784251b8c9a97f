"""The checkpoint schema (checkpoints.CheckpointState), the role names and the weight-copy names,
each defined once: a checkpoint in the shape the trainer has always written still loads."""

from __future__ import annotations

import random
import typing

import pytest
import torch

import agents.roles
from advgame_env import roles, textarena_env
from advgame_env.env import ATTACKER as ATTACKER_AGENT
from advgame_env.env import DEFENDER as DEFENDER_AGENT
from algorithms.training.checkpoints import (
    STATE_KEYS,
    CheckpointError,
    checkpoint_dir,
    export_dir,
    learner_weights,
    load_checkpoint,
    restore_rng,
    rng_state,
    sft_stream_key,
    split_weight_key,
    weight_key,
)
from algorithms.training.copies import WHICH
from algorithms.training.seed_stream import SeedStream


def _old_state(step: int, learners: tuple[str, ...] = ("attacker", "defender")) -> dict:
    """A state.pt as Trainer.state() wrote it before the schema had a type: plain dicts, keys spelled out."""
    weights = {
        f"{name}/{which}": {"w": torch.full((2,), float(i))}
        for i, name in enumerate(learners)
        for which in ("learner", "ema")
    }
    return {
        "step": step,
        "weights": weights,
        "optimizers": {name: {"state": {}, "param_groups": []} for name in learners},
        "schedulers": {name: {"last_epoch": step} for name in learners},
        "data": {
            "harmful": {"epoch": 1, "position": 3},
            "benign": {"epoch": 0, "position": 2},
            "sft": {"epoch": 0, "position": 1},
        },
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
    }


def _write(run, state: dict) -> None:
    folder = checkpoint_dir(run, state["step"])
    folder.mkdir(parents=True)
    torch.save(state, folder / "state.pt")


def test_a_checkpoint_in_the_old_shape_loads_and_its_parts_are_found(tmp_path):
    old = _old_state(4)
    _write(tmp_path, old)
    state = load_checkpoint(checkpoint_dir(tmp_path, 4))
    assert tuple(state) == STATE_KEYS == ("step", "weights", "optimizers", "schedulers", "data", "rng")
    assert state["step"] == 4 and state["schedulers"] == old["schedulers"]
    assert [split_weight_key(k) for k in state["weights"]] == [
        ("attacker", "learner"),
        ("attacker", "ema"),
        ("defender", "learner"),
        ("defender", "ema"),
    ]
    learner, tensors = learner_weights(state, "defender", "ema")
    assert learner == "defender" and torch.equal(tensors["w"], torch.ones(2))
    stream = SeedStream(list(range(10)), shuffle_seed=5)
    stream.restore(state["data"][sft_stream_key("defender")])
    assert (stream.epoch, stream.position) == (0, 1)
    assert sft_stream_key("attacker") == "attacker_sft"


def test_the_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(7)
    torch.manual_seed(7)
    saved = _old_state(1) | {"rng": rng_state()}
    _write(tmp_path, saved)
    expected = (random.random(), torch.rand(1))
    random.seed(0)
    torch.manual_seed(0)
    restore_rng(load_checkpoint(checkpoint_dir(tmp_path, 1))["rng"])  # torch.load gives tuples back as lists
    assert (random.random(), torch.rand(1)) == expected


def test_a_self_play_checkpoint_gives_each_role_the_shared_policy(tmp_path):
    _write(tmp_path, _old_state(2, learners=("policy",)))
    state = load_checkpoint(checkpoint_dir(tmp_path, 2))
    assert learner_weights(state, "attacker", "learner")[0] == "policy"
    with pytest.raises(
        CheckpointError, match=r"no initial weights of the defender \(it has policy/ema, policy/learner\)"
    ):
        learner_weights(state, "defender", "initial")


@pytest.mark.parametrize("key", ["defender", "defender/best", "/ema"])
def test_a_foreign_weights_key_is_a_checkpoint_error_naming_the_folder(tmp_path, key):
    state = _old_state(3)
    state["weights"][key] = {}
    _write(tmp_path, state)
    with pytest.raises(CheckpointError, match=rf"step_0000003: state.pt: weights key '{key}' is not LEARNER/COPY"):
        load_checkpoint(checkpoint_dir(tmp_path, 3))


def test_the_folder_layout(tmp_path):
    assert checkpoint_dir(tmp_path, 12) == tmp_path / "checkpoints" / "step_0000012"
    assert export_dir(tmp_path, 12, "defender", "ema") == tmp_path / "eval" / "exports" / "step_12" / "defender_ema"
    assert weight_key("attacker", "learner") == "attacker/learner"


def test_the_role_names_are_the_games_everywhere():
    assert roles.ROLES == ("attacker", "defender")
    assert agents.roles.ROLES == roles.ROLES  # one vocabulary, advgame_types, for every package
    assert (ATTACKER_AGENT, DEFENDER_AGENT) == ("attacker_0", "defender_0")
    assert (textarena_env.ATTACKER, textarena_env.DEFENDER) == (0, 1)
    assert textarena_env.ROLES == {0: "Attacker", 1: "Defender"}


def test_the_configs_sampler_and_reference_are_weight_copies():
    from algorithms.training.algorithm import builtin_configs

    checked = 0
    for cls in builtin_configs():
        hints = typing.get_type_hints(cls)
        for knob in ("sampler", "reference"):
            if knob in hints:
                kind = hints[knob]  # Literal[...], or Literal[...] | None
                if typing.get_origin(kind) is not typing.Literal:
                    (kind,) = [a for a in typing.get_args(kind) if a is not type(None)]
                assert set(typing.get_args(kind)) <= set(WHICH)
                checked += 1
    assert checked >= 4  # preference (two classes of defaults) and GRPO have both
