"""A new game algorithm in one file, outside the package: a hinge loss on the judge's pairs.

    advgame train --plugin examples/custom_algorithm.py --config configs/cpu_smoke.yaml algorithm.name=hinge

For each (chosen, rejected) pair of a group (the judge's best and worst sample), with
h = [log π(chosen) − log π_ref(chosen)] − [log π(rejected) − log π_ref(rejected)]:

    loss = max(0, margin − β·h)

the rank-calibration hinge of SLiC-HF (Zhao et al., 2023, arXiv 2305.10425) anchored to a
reference as DPO is: a pair stops pulling once the policy prefers the chosen sample by the
margin, where DPO's log-sigmoid keeps pushing every pair. It reads ``algorithm.beta``,
``algorithm.margin`` and whose weights sample and anchor (``sampler``, ``reference``: "ema" makes
it a mirror-descent recipe like AdvGame-DPO-MD), all declared once, in ``HingeConfig``; the
class reads them as ``self.config`` (``docs/writing-an-algorithm.md`` walks through it).
Everything it uses is public: ``algorithms.training.algorithm`` (the interface),
``batches.preference_pairs`` (pairs from played rounds) and ``losses.margin``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from advgame_env.game import Game, Round
from algorithms.config import AlgorithmConfig, non_negative, positive, ranged, read_when, within
from algorithms.training.algorithm import Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import PreferencePair, Tokenizers, preference_pairs
from algorithms.training.distributed import Dist
from algorithms.training.losses import margin
from algorithms.training.players import Player


@dataclass
class HingeConfig(AlgorithmConfig):
    """The ``algorithm:`` section of ``algorithm.name: hinge``: every knob, its default and its
    range, in one place (an unknown key is an error; a value out of range too, as the file loads)."""

    name: str = "hinge"
    beta: float = ranged(0.1, positive())  # scale of the log-ratio margin h
    margin: float = ranged(1.0, non_negative())  # the hinge: pairs with β·h above it have no loss
    # whose weights sample the rounds and anchor the loss (read by the base class's hooks)
    sampler: Literal["ema", "learner"] = "learner"
    reference: Literal["ema", "initial"] = "initial"
    # read where the EMA samples or anchors: 0.95
    ema_decay: float | None = ranged(None, within(0, 1, open_high=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        uses_ema = "ema" in (self.sampler, self.reference)
        self.ema_decay = read_when(self, "ema_decay", uses_ema, 0.95, "where the EMA samples or is the reference")


@register("hinge")
class Hinge(Algorithm[PreferencePair]):
    config_class = HingeConfig
    config: HingeConfig  # the section it was built with: its knobs are read from here only
    metric_names = ("margin", "active")  # the mean h, and the share of pairs inside the hinge

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
        losses = torch.relu(self.config.margin - self.config.beta * h)
        active = (losses.detach() > 0).float()
        return losses, {"margin": float(h.detach().sum()), "active": float(active.sum())}
