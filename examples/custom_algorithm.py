"""A new game algorithm in one file, outside the package: a hinge loss on the judge's pairs.

    advgame train --plugin examples/custom_algorithm.py --config configs/cpu_smoke.yaml algorithm.name=hinge

For each (chosen, rejected) pair of a group (the judge's best and worst sample), with
h = [log π(chosen) − log π_ref(chosen)] − [log π(rejected) − log π_ref(rejected)]:

    loss = max(0, margin − β·h)

the rank-calibration hinge of SLiC-HF (Zhao et al., 2023, arXiv 2305.10425) anchored to a
reference as DPO is: a pair stops pulling once the policy prefers the chosen sample by the
margin, where DPO's log-sigmoid keeps pushing every pair. It reads ``algorithm.beta``,
``algorithm.margin`` and whose weights sample and anchor (``sampler``, ``reference``: "ema" makes
it a mirror-descent recipe like AdvGame-DPO-MD). Everything it uses is public:
``algorithms.training.algorithm`` (the interface), ``batches.preference_pairs`` (pairs from
played rounds) and ``losses.margin``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from advgame_env.game import Game, Round
from algorithms.config import AlgorithmConfig, Rule, non_negative, positive, read_when
from algorithms.training.algorithm import Algorithm, Metrics, config_as, policy_logprobs, register
from algorithms.training.batches import PreferencePair, Tokenizers, preference_pairs
from algorithms.training.distributed import Dist
from algorithms.training.losses import margin
from algorithms.training.players import Player


@dataclass
class HingeConfig(AlgorithmConfig):
    """The ``algorithm:`` section of ``algorithm.name: hinge``; an unknown key is an error."""

    rules: ClassVar[dict[str, Rule]] = {"beta": positive(), "margin": non_negative()}  # checked as the file loads
    beta: float = 0.1  # scale of the log-ratio margin h
    margin: float = 1.0  # the hinge: pairs with β·h above it have no loss
    sampler: Literal["ema", "learner"] = "learner"
    reference: Literal["ema", "initial"] = "initial"
    ema_decay: float | None = None  # read where the EMA samples or anchors: 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        uses_ema = "ema" in (self.sampler, self.reference)
        self.ema_decay = read_when(self, "ema_decay", uses_ema, 0.95, "where the EMA samples or is the reference")


@register("hinge")
class Hinge(Algorithm[PreferencePair]):
    config_class = HingeConfig
    metric_names = ("margin", "active")  # the mean h, and the share of pairs inside the hinge

    def __init__(self, config: AlgorithmConfig, max_context: int = 2048) -> None:
        super().__init__(config, max_context)
        config = config_as(config, HingeConfig)
        self.beta, self.margin = config.beta, config.margin
        self.sampler, self.reference = config.sampler, config.reference

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str],
        dist: Dist,
    ) -> list[PreferencePair]:
        # cut an over-length rejected sample to the chosen length, so its extra tokens do not decide h
        return preference_pairs(rounds, game, tokenizers, clip_rejected_to_chosen_length=True, prefills=prefills)

    def loss(self, player: Player, chunk: Sequence[PreferencePair]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(p.prompt_ids, p.chosen_ids) for p in chunk] + [(p.prompt_ids, p.rejected_ids) for p in chunk]
        with torch.no_grad():
            ref_logps, mask = policy_logprobs(player, self.reference, sequences, self.max_context)
            ref = (ref_logps * mask).sum(-1)
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        policy = (logps * mask).sum(-1)
        n = len(chunk)
        h = margin(policy[:n], policy[n:], ref[:n], ref[n:])
        losses = torch.relu(self.margin - self.beta * h)
        active = (losses.detach() > 0).float()
        return losses, {"margin": float(h.detach().sum()), "active": float(active.sum())}
