"""The ``algorithm:`` sections of the built-in algorithms: each one's knobs, their defaults (the
paper's values) and their ranges, in one place.

They sit beside ``algorithms.config``, below the training code, so that reading a run config
(and the default one) needs neither the algorithms' modules nor torch; the algorithm classes in
``algorithms.training`` name their section (``config_class``) and read it as ``self.config``.
An algorithm from outside the package declares its section beside its class instead, and
``@register`` hands it to the config reader (``algorithms.config.register_section``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from algorithms.config import (
    AlgorithmConfig,
    at_least,
    non_negative,
    positive,
    ranged,
    read_when,
    within,
)

EMA = "where the EMA samples or is the reference"


# ----------------------------------------------------------------------------- DPO / IPO (-MD)


@dataclass
class PreferenceConfig(AlgorithmConfig):
    """DPO / IPO knobs (A §3.4): β of DPO, τ of IPO (target margin 1/(2β))."""

    loss: ClassVar[Literal["dpo", "ipo"]] = "dpo"
    # trains on conversations (game.turns > 1): trajectory pairs, algorithms/training/conversations.py
    multi_turn: ClassVar[bool] = True
    beta: float = ranged(0.1, positive())
    clip_rejected_to_chosen_length: bool = True  # cut an over-length rejected sample to the chosen length
    # whose weights sample the rounds, and the anchor of the loss
    sampler: Literal["ema", "learner"] = "learner"
    reference: Literal["ema", "initial"] = "initial"
    # read where the EMA samples or is the reference: 0.95
    ema_decay: float | None = ranged(None, within(0, 1, open_high=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ema_decay = read_when(self, "ema_decay", "ema" in (self.sampler, self.reference), 0.95, EMA)


@dataclass
class DPOMDConfig(PreferenceConfig):
    """AdvGame-DPO-MD: the EMA samples and is the reference (a mirror-descent step towards it)."""

    name: str = "advgame_dpo_md"
    sampler: Literal["ema", "learner"] = "ema"
    reference: Literal["ema", "initial"] = "ema"


@dataclass
class IPOMDConfig(DPOMDConfig):
    loss: ClassVar[Literal["dpo", "ipo"]] = "ipo"
    name: str = "advgame_ipo_md"


@dataclass
class DPOConfig(PreferenceConfig):
    name: str = "dpo"


@dataclass
class IPOConfig(PreferenceConfig):
    loss: ClassVar[Literal["dpo", "ipo"]] = "ipo"
    name: str = "ipo"


# ----------------------------------------------------------------------------- GRPO


@dataclass
class GRPOConfig(AlgorithmConfig):
    multi_turn: ClassVar[bool] = True  # whole-trajectory rollouts in conversations (game.turns > 1)
    name: str = "grpo"
    sampler: Literal["ema", "learner"] = "learner"
    reference: Literal["ema", "initial"] = "initial"
    # weight of the k3 KL to the initial model, in the loss: the paper's 0.1 came with an
    # undetached importance ratio, which doubles the policy-gradient term; with our detached
    # ratio the same objective has 0.05 (see losses.py)
    kl_beta: float = ranged(0.05, non_negative())
    # truncated importance ratio against the sampler's log-probs; unset: on with the learner as
    # sampler only (it corrects an on-policy sampler's lag; the reference forbids it off-policy)
    tis: bool | None = None
    tis_cap: float | None = ranged(None, positive())  # its cap (read with tis): 2.0
    baseline: Literal["batch_mean", "group_mean"] = "batch_mean"  # the advantage baseline
    # read where the EMA samples or is the reference: 0.95
    ema_decay: float | None = ranged(None, within(0, 1, open_high=True))
    # conversations (game.turns > 1): "trajectory" gives every own turn the conversation's reward;
    # "reward_to_go" gives turn t the reward of turns t.. only (a turn cannot change the turns
    # before it), from the rule's per-turn rewards (game.reward_rule: self_redteam); docs/multiturn.md
    credit: Literal["trajectory", "reward_to_go"] = "trajectory"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tis is None:
            self.tis = self.sampler == "learner"
        self.tis_cap = read_when(self, "tis_cap", self.tis, 2.0, "by grpo with algorithm.tis on")
        self.ema_decay = read_when(self, "ema_decay", "ema" in (self.sampler, self.reference), 0.95, EMA)


# ----------------------------------------------------------------------------- Self-RedTeam


@dataclass
class SelfRedTeamConfig(AlgorithmConfig):
    multi_turn: ClassVar[bool] = True  # whole-trajectory rollouts in conversations (game.turns > 1)
    name: str = "self_redteam"
    reward_kl_beta: float = ranged(0.01, non_negative())  # weight of the k1 KL to the initial model, in the reward
    clip: float = ranged(0.2, positive())  # PPO clip ε
    # optimizer steps per batch of rounds: the reference takes about 6 per rollout (192 samples, batch 32)
    minibatches: int = ranged(6, at_least(1))
    # the loss over a minibatch: "token" mean over all its tokens (the reference's packed runs)
    # or "sequence" (each sequence's token mean, then the mean over sequences)
    weighting: Literal["token", "sequence"] = "token"
    # conversations (game.turns > 1): "trajectory" credits every own turn with the conversation's
    # reward; "reward_to_go" credits turn t with the reward of turns t.. only (the Self-RedTeam
    # rule's per-turn rewards); the KL penalty runs over all own turns either way; docs/multiturn.md
    credit: Literal["trajectory", "reward_to_go"] = "trajectory"


# ----------------------------------------------------------------------------- Nash-MD


@dataclass
class NashMDConfig(AlgorithmConfig):
    """The ``algorithm:`` section of ``algorithm.name: nash_md``."""

    name: str = "nash_md"
    # β of the geometric mixture π_θ^(1−β)·π_ref^β the opponent sample is drawn from
    mixture_coef: float = ranged(0.5, within(0, 1))
    tau: float = ranged(0.1, non_negative())  # τ: weight of the KL(π_θ ‖ π_ref) regulariser


# ----------------------------------------------------------------------------- SPIRAL (RAE)


@dataclass
class SpiralRAEConfig(AlgorithmConfig):
    """The ``algorithm:`` section of ``algorithm.name: spiral_rae``."""

    name: str = "spiral_rae"
    # the baselines' decay per batch: b ← α·b + (1 − α)·mean (SPIRAL: 0.95)
    alpha: float = ranged(0.95, within(0, 1, open_high=True))
    per_label: bool = True  # one baseline per (seed label, role), SPIRAL's per-(game, role); false: per role
    # weight of a k3 KL to the initial model in the loss; SPIRAL's objective has none (0: no
    # reference copy is kept at all)
    kl_beta: float = ranged(0.0, non_negative())


# The built-in names and their sections, the default (advgame_dpo_md) first.
BUILTIN: dict[str, type[AlgorithmConfig]] = {
    "advgame_dpo_md": DPOMDConfig,
    "advgame_ipo_md": IPOMDConfig,
    "dpo": DPOConfig,
    "ipo": IPOConfig,
    "grpo": GRPOConfig,
    "self_redteam": SelfRedTeamConfig,
    "nash_md": NashMDConfig,
    "spiral_rae": SpiralRAEConfig,
}
