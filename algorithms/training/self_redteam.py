"""REINFORCE++ self-play (Self-RedTeam, S §2.2-2.4): one shared policy learns from both roles'
samples at once.

Each sample's scalar game reward sits on its last token; every token also gets the k1 KL
penalty −β·(log π_old − log π_ref) with the initial model as reference; the advantage of a
token is its reward-to-go (γ = 1), whitened over all tokens of the same role (all processes,
harmful and benign seeds together, as the reference's replay buffer). The loss is PPO's
clipped surrogate (ε = 0.2), token mean per sequence; the trainer prepares the whole step's
batch once (both splits), before any optimizer step, so π_old is the policy that played the
rounds, then takes ``minibatches`` optimizer steps on shuffled minibatches that mix roles and
seed types; the clip matters after the first.

``weighting``: "token" (the reference's runs, which pack samples: a minibatch's loss is the mean
over all its tokens, so longer samples weigh more) or "sequence" (each sequence's token mean,
then the mean over sequences: OpenRLHF without packing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from advgame_env.game import Game, Round
from algorithms.algorithm_configs import SelfRedTeamConfig
from algorithms.training.algorithm import ROLES, Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.distributed import Dist
from algorithms.training.losses import ppo_clip_loss, reward_to_go, whiten
from algorithms.training.players import Player


@dataclass
class PPORollout(Rollout):
    """A rollout with what ``SelfRedTeam.prepare`` computes before the update: the learner's
    log-probs (π_old), each token's whitened advantage, and the summed log-ratio to the reference."""

    old_logprobs: list[float] = field(default_factory=list)
    token_advantages: list[float] = field(default_factory=list)
    kl: float = 0.0


@register("self_redteam")
class SelfRedTeam(Algorithm[PPORollout]):
    config_class = SelfRedTeamConfig
    config: SelfRedTeamConfig
    metric_names = ("kl", "clip_fraction")
    shares_policy = True

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str] | None = None,
        dist: Dist | None = None,
    ) -> list[PPORollout]:
        return [PPORollout(**vars(r)) for r in rollouts(rounds, game, tokenizers, prefills=prefills)]

    def weight(self, example: PPORollout) -> float:
        # the loss is a sequence's token mean: weighted by its tokens, Σ w·loss / Σ w is the token mean
        return float(len(example.completion_ids)) if self.config.weighting == "token" else 1.0

    def prepare(self, player: Player, batch: Sequence[PPORollout], dist: Dist, chunk: int) -> None:
        """Old and reference log-probs, per-token returns and per-role whitened advantages.

        Called before the batch's first optimizer step: the learner is then the policy that
        generated the batch (the weights the rollout engine was synced with), so its log-probs
        are π_old, as the reference's actor forward at experience time."""
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            sequences = [(r.prompt_ids, r.completion_ids) for r in part]
            with torch.no_grad():
                old, mask = policy_logprobs(player, "learner", sequences, self.max_context)
                ref, _ = policy_logprobs(player, self.reference, sequences, self.max_context)
            for i, r in enumerate(part):
                n = int(mask[i].sum())  # every completion token (generations fit the context)
                r.old_logprobs = old[i, :n].tolist()
                r.token_advantages = reward_to_go(old[i, :n], ref[i, :n], r.reward, self.config.reward_kl_beta).tolist()
                r.kl = float((old[i, :n] - ref[i, :n]).sum())
        for role in ROLES:  # every process takes part, with or without samples
            mine = [r for r in batch if r.role == role]
            values = torch.tensor([a for r in mine for a in r.token_advantages], dtype=torch.float64)
            total, squares, count = dist.sum([float(values.sum()), float((values**2).sum()), len(values)])
            for r in mine:
                r.token_advantages = whiten(torch.tensor(r.token_advantages), total, squares, count).tolist()

    def loss(self, player: Player, chunk: Sequence[PPORollout]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(r.prompt_ids, r.completion_ids) for r in chunk]
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        old, advantages = torch.zeros_like(logps), torch.zeros_like(logps)
        for i, r in enumerate(chunk):
            old[i, : len(r.old_logprobs)] = torch.tensor(r.old_logprobs, dtype=logps.dtype)
            advantages[i, : len(r.token_advantages)] = torch.tensor(r.token_advantages, dtype=logps.dtype)
        losses, clipped = ppo_clip_loss(logps, old, advantages, mask, self.config.clip)
        return losses, {"kl": sum(r.kl for r in chunk), "clip_fraction": float(clipped.sum())}
