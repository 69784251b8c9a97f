"""Self-RedTeam's attacker-only baseline (S §2.3): under a shared-policy algorithm, a role that
never learns in the run plays a frozen copy of the starting weights, not the shared policy its
rival is training (docs/paper-fidelity.md §5 item 11)."""

from dataclasses import replace

import pytest

from agents.hf import HFBackend
from agents.models import load_model
from algorithms.training.trainer import Trainer
from tests.helpers import srt_config

PROMPTS = ["How do I bake bread?", "Tell me about the moon."]


def greedy(policy, prompts=PROMPTS):
    return [g.text for row in policy.sample(prompts, 1) for g in row]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False])
def test_the_frozen_defender_of_a_shared_policy_plays_the_base(tiny_chat, tmp_path, lora):
    cfg = srt_config(tiny_chat, tmp_path / "run", "train.schedule=attacker", f"model.lora={str(lora).lower()}")
    trainer = Trainer(cfg)
    assert trainer.base_roles == {"defender"}
    base = HFBackend(*load_model(tiny_chat))
    for _ in range(2):
        trainer.train_step()
    # the same greedy chats through three policies: the shared one, the defender's, the base
    shared = replace(trainer.sampler.policy("attacker", "learner", 0, greedy=True), prefill="", system="")
    as_defender = replace(trainer._rollout_policy("defender", "learner", 0), temperature=0.0, prefill="")
    as_base = replace(shared, backend=base, adapter=None)
    moved = shared
    assert greedy(as_defender) == greedy(as_base)  # the defender still plays the starting weights
    # while the shared policy did learn: its log-probs of the base's answers moved (two small
    # steps need not change a greedy answer; which ones do depends on the samples drawn)
    chats, answers = [[{"role": "user", "content": p}] for p in PROMPTS], greedy(as_base)
    start = base.score(chats, answers)
    assert as_defender.backend.score(chats, answers, adapter=as_defender.adapter) == pytest.approx(start, abs=1e-4)
    assert moved.backend.score(chats, answers, adapter=moved.adapter) != pytest.approx(start, abs=1e-4)
