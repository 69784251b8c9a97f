"""A step's figures: the game figures of a batch of rounds (rewards, valid shares, failures),
the defender's refusal rates per seed label, and ``StepMetrics``, which keeps a step's figures by
what they are about and names them as ``metrics.jsonl`` does."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from advgame_env import Game, Round, Seed
from advgame_env.conversation import Dialogue
from advgame_env.parsing import Failure
from advgame_env.roles import ATTACKER, DEFENDER
from advgame_env.rule_judge import Behaviour, behaviour
from agents.policy import Policy
from algorithms.training.rollouts import new_round, play
from algorithms.training.run_setup import SPLITS


def game_metrics(rounds: Sequence[Round]) -> dict[str, float]:
    attacks = [a for r in rounds if not r.direct for a in r.attacks]
    answers = [s for r in rounds for row in r.responses for s in row if s.failure is not Failure.PROMPT_INVALID]
    out: dict[str, float] = {"rounds": len(rounds)}
    for role, samples in ((ATTACKER, attacks), (DEFENDER, answers)):
        if not samples:
            continue
        rewards = [s.reward for s in samples if s.reward is not None]
        if rewards:
            out[f"{role}_reward"] = sum(rewards) / len(rewards)
        out[f"{role}_valid"] = sum(s.failure is None for s in samples) / len(samples)
    if attacks:
        for failure in (Failure.BAD_FORMAT, Failure.UNFAITHFUL, Failure.OVER_LENGTH):
            out[f"attacker_{failure.value}"] = sum(a.failure is failure for a in attacks) / len(attacks)
    if answers:
        out["defender_over_length"] = sum(s.failure is Failure.OVER_LENGTH for s in answers) / len(answers)
    return out | conversation_metrics(rounds)


def conversation_metrics(rounds: Sequence[Round]) -> dict[str, float]:
    """How far the attacked conversations of multi-turn rounds went: their mean number of answered
    turns, and the share that got an answer past turn 1 (a run whose openers all fail never plays
    turn 2, and learns nothing about conversations). Direct rounds are one turn by design: left out."""
    conversations = [
        c for r in rounds if isinstance(r, Dialogue) and not r.direct for row in r.conversations for c in row
    ]
    if not conversations:
        return {}
    # a turn is played when the defender answered it (an invalid message gets a PROMPT_INVALID
    # placeholder; a later failed message marks the row's opener, so its sample cannot tell)
    answered = [
        sum(t.response is not None and t.response.failure is not Failure.PROMPT_INVALID for t in c.turns)
        for c in conversations
    ]
    return {
        "conversation_turns": sum(answered) / len(answered),
        "conversations_past_turn_1": sum(n >= 2 for n in answered) / len(answered),
    }


def refusal_rates(rounds: Sequence[Round]) -> dict[str, float]:
    """Share of answers that refuse or deflect, per seed label (model-free, keyword based)."""
    out = {}
    for label in SPLITS:
        texts = [s.public or "" for r in rounds if r.seed.label is label for row in r.responses for s in row]
        if texts:
            out[f"refusal_{label.value}"] = sum(behaviour(t) is not Behaviour.COMPLIANCE for t in texts) / len(texts)
    return out


def validation_figures(
    game: Game,
    defender: Policy,
    seeds: Sequence[Seed],
    retries: int,
    precision: contextlib.AbstractContextManager[None],
) -> dict[str, float]:
    """``defender`` answers held-out ``seeds`` directly; its answers judged and keyword-classified (``val/x``)."""
    rounds = [new_round(game, seed, direct=True) for seed in seeds]
    nobody = Policy(defender.backend)  # direct rounds: the attacker sits out
    with precision, torch.no_grad():
        play(game, nobody, defender, rounds, retries)
    return {f"val/{k}": v for k, v in (game_metrics(rounds) | refusal_rates(rounds)).items()}


@dataclass
class StepMetrics:
    """A step's figures, kept by what they are about; ``flat()`` names them as metrics.jsonl does.

    ``game[split]``: the game figures of a split's global batch; ``train[split][learner]``: a
    learner's update figures on a split (split None: both splits' examples mixed in one update);
    ``seconds``: where the step's time went, by phase."""

    game: dict[str, dict[str, float]] = field(default_factory=dict)
    train: dict[str | None, dict[str, dict[str, float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    pool: dict[str, float] = field(default_factory=dict)  # the opponent pools' figures (``pool/x``)

    def flat(self) -> dict[str, float]:
        """``game_<split>/x``, ``train_<split>/<learner>_x`` (``train/<learner>_x`` for a mixed
        update), ``time/<phase>_s`` and, with opponent pools, ``pool/x``; plus ``game/x`` and
        ``train/<learner>_x``, the mean over the splits that have it (the sum, for example
        counts), for the progress bar and the plots."""
        out: dict[str, float] = {}
        for split, figures in self.game.items():
            out |= {f"game_{split}/{k}": v for k, v in figures.items()}
        for part, learners in self.train.items():
            prefix = "train" if part is None else f"train_{part}"
            out |= {f"{prefix}/{name}_{k}": v for name, figures in learners.items() for k, v in figures.items()}
        out |= _across_splits("game", [{"": figures} for figures in self.game.values()])
        out |= _across_splits("train", [learners for part, learners in self.train.items() if part is not None])
        out |= {f"pool/{k}": v for k, v in self.pool.items()}
        return out | {f"time/{k}_s": v for k, v in self.seconds.items()}


def _across_splits(family: str, per_split: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for learners in per_split:
        for name, figures in learners.items():
            for k, v in figures.items():
                values.setdefault(f"{family}/{name}_{k}" if name else f"{family}/{k}", []).append(v)
    return {key: sum(v) if key.endswith("_examples") else sum(v) / len(v) for key, v in values.items()}


class Clock:
    """Seconds per phase of a step (this process): where a step's time goes, for the logs and benchmarks/."""

    def __init__(self, phases: Sequence[str] = ("sync", "play", "update")) -> None:
        self.spent = dict.fromkeys(phases, 0.0)
        self.started = self.mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        """The time since the last lap goes to ``phase``."""
        now = time.perf_counter()
        self.spent[phase] = self.spent.get(phase, 0.0) + now - self.mark
        self.mark = now

    def seconds(self) -> dict[str, float]:
        return self.spent | {"step": time.perf_counter() - self.started}
