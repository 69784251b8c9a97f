"""DPO and IPO on the judge's (best, worst) pairs of each group, and AdvGame's -MD variants.

AdvGame-DPO-MD / IPO-MD (A §3.4): the EMA policy samples and is the reference (a mirror-descent
step towards the EMA). On-policy DPO / IPO: the learner samples and the initial model is the
reference. One class serves the four names; each name has its own config defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from advgame_env.game import Game, Round
from algorithms.algorithm_configs import DPOConfig, DPOMDConfig, IPOConfig, IPOMDConfig, PreferenceConfig
from algorithms.training.algorithm import Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import PreferencePair, Tokenizers, preference_pairs
from algorithms.training.distributed import Dist
from algorithms.training.losses import dpo_loss, ipo_loss, margin
from algorithms.training.players import Player

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"dpo": dpo_loss, "ipo": ipo_loss}


# decorators apply from the bottom up: the registry lists advgame_dpo_md, the default, first
@register("ipo", config=IPOConfig)
@register("dpo", config=DPOConfig)
@register("advgame_ipo_md", config=IPOMDConfig)
@register("advgame_dpo_md", config=DPOMDConfig)
class PreferenceOptimization(Algorithm[PreferencePair]):
    """The pairwise loss of each (chosen, rejected) pair, summed log-probs, one pair one example."""

    config_class = PreferenceConfig
    config: PreferenceConfig
    metric_names = ("margin", "accuracy")

    @property
    def loss_fn(self) -> Callable[..., torch.Tensor]:
        return LOSSES[self.config.loss]

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str] | None = None,
        dist: Dist | None = None,
    ) -> list[PreferencePair]:
        clip = self.config.clip_rejected_to_chosen_length
        return preference_pairs(rounds, game, tokenizers, clip_rejected_to_chosen_length=clip, prefills=prefills)

    def loss(self, player: Player, chunk: Sequence[PreferencePair]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(p.prompt_ids, p.chosen_ids) for p in chunk] + [(p.prompt_ids, p.rejected_ids) for p in chunk]
        with torch.no_grad():
            ref_logps, mask = policy_logprobs(player, self.reference, sequences, self.max_context)
            ref = (ref_logps * mask).sum(-1)
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        policy = (logps * mask).sum(-1)
        n = len(chunk)
        losses = self.loss_fn(policy[:n], policy[n:], ref[:n], ref[n:], beta=self.config.beta)
        h = margin(policy[:n], policy[n:], ref[:n], ref[n:]).detach()
        return losses, {"margin": float(h.sum()), "accuracy": float((h > 0).float().sum())}
