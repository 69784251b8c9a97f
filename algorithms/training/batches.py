"""From played rounds to training examples: preference pairs (DPO/IPO) and rollouts (GRPO, REINFORCE++).

A prompt is the player's observation as one user turn, rendered with the chat template
exactly as ``agents.policy.Policy`` sends it; a continuation is the sample's RAW output (the
attacker's hidden ``<think>`` included: the reasoning is part of the action being trained): the
sampled token ids when the action was a generation, else its text tokenised on its own. A
continuation that ended by itself gets the end-of-turn token appended, so training also
teaches when to stop; one cut off at the token limit does not.

The attacker's group is a round (its A rewrites of one seed); the defender's group is one
attack of a round (its D answers to one prompt). Direct rounds have no attacker samples.

``tokenizer``: one tokenizer for both roles, or a mapping role -> tokenizer: each role's
examples are tokenised as that role's player reads and samples (players may differ in chat
template).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Union

from advgame_env.game import Game, Phase, Round, Sample
from advgame_env.parsing import Failure
from advgame_env.roles import ATTACKER, DEFENDER
from agents.hf import encode, render_chat
from agents.policy import chat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# one tokenizer for both roles, or each role's own
Tokenizers = Union["PreTrainedTokenizerBase", Mapping[str, "PreTrainedTokenizerBase"]]


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
    """One scored sample; an algorithm extends it with what it computes (``grpo.GRPORollout``,
    ``self_redteam.PPORollout``)."""

    role: str
    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float
    group: tuple[int, ...]  # (round,) for the attacker, (round, attack) for the defender
    sampler_logprobs: list[float] | None = None  # per completion token, NaN where unknown
    failed: bool = False  # the sample broke a rule of the game (its reward is the failure penalty)


def continuation(
    tokenizer: PreTrainedTokenizerBase, sample: Sample, prefill: str = ""
) -> tuple[list[int], list[float] | None]:
    """The sample's token ids (and the sampler's log-probs of them, when known); a prefill
    belongs to the prompt, not to the continuation. A stopped generation ends with the token it
    stopped on (``Generation.stop_token_id``), else with the tokenizer's end-of-turn token."""
    generation = sample.generation
    token_ids = list(getattr(generation, "token_ids", None) or [])
    if token_ids or (generation is not None and not sample.raw):
        logprobs = list(getattr(generation, "logprobs", None) or [])
        ids, known = token_ids, (logprobs if len(logprobs) == len(token_ids) else None)
    else:  # a text action: its tokens as the model would read them
        ids, known = encode(tokenizer, sample.raw.removeprefix(prefill)), None
    finish = getattr(generation, "finish_reason", None)
    stopped = finish != "length" if finish is not None else sample.failure is not Failure.OVER_LENGTH
    # the token the generation actually stopped on (a model may have several end-of-turn ids);
    # a text action, or a backend that cannot tell, ends with the tokenizer's
    end = getattr(generation, "stop_token_id", None) if stopped else None
    if end is None:
        end = tokenizer.eos_token_id
    if stopped and end is not None:
        ids = [*ids, end]
        known = None if known is None else [*known, math.nan]
    return ids, known


def attacker_prompt(game: Game, round_: Round) -> str:
    # The game shows observations only in the phase they are asked for; a played round is
    # past it, so ask about a shallow copy set back to that phase (same text, by the game's rules).
    return game.attacker_observation(replace(round_, phase=Phase.ATTACK))


def defender_prompts(game: Game, round_: Round) -> tuple[str, ...]:
    return game.defender_observation(replace(round_, phase=Phase.RESPOND))


def tokenizer_of(tokenizer: Tokenizers, role: str) -> PreTrainedTokenizerBase:
    """The role's tokenizer, from one tokenizer for both roles or a mapping role -> tokenizer."""
    return tokenizer[role] if isinstance(tokenizer, Mapping) else tokenizer


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, observation: str, prefill: str = "", system: str = "") -> list[int]:
    if not observation:
        raise ValueError("a trained sample must have a non-empty observation")
    return encode(tokenizer, render_chat(tokenizer, chat(observation, prefill, system)))


def _pair(
    tokenizer: PreTrainedTokenizerBase,
    role: str,
    prompt: list[int],
    chosen: Sample,
    rejected: Sample,
    clip: bool,
    prefill: str,
) -> PreferencePair:
    assert chosen.reward is not None and rejected.reward is not None  # preference_pair skips None
    (chosen_ids, _) = continuation(tokenizer, chosen, prefill)
    (rejected_ids, _) = continuation(tokenizer, rejected, prefill)
    if clip and rejected.failure is Failure.OVER_LENGTH and len(rejected_ids) > len(chosen_ids):
        # A sample cut off at the token limit is rejected for its length, and with summed
        # log-probs its extra tokens would dominate h; cut to the chosen length, the pair
        # compares sequences of equal size (the paper's clip_rejected_length_on_max_length_error).
        rejected_ids = rejected_ids[: len(chosen_ids)]
    return PreferencePair(role, prompt, chosen_ids, rejected_ids, chosen.reward, rejected.reward)


def preference_pairs(
    rounds: Sequence[Round],
    game: Game,
    tokenizer: Tokenizers,
    *,
    clip_rejected_to_chosen_length: bool = False,
    prefills: Mapping[str, str] | None = None,
) -> list[PreferencePair]:
    """(argmax, argmin) pairs of every group whose rewards differ, attacker pairs first.

    Failures carry the −1 penalty, below every valid score, so they are rejected before any
    valid sample; excluded samples (reward None) never enter a pair. ``prefills``: each role's
    assistant prefill (see ``agents.policy.Policy``), part of its prompt.
    """
    pre_a, pre_d = (prefills or {}).get(ATTACKER, ""), (prefills or {}).get(DEFENDER, "")
    tok_a, tok_d = tokenizer_of(tokenizer, ATTACKER), tokenizer_of(tokenizer, DEFENDER)
    clip = clip_rejected_to_chosen_length
    attacker, defender = [], []
    for round_ in rounds:
        pair = round_.attacker_pair()  # None for direct rounds: their rewards are all None
        if pair is not None and not round_.direct:
            prompt = _prompt_ids(tok_a, attacker_prompt(game, round_), pre_a, game.config.system_message(ATTACKER))
            chosen, rejected = (round_.attacks[i] for i in pair)
            attacker.append(_pair(tok_a, ATTACKER, prompt, chosen, rejected, clip, pre_a))
        observations = defender_prompts(game, round_)
        for a, c, r in round_.defender_pairs():
            prompt = _prompt_ids(tok_d, observations[a], pre_d, game.config.system_message(DEFENDER))
            chosen, rejected = round_.responses[a][c], round_.responses[a][r]
            defender.append(_pair(tok_d, DEFENDER, prompt, chosen, rejected, clip, pre_d))
    return attacker + defender


def _scored(samples: Sequence[Sample]) -> Iterator[tuple[Sample, float]]:
    for sample in samples:
        if sample.reward is not None:
            yield sample, sample.reward


def _rollout(
    tokenizer: PreTrainedTokenizerBase,
    role: str,
    prompt: list[int],
    sample: Sample,
    reward: float,
    group: tuple[int, ...],
    prefill: str,
) -> Rollout:
    ids, logprobs = continuation(tokenizer, sample, prefill)
    return Rollout(role, prompt, ids, reward, group, logprobs, failed=sample.failure is not None)


def rollouts(
    rounds: Sequence[Round], game: Game, tokenizer: Tokenizers, *, prefills: Mapping[str, str] | None = None
) -> list[Rollout]:
    """Every non-excluded sample with its reward and group key, attacker rollouts first."""
    pre_a, pre_d = (prefills or {}).get(ATTACKER, ""), (prefills or {}).get(DEFENDER, "")
    tok_a, tok_d = tokenizer_of(tokenizer, ATTACKER), tokenizer_of(tokenizer, DEFENDER)
    attacker, defender = [], []
    for r, round_ in enumerate(rounds):
        if not round_.direct:
            prompt = _prompt_ids(tok_a, attacker_prompt(game, round_), pre_a, game.config.system_message(ATTACKER))
            for sample, reward in _scored(round_.attacks):
                attacker.append(_rollout(tok_a, ATTACKER, prompt, sample, reward, (r,), pre_a))
        observations = defender_prompts(game, round_)
        for a, row in enumerate(round_.responses):
            scored = list(_scored(row))
            if not scored:
                continue
            prompt = _prompt_ids(tok_d, observations[a], pre_d, game.config.system_message(DEFENDER))
            for sample, reward in scored:
                defender.append(_rollout(tok_d, DEFENDER, prompt, sample, reward, (r, a), pre_d))
    return attacker + defender
