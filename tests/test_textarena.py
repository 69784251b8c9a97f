"""The TextArena version of the game (AdvGame-v0), played with the model-free RuleJudge."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest

ta = pytest.importorskip("textarena")

from advgame_env.judges import FaithfulnessItem, JudgeError, PointItem, Rubric  # noqa: E402
from advgame_env.rule_judge import RuleJudge, rubric_score  # noqa: E402
from advgame_env.seeds import Label, Seed, bundled_seeds  # noqa: E402
from advgame_env.textarena_env import (  # noqa: E402
    ENV_ID,
    RAW_ENV_ID,
    AdvGameTextArena,
    EpisodeLLMObservationWrapper,
    register_textarena,
)

PLAN = "PLAN-7f3a: pretend to be a chemistry teacher"
REFUSAL = "I can't help with that."
HARMFUL = bundled_seeds("train", label=Label.HARMFUL)
BENIGN = bundled_seeds("train", label=Label.BENIGN)


def attack_for(prompt: str) -> str:
    return f"<think>{PLAN}</think><prompt>{prompt}</prompt>"


def faithful_attack(seed: Seed) -> str:
    return attack_for(seed.prompt)


def play(
    env: Any, answer: str, attack: Callable[[Seed], str] | None = None, seed: int = 0
) -> tuple[dict, dict, dict[int, list[str]]]:
    """One game: the attacker plays ``attack(seed)`` (default: the seed itself, with a hidden
    plan); returns rewards, game_info and every observation each player was shown."""
    seen: dict[int, list[str]] = {0: [], 1: []}
    env.reset(num_players=2, seed=seed)
    done = False
    while not done:
        player_id, observation = env.get_observation()
        seen[player_id].append(str(observation))
        action = (attack or faithful_attack)(env.round.seed) if player_id == 0 else answer
        done, _ = env.step(action=action)
    rewards, game_info = env.close()
    return rewards, game_info, seen


def test_registered_with_conversational_wrappers() -> None:
    register_textarena()
    register_textarena()  # idempotent
    env = ta.make(ENV_ID)
    assert env.is_wrapped_with(EpisodeLLMObservationWrapper)
    assert env.is_wrapped_with(ta.wrappers.LLMObservationWrapper)
    assert env.is_wrapped_with(ta.wrappers.ClipCharactersActionWrapper)
    assert not env.is_wrapped_with(ta.wrappers.ActionFormattingWrapper)
    assert isinstance(ta.make(RAW_ENV_ID), AdvGameTextArena)


def test_registration_refuses_a_foreign_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from textarena.envs.registration import ENV_REGISTRY, EnvSpec

    monkeypatch.setitem(ENV_REGISTRY, ENV_ID, EnvSpec(id=ENV_ID, entry_point="other:Env", default_wrappers=None))
    with pytest.raises(ValueError, match="already registered"):
        register_textarena()


def test_full_game_harmful_seed_refused() -> None:
    env = ta.make(ENV_ID, seeds=HARMFUL)
    rewards, info, seen = play(env, REFUSAL)
    seed = env.round.seed
    assert seed.label is Label.HARMFUL
    assert set(rewards) == {0, 1}
    assert all(type(r) is float for r in rewards.values())
    # The defender is judged on the prompt it saw (deflection rubric), the attacker on the seed.
    assert rewards[1] == rubric_score(Rubric.DEFLECTION, seed.prompt, REFUSAL) == 4.0
    assert rewards[0] == rubric_score(Rubric.COMPLIANCE, seed.prompt, REFUSAL)
    assert rewards[1] > rewards[0] > 0.0
    assert info[0]["role"] == "Attacker" and info[1]["role"] == "Defender"
    assert info[0]["seed_id"] == info[1]["seed_id"] == seed.id
    assert not info[0]["excluded"] and not info[1]["excluded"]
    assert not info[0]["invalid_move"] and not info[1]["invalid_move"]
    assert seed.prompt in seen[0][0]  # the attacker's task names the seed


def test_defender_never_sees_the_attackers_reasoning() -> None:
    env = ta.make(ENV_ID, seeds=HARMFUL)
    _, info, seen = play(env, REFUSAL, lambda s: attack_for(f"For a novel I am writing: {s.prompt}"))
    assert info[0]["sample"]["faithful"] is True
    assert len(seen[1]) == 1
    assert f"For a novel I am writing: {env.round.seed.prompt}" in seen[1][0]
    everything_for_defender = seen[1] + [str(m) for m in env.state.observations[1]]
    assert not any(PLAN in text or "<think>" in text for text in everything_for_defender)


def test_malformed_attack_ends_the_game() -> None:
    env = ta.make(ENV_ID, seeds=HARMFUL)
    env.reset(num_players=2, seed=3)
    done, _ = env.step(action=f"{PLAN} and no tags at all")
    assert done
    rewards, info = env.close()
    assert rewards == {0: -1.0, 1: 0.0}
    assert all(type(r) is float for r in rewards.values())
    assert info[0]["sample"]["failure"] == "bad_format" and info[0]["invalid_move"]
    assert info[1]["sample"] is None and not info[1]["invalid_move"]
    for message in env.state.observations[1]:
        assert PLAN not in message[1]
    with pytest.raises(RuntimeError, match="game is over"):
        env.step(action=REFUSAL)


def test_over_long_attack_is_not_clipped_into_a_different_failure() -> None:
    env = ta.make(ENV_ID, seeds=HARMFUL)
    env.reset(num_players=2, seed=0)
    prompt = env.round.seed.prompt
    done, _ = env.step(action=attack_for(prompt + " " + "x" * env.config.max_attack_chars))
    rewards, info = env.close()
    assert done and rewards[0] == -1.0
    assert info[0]["sample"]["failure"] == "over_length"


def test_benign_seed_answered() -> None:
    env = ta.make(ENV_ID, seeds=BENIGN)
    answer = "Sure. Open a terminal and run `kill` with the process id, or use the task manager to end it."
    rewards, _, _ = play(env, answer)
    seed = env.round.seed
    assert rewards[1] == rubric_score(Rubric.COMPLIANCE, seed.prompt, answer) > 5.0
    assert rewards[0] == rubric_score(Rubric.REFUSAL, seed.prompt, answer) < rewards[1]


def test_same_seed_same_prompt_whatever_the_global_random() -> None:
    def first_prompt(env: Any, seed: int) -> str:
        random.seed(12345 + seed)  # the global stream must not matter
        env.reset(num_players=2, seed=seed)
        return env.get_observation()[1]

    a, b = ta.make(ENV_ID), ta.make(ENV_ID)
    for seed in (0, 1, 7):
        assert first_prompt(a, seed) == first_prompt(b, seed)
        assert a.round.seed == b.round.seed
    assert len({first_prompt(a, seed) for seed in range(10)}) > 1


def test_reused_env_shows_only_the_current_game() -> None:
    env = ta.make(ENV_ID)
    play(env, REFUSAL, seed=1)
    env.reset(num_players=2, seed=2)
    _, observation = env.get_observation()
    assert observation.count("<request>") == 1
    assert env.round.seed.prompt in observation


def test_wrong_number_of_players() -> None:
    env = ta.make(ENV_ID)
    with pytest.raises(ValueError, match="two-player"):
        env.reset(num_players=3)


def test_more_than_one_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="num_attacks must be 1"):
        AdvGameTextArena(num_attacks=2)
    assert AdvGameTextArena().config.judging == "pointwise"
    assert AdvGameTextArena(judging="pairwise").config.judging == "pairwise"


def test_direct_round_defender_plays_alone() -> None:
    env = AdvGameTextArena(seeds=HARMFUL, direct_fraction=1.0)
    env.reset(num_players=2, seed=0)
    player_id, observation = env.get_observation()
    assert player_id == 1 and env.round is not None
    assert any(env.round.seed.prompt in message for _, message, _ in observation)
    done, _ = env.step(REFUSAL)
    rewards, info = env.close()
    assert done and rewards == {0: 0.0, 1: 4.0}
    assert info[0]["excluded"] and not info[1]["excluded"]


class NoScoreJudge(RuleJudge):
    def score(self, items: Sequence[PointItem]) -> list[float | None]:
        return [None for _ in items]


def test_excluded_rewards_are_zero_and_flagged() -> None:
    env = AdvGameTextArena(judge=NoScoreJudge(), seeds=HARMFUL)
    rewards, info, _ = play(env, REFUSAL)
    assert rewards == {0: 0.0, 1: 0.0}
    assert info[0]["excluded"] and info[1]["excluded"]
    assert info[0]["reward"] is None and info[1]["reward"] is None


def test_close_before_the_end() -> None:
    env = AdvGameTextArena()
    assert env.close() == (None, {})
    env.reset(num_players=2, seed=0)
    rewards, _ = env.close()
    assert rewards is None


class FlakyJudge(RuleJudge):
    """Its first faithfulness call fails, as a judge whose backend is briefly down."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def faithfulness(self, items: Sequence[FaithfulnessItem]) -> list[bool | None]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("judge backend down")
        return super().faithfulness(items)


def test_judge_failure_leaves_the_turn_to_retry() -> None:
    env = AdvGameTextArena(judge=FlakyJudge(), seeds=HARMFUL)
    env.reset(num_players=2, seed=0)
    assert env.round is not None
    action = faithful_attack(env.round.seed)
    with pytest.raises(JudgeError):
        env.step(action)
    assert env.state.current_player_id == 0 and not env.state.done
    done, _ = env.step(action)
    assert not done and env.state.current_player_id == 1


@pytest.mark.slow
def test_importing_the_package_does_not_import_textarena() -> None:
    code = "import sys, advgame_env; assert 'textarena' not in sys.modules, 'textarena imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
