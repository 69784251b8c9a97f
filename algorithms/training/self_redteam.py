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

In conversations (``game.turns > 1``) an example is a player's whole trajectory, its own turns
(``conversations.conversation_rollouts``): the KL penalty runs over all of them, and turn t's
tokens are credited the conversation's reward (``credit: trajectory``) or the reward of turns
t.. only (``reward_to_go``, from the Self-RedTeam rule's per-turn rewards); a trajectory's loss is
the token mean over its turns, so "sequence" weighting counts a trajectory as one sequence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from advgame_env.conversation import ConversationGame
from advgame_env.game import Game, Round
from algorithms.algorithm_configs import SelfRedTeamConfig
from algorithms.training.algorithm import ROLES, Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.conversations import Trajectory, conversation_rollouts, rewards_to_go, sum_by_trajectory
from algorithms.training.distributed import Dist
from algorithms.training.losses import ppo_clip_loss, turn_returns, whiten
from algorithms.training.players import Player


@dataclass
class PPORollout(Rollout):
    """A rollout with what ``SelfRedTeam.prepare`` computes before the update: the learner's
    log-probs (π_old), each token's whitened advantage, and the summed log-ratio to the reference."""

    old_logprobs: list[float] = field(default_factory=list)
    token_advantages: list[float] = field(default_factory=list)
    kl: float = 0.0

    def turns(self) -> list[tuple[list[int], list[int]]]:
        return [(self.prompt_ids, self.completion_ids)]


@dataclass
class PPOTrajectory(Trajectory):
    """A player's own turns in one conversation, with ``PPORollout``'s figures over their tokens
    (concatenated in turn order) and each turn's credit (``SelfRedTeam.credits``)."""

    old_logprobs: list[float] = field(default_factory=list)
    token_advantages: list[float] = field(default_factory=list)
    kl: float = 0.0

    def turns(self) -> list[tuple[list[int], list[int]]]:
        return [(s.prompt_ids, s.completion_ids) for s in self.segments]


PPOExample = PPORollout | PPOTrajectory


@register("self_redteam")
class SelfRedTeam(Algorithm[PPOExample]):
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
    ) -> list[PPOExample]:
        if isinstance(game, ConversationGame):
            return [
                PPOTrajectory(**vars(t)) for t in conversation_rollouts(rounds, game, tokenizers, prefills=prefills)
            ]
        return [PPORollout(**vars(r)) for r in rollouts(rounds, game, tokenizers, prefills=prefills)]

    def weight(self, example: PPOExample) -> float:
        # the loss is a sequence's token mean: weighted by its tokens, Σ w·loss / Σ w is the token mean
        return float(sum(len(c) for _, c in example.turns())) if self.config.weighting == "token" else 1.0

    def credits(self, example: PPOExample) -> list[float]:
        """Each turn's share of the game's reward (one turn: the reward)."""
        if isinstance(example, PPOTrajectory) and self.config.credit == "reward_to_go":
            return rewards_to_go(example)
        return [example.reward] * len(example.turns())

    def prepare(self, player: Player, batch: Sequence[PPOExample], dist: Dist, chunk: int) -> None:
        """Old and reference log-probs, per-token returns and per-role whitened advantages.

        Called before the batch's first optimizer step: the learner is then the policy that
        generated the batch (the weights the rollout engine was synced with), so its log-probs
        are π_old, as the reference's actor forward at experience time."""
        sequences = [turn for r in batch for turn in r.turns()]
        old: list[torch.Tensor] = []  # per turn, its completion's tokens
        ref: list[torch.Tensor] = []
        for start in range(0, len(sequences), chunk):
            part = sequences[start : start + chunk]
            with torch.no_grad():
                old_part, mask = policy_logprobs(player, "learner", part, self.max_context)
                ref_part, _ = policy_logprobs(player, self.reference, part, self.max_context)
            for i in range(len(part)):
                n = int(mask[i].sum())  # every completion token (generations fit the context)
                old.append(old_part[i, :n])
                ref.append(ref_part[i, :n])
        row = 0
        for r in batch:
            turns = len(r.turns())
            r_old, r_ref = torch.cat(old[row : row + turns]), torch.cat(ref[row : row + turns])
            lengths = [t.numel() for t in old[row : row + turns]]
            row += turns
            r.old_logprobs = r_old.tolist()
            returns = turn_returns(r_old, r_ref, self.credits(r), lengths, self.config.reward_kl_beta)
            r.token_advantages = returns.tolist()
            r.kl = float((r_old - r_ref).sum())
        for role in ROLES:  # every process takes part, with or without samples
            mine = [r for r in batch if r.role == role]
            values = torch.tensor([a for r in mine for a in r.token_advantages], dtype=torch.float64)
            total, squares, count = dist.sum([float(values.sum()), float((values**2).sum()), len(values)])
            for r in mine:
                r.token_advantages = whiten(torch.tensor(r.token_advantages), total, squares, count).tolist()

    def loss(self, player: Player, chunk: Sequence[PPOExample]) -> tuple[torch.Tensor, Metrics]:
        per_example = [r.turns() for r in chunk]
        sequences = [turn for turns in per_example for turn in turns]
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        old, advantages = torch.zeros_like(logps), torch.zeros_like(logps)
        row = 0
        for r, turns in zip(chunk, per_example, strict=True):
            offset = 0  # into the example's concatenated tokens
            for _ in turns:
                n = int(mask[row].sum())
                old[row, :n] = torch.tensor(r.old_logprobs[offset : offset + n], dtype=logps.dtype)
                advantages[row, :n] = torch.tensor(r.token_advantages[offset : offset + n], dtype=logps.dtype)
                offset, row = offset + n, row + 1
        losses, clipped = ppo_clip_loss(logps, old, advantages, mask, self.config.clip)
        if len(sequences) > len(chunk):  # a trajectory's loss: the token mean over its turns
            tokens = mask.sum(-1).to(losses.dtype)
            per_trajectory = sum_by_trajectory(tokens, per_example).clamp(min=1)
            losses = sum_by_trajectory(losses * tokens, per_example) / per_trajectory
            clipped = sum_by_trajectory(clipped * tokens, per_example) / per_trajectory
        return losses, {"kl": sum(r.kl for r in chunk), "clip_fraction": float(clipped.sum())}
