"""DPO and IPO on the judge's (best, worst) pairs of each group, and AdvGame's -MD variants.

AdvGame-DPO-MD / IPO-MD (A §3.4): the EMA policy samples and is the reference (a mirror-descent
step towards the EMA). On-policy DPO / IPO: the learner samples and the initial model is the
reference. One class serves the four names; each name has its own config defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from advgame_env.conversation import ConversationGame
from advgame_env.game import Game, Round
from algorithms.algorithm_configs import DPOConfig, DPOMDConfig, IPOConfig, IPOMDConfig, PreferenceConfig
from algorithms.training.algorithm import Algorithm, Metrics, register
from algorithms.training.batches import PreferencePair, Tokenizers, preference_pairs
from algorithms.training.conversations import TrajectoryPair, conversation_pairs, summed_logprobs
from algorithms.training.distributed import Dist
from algorithms.training.losses import dpo_loss, ipo_loss, margin
from algorithms.training.players import Player

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"dpo": dpo_loss, "ipo": ipo_loss}


# decorators apply from the bottom up: the registry lists advgame_dpo_md, the default, first
@register("ipo", config=IPOConfig)
@register("dpo", config=DPOConfig)
@register("advgame_ipo_md", config=IPOMDConfig)
@register("advgame_dpo_md", config=DPOMDConfig)
class PreferenceOptimization(Algorithm[PreferencePair | TrajectoryPair]):
    """The pairwise loss of each (chosen, rejected) pair, summed log-probs, one pair one example.

    In conversations (``game.turns > 1``) a pair is two trajectories of one player from a shared
    prefix (``conversations.conversation_pairs``), each summed over the player's own turns."""

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
    ) -> list[PreferencePair | TrajectoryPair]:
        clip = self.config.clip_rejected_to_chosen_length
        if isinstance(game, ConversationGame):
            return list(
                conversation_pairs(rounds, game, tokenizers, clip_rejected_to_chosen_length=clip, prefills=prefills)
            )
        return list(preference_pairs(rounds, game, tokenizers, clip_rejected_to_chosen_length=clip, prefills=prefills))

    def loss(self, player: Player, chunk: Sequence[PreferencePair | TrajectoryPair]) -> tuple[torch.Tensor, Metrics]:
        # a single-turn pair is a trajectory of one turn: (prompt, continuation)
        trajectories = [_turns(p, chosen=True) for p in chunk] + [_turns(p, chosen=False) for p in chunk]
        with torch.no_grad():
            ref = summed_logprobs(player, self.reference, trajectories, self.max_context)
        policy = summed_logprobs(player, "learner", trajectories, self.max_context)
        n = len(chunk)
        losses = self.loss_fn(policy[:n], policy[n:], ref[:n], ref[n:], beta=self.config.beta)
        h = margin(policy[:n], policy[n:], ref[:n], ref[n:]).detach()
        return losses, {"margin": float(h.sum()), "accuracy": float((h > 0).float().sum())}


def _turns(pair: PreferencePair | TrajectoryPair, chosen: bool) -> list[tuple[list[int], list[int]]]:
    if isinstance(pair, TrajectoryPair):
        return [(s.prompt_ids, s.completion_ids) for s in (pair.chosen if chosen else pair.rejected)]
    return [(pair.prompt_ids, pair.chosen_ids if chosen else pair.rejected_ids)]
