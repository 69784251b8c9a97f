"""DPO and IPO on the judge's (best, worst) pairs of each group, and AdvGame's -MD variants.

AdvGame-DPO-MD / IPO-MD (A §3.4): the EMA policy samples and is the reference (a mirror-descent
step towards the EMA). On-policy DPO / IPO: the learner samples and the initial model is the
reference. One class serves the four names; each name has its own config defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from advgame_env.game import Game, Round
from algorithms.config import AlgorithmConfig, read_when
from algorithms.training.algorithm import Algorithm, Metrics, config_as, policy_logprobs, register
from algorithms.training.batches import PreferencePair, Tokenizers, preference_pairs
from algorithms.training.distributed import Dist
from algorithms.training.losses import dpo_loss, ipo_loss, margin
from algorithms.training.players import Player, Which

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"dpo": dpo_loss, "ipo": ipo_loss}


@dataclass
class PreferenceConfig(AlgorithmConfig):
    """DPO / IPO knobs (A §3.4): β of DPO, τ of IPO (target margin 1/(2β))."""

    loss: ClassVar[Literal["dpo", "ipo"]] = "dpo"
    beta: float = 0.1
    clip_rejected_to_chosen_length: bool = True  # cut an over-length rejected sample to the chosen length
    # whose weights sample the rounds, and the anchor of the loss
    sampler: Literal["ema", "learner"] = "learner"
    reference: Literal["ema", "initial"] = "initial"
    ema_decay: float | None = None  # read where the EMA samples or is the reference: 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        ema = "ema" in (self.sampler, self.reference)
        self.ema_decay = read_when(self, "ema_decay", ema, 0.95, "where the EMA samples or is the reference")


@dataclass
class DPOMDConfig(PreferenceConfig):
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


# decorators apply from the bottom up: the registry lists advgame_dpo_md, the default, first
@register("ipo", config=IPOConfig)
@register("dpo", config=DPOConfig)
@register("advgame_ipo_md", config=IPOMDConfig)
@register("advgame_dpo_md", config=DPOMDConfig)
@dataclass
class PreferenceOptimization(Algorithm[PreferencePair]):
    """The pairwise loss of each (chosen, rejected) pair, summed log-probs, one pair one example."""

    config_class = PreferenceConfig
    metric_names = ("margin", "accuracy")

    loss_fn: Callable[..., torch.Tensor]
    sampler: Which
    reference: Which
    beta: float = 0.1
    clip_rejected_to_chosen_length: bool = True
    max_context: int = 2048
    ema_decay: float | None = None

    @classmethod
    def from_config(cls, config: AlgorithmConfig, max_context: int) -> PreferenceOptimization:
        config = config_as(config, PreferenceConfig)
        return cls(
            LOSSES[config.loss],
            config.sampler,
            config.reference,
            config.beta,
            config.clip_rejected_to_chosen_length,
            max_context,
            config.ema_decay,
        )

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str] | None = None,
        dist: Dist | None = None,
    ) -> list[PreferencePair]:
        clip = self.clip_rejected_to_chosen_length
        return preference_pairs(rounds, game, tokenizers, clip_rejected_to_chosen_length=clip, prefills=prefills)

    def loss(self, player: Player, chunk: Sequence[PreferencePair]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(p.prompt_ids, p.chosen_ids) for p in chunk] + [(p.prompt_ids, p.rejected_ids) for p in chunk]
        with torch.no_grad():
            ref_logps, mask = policy_logprobs(player, self.reference, sequences, self.max_context)
            ref = (ref_logps * mask).sum(-1)
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        policy = (logps * mask).sum(-1)
        n = len(chunk)
        losses = self.loss_fn(policy[:n], policy[n:], ref[:n], ref[n:], beta=self.beta)
        h = margin(policy[:n], policy[n:], ref[:n], ref[n:]).detach()
        return losses, {"margin": float(h.sum()), "accuracy": float((h > 0).float().sum())}
