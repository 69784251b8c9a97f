"""From played rounds to training examples: preference pairs (DPO/IPO) and rollouts (GRPO).

A prompt is the player's observation as one user turn, rendered with the chat template
exactly as ``agents.policy.Policy`` sends it; a continuation is the sample's RAW text (the
attacker's hidden <think> included: the reasoning is part of the action being trained).
Prompt and continuation are tokenised separately, as they were at generation time.

The attacker's group is a round (its A rewrites of one seed); the defender's group is one
attack of a round (its D answers to one prompt). Direct rounds have no attacker samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from advgame_env.game import Game, Phase, Round, Sample
from advgame_env.parsing import Failure
from agents.hf import encode, render_chat

ATTACKER, DEFENDER = "attacker", "defender"


@dataclass
class PreferencePair:
    role: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_reward: float
    rejected_reward: float


@dataclass
class Rollout:
    role: str
    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float
    group: tuple[int, ...]  # (round,) for the attacker, (round, attack) for the defender


def attacker_prompt(game: Game, round_: Round) -> str:
    # The game shows observations only in the phase they are asked for; a played round is
    # past it, so ask about a shallow copy set back to that phase (same text, by the game's rules).
    return game.attacker_observation(replace(round_, phase=Phase.ATTACK))


def defender_prompts(game: Game, round_: Round) -> tuple[str, ...]:
    return game.defender_observation(replace(round_, phase=Phase.RESPOND))


def _prompt_ids(tokenizer: Any, observation: str) -> list[int]:
    if not observation:
        raise ValueError("a trained sample must have a non-empty observation")
    return encode(tokenizer, render_chat(tokenizer, [{"role": "user", "content": observation}]))


def _pair(tokenizer: Any, role: str, prompt: list[int], chosen: Sample, rejected: Sample, clip: bool) -> PreferencePair:
    assert chosen.reward is not None and rejected.reward is not None  # preference_pair skips None
    chosen_ids, rejected_ids = encode(tokenizer, chosen.raw), encode(tokenizer, rejected.raw)
    if clip and rejected.failure is Failure.OVER_LENGTH and len(rejected_ids) > len(chosen_ids):
        # A sample cut off at the token limit is rejected for its length, and with summed
        # log-probs its extra tokens would dominate h; cut to the chosen length, the pair
        # compares sequences of equal size (the paper's clip_rejected_length_on_max_length_error).
        rejected_ids = rejected_ids[: len(chosen_ids)]
    return PreferencePair(role, prompt, chosen_ids, rejected_ids, chosen.reward, rejected.reward)


def preference_pairs(
    rounds: Sequence[Round], game: Game, tokenizer: Any, *, clip_rejected_to_chosen_length: bool = False
) -> list[PreferencePair]:
    """(argmax, argmin) pairs of every group whose rewards differ, attacker pairs first.

    Failures carry the −1 penalty, below every valid score, so they are rejected before any
    valid sample; excluded samples (reward None) never enter a pair.
    """
    attacker, defender = [], []
    for round_ in rounds:
        pair = round_.attacker_pair()  # None for direct rounds: their rewards are all None
        if pair is not None and not round_.direct:
            prompt = _prompt_ids(tokenizer, attacker_prompt(game, round_))
            chosen, rejected = (round_.attacks[i] for i in pair)
            attacker.append(_pair(tokenizer, ATTACKER, prompt, chosen, rejected, clip_rejected_to_chosen_length))
        observations = defender_prompts(game, round_)
        for a, c, r in round_.defender_pairs():
            prompt = _prompt_ids(tokenizer, observations[a])
            chosen, rejected = round_.responses[a][c], round_.responses[a][r]
            defender.append(_pair(tokenizer, DEFENDER, prompt, chosen, rejected, clip_rejected_to_chosen_length))
    return attacker + defender


def _scored(samples: Sequence[Sample]) -> Iterator[tuple[Sample, float]]:
    for sample in samples:
        if sample.reward is not None:
            yield sample, sample.reward


def rollouts(rounds: Sequence[Round], game: Game, tokenizer: Any) -> list[Rollout]:
    """Every non-excluded sample with its reward and group key, attacker rollouts first."""
    attacker, defender = [], []
    for r, round_ in enumerate(rounds):
        if not round_.direct:
            prompt = _prompt_ids(tokenizer, attacker_prompt(game, round_))
            for sample, reward in _scored(round_.attacks):
                attacker.append(Rollout(ATTACKER, prompt, encode(tokenizer, sample.raw), reward, (r,)))
        observations = defender_prompts(game, round_)
        for a, row in enumerate(round_.responses):
            scored = list(_scored(row))
            if not scored:
                continue
            prompt = _prompt_ids(tokenizer, observations[a])
            for sample, reward in scored:
                defender.append(Rollout(DEFENDER, prompt, encode(tokenizer, sample.raw), reward, (r, a)))
    return attacker + defender
