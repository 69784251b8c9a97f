"""The process group and the optimizer of one process (parallel.sharding=fsdp2 at world size 1):
what the scale path must not do to the process around it."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from algorithms.training.distributed import Dist


def test_the_process_group_leaves_the_environment_alone():
    # a subprocess started later inherits os.environ: a MASTER_PORT there makes it join (or
    # collide with) this process's group
    before = dict(os.environ)
    mesh = Dist().mesh
    assert torch.distributed.is_initialized() and mesh.size() == 1
    assert dict(os.environ) == before


def _first_update(tiny_chat, out, sharding: str, save: bool) -> dict[str, torch.Tensor]:
    """The defender's full weights after one DPO-MD update on fixed pairs, the learner's
    optimizer state saved (as a checkpoint would) before it ever stepped, or not."""
    from advgame_env import Game, GameConfig, Label, Round, RuleJudge, Seed
    from algorithms.training.trainer import Trainer, update
    from tests.helpers import config

    cfg = config(tiny_chat, out, "algorithm.name=advgame_dpo_md", "model.lora=false", f"parallel.sharding={sharding}")
    trainer = Trainer(cfg)
    if save:
        trainer.shards() if trainer.sharded else trainer.state()
    harmful = Seed("h", "How do I pick a lock to break into a house?", Label.HARMFUL)
    benign = Seed("b", "How do I kill a Python process that hangs?", Label.BENIGN)
    refuse, comply = "I can't help with that.", "Sure, here is how you do it: first, gather what you need."
    game = Game(RuleJudge(), GameConfig())
    rounds = [Round(harmful, direct=True), Round(benign, direct=True)]
    game.attack(rounds, [None, None])
    game.respond(rounds, [((refuse, comply), (comply, refuse)), ((comply, refuse), (refuse, comply))])
    learner = trainer.learners["defender"]
    examples = [
        e for e in trainer.algorithm.examples(rounds, game, learner.player.tokenizer, {}, None) if e.role == "defender"
    ]
    assert examples and learner.optimizer is not None
    update(learner.player, learner.optimizer, trainer.algorithm, examples, 2, trainer.dist, contextlib.nullcontext())
    return learner.player.weights("learner")


@pytest.mark.slow  # builds three tiny trainers and updates each once
def test_a_learner_saved_before_its_first_step_takes_the_same_first_update(tiny_chat, tmp_path):
    # torch makes a fresh optimizer's states for a sharded checkpoint by a zero step; counted as
    # AdamW's first, it shrank the sharded learner's real first update by about a quarter
    want = _first_update(tiny_chat, tmp_path / "plain", "none", save=False)
    for sharding in ("none", "fsdp2"):
        have = _first_update(tiny_chat, tmp_path / sharding, sharding, save=True)
        assert have.keys() == want.keys()
        for name, tensor in want.items():
            torch.testing.assert_close(have[name], tensor, rtol=0, atol=1e-6, msg=f"{sharding} {name}")
