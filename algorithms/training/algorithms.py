"""The training algorithms: what each one learns from a batch of played rounds.

Every algorithm runs inside the one trainer loop (``algorithms.training.trainer``) and differs only in
  * ``sampler``: whose weights play the rounds ("ema" in the MD recipes, else "learner");
  * ``reference``: the anchor of its loss ("ema", or the frozen "initial" model);
  * ``examples``: the training examples of each role from played rounds, each with a weight;
  * ``loss``: per-example losses of a chunk of examples under the player's policies.
The trainer minimises Σ weight·loss / Σ weight over a split (all processes together): the
mean over pairs for DPO/IPO, and for GRPO the paper's "mean over a group's rollouts, mean over
groups". Self-RedTeam adds ``prepare`` (log-probs before the update, whitened advantages) and
takes ``minibatches`` PPO steps per batch; it is the one algorithm whose two roles share weights.

``examples(rounds, game, tokenizer, prefills, dist)``: ``tokenizer`` is one tokenizer or a
mapping role -> tokenizer (each role's examples in its own player's tokens); ``dist`` (the
trainer's ``Dist``) for statistics over every process's batch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advgame_env.game import Game, Round
from advgame_env.roles import ATTACKER, DEFENDER
from agents.hf import token_logprobs
from algorithms.config import AlgorithmConfig
from algorithms.training.batches import PreferencePair, Rollout, preference_pairs, rollouts
from algorithms.training.losses import (
    dpo_loss,
    group_advantages,
    grpo_token_loss,
    ipo_loss,
    k3_kl,
    margin,
    ppo_clip_loss,
    reward_to_go,
    whiten,
)
from algorithms.training.players import Player, Which

Metrics = dict[str, float]


def _logprobs(player: Player, which: Which, pairs: Sequence[tuple[list[int], list[int]]], max_context: int) -> Any:
    with player.active(which) as model:
        return token_logprobs(model, pairs, pad_id=player.tokenizer.pad_token_id, max_context=max_context)


@dataclass
class PreferenceOptimization:
    """DPO or IPO on the judge's (best, worst) pairs of each group.

    AdvGame-DPO-MD / IPO-MD: the EMA policy samples and is the reference. On-policy DPO / IPO:
    the learner samples and the initial model is the reference.
    """

    loss_fn: Callable[..., torch.Tensor]
    sampler: Which
    reference: Which
    beta: float = 0.1
    clip_rejected_to_chosen_length: bool = True
    max_context: int = 2048

    metric_names = ("margin", "accuracy")  # per-example sums returned by loss()

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizer: Any,
        prefills: Mapping[str, str] | None = None,
        dist: Any = None,
    ) -> list[PreferencePair]:
        clip = self.clip_rejected_to_chosen_length
        return preference_pairs(rounds, game, tokenizer, clip_rejected_to_chosen_length=clip, prefills=prefills)

    def weight(self, example: PreferencePair) -> float:
        return 1.0

    def loss(self, player: Player, pairs: Sequence[PreferencePair]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
        with torch.no_grad():
            ref_logps, mask = _logprobs(player, self.reference, sequences, self.max_context)
            ref = (ref_logps * mask).sum(-1)
        logps, mask = _logprobs(player, "learner", sequences, self.max_context)
        policy = (logps * mask).sum(-1)
        n = len(pairs)
        losses = self.loss_fn(policy[:n], policy[n:], ref[:n], ref[n:], beta=self.beta)
        h = margin(policy[:n], policy[n:], ref[:n], ref[n:]).detach()
        return losses, {"margin": float(h.sum()), "accuracy": float((h > 0).float().sum())}


@dataclass
class GRPO:
    """Pointwise GRPO: advantage = reward − mean reward, k3 KL to the initial model, and a
    truncated, detached importance ratio against the sampler's log-probs.

    As the reference, only error-free rollouts are trained: a failed one (malformed, over-long:
    reward −1) enters the baseline and its group's size, but is masked out of the loss.
    ``batch_mean`` is the mean of a role's rewards over every process's batch of the split.
    """

    sampler: Which = "learner"
    kl_beta: float = 0.1
    tis_cap: float | None = 2.0
    baseline: str = "batch_mean"
    max_context: int = 2048
    reference: Which = "initial"

    metric_names = ("kl", "advantage")

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizer: Any,
        prefills: Mapping[str, str] | None = None,
        dist: Any = None,
    ) -> list[Rollout]:
        played = rollouts(rounds, game, tokenizer, prefills=prefills)
        out = []
        for role in (ATTACKER, DEFENDER):  # every process sums both roles, with or without rollouts
            mine = [r for r in played if r.role == role]
            rewards, groups = [r.reward for r in mine], [r.group for r in mine]
            mean = None
            if self.baseline == "batch_mean" and dist is not None:
                total, count = dist.sum([sum(rewards), len(rewards)])
                mean = total / count if count else 0.0
            advantages = group_advantages(rewards, self.baseline, groups, mean=mean)  # type: ignore[arg-type]
            sizes = Counter(groups)
            for r, advantage in zip(mine, advantages, strict=True):
                assert advantage is not None  # rollouts() keeps scored samples only
                r.advantage, r.group_size, r.masked = advantage, sizes[r.group], r.failed
                out.append(r)
        return out

    def weight(self, example: Rollout) -> float:
        return 1.0 / example.group_size  # mean over a group's rollouts; the normaliser counts groups

    def loss(self, player: Player, batch: Sequence[Rollout]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(r.prompt_ids, r.completion_ids) for r in batch]
        with torch.no_grad():
            ref_logps, _ = _logprobs(player, self.reference, sequences, self.max_context)
        logps, mask = _logprobs(player, "learner", sequences, self.max_context)
        sampler = None
        if self.tis_cap is not None and all(r.sampler_logprobs is not None for r in batch):
            sampler = torch.full_like(logps, math.nan)
            for i, r in enumerate(batch):
                values = r.sampler_logprobs or []
                sampler[i, : len(values)] = torch.tensor(values, dtype=logps.dtype)
            # Tokens without a sampler log-prob (the appended end-of-turn token) get ratio 1.
            sampler = torch.where(torch.isnan(sampler), logps.detach(), sampler)
        advantages = torch.tensor([r.advantage for r in batch], dtype=logps.dtype, device=logps.device)
        losses = grpo_token_loss(logps, sampler, ref_logps, advantages, mask, self.kl_beta, self.tis_cap)
        kl = (k3_kl(logps.detach(), ref_logps) * mask).sum(-1)
        return losses, {"kl": float(kl.sum()), "advantage": float(advantages.sum())}


@dataclass
class SelfRedTeam:
    """REINFORCE++ (Self-RedTeam): one shared policy learns from both roles' samples at once.

    Each sample's scalar game reward sits on its last token; every token also gets the k1 KL
    penalty −β·(log π_old − log π_ref) with the initial model as reference; the advantage of a
    token is its reward-to-go (γ = 1), whitened over all tokens of the same role (all
    processes, harmful and benign seeds together, as the reference's replay buffer). The loss
    is PPO's clipped surrogate (ε = 0.2), token mean per sequence; the trainer prepares the
    whole step's batch once (both splits), before any optimizer step, so π_old is the policy
    that played the rounds, then takes ``minibatches`` optimizer steps on shuffled minibatches
    that mix roles and seed types; the clip matters after the first.

    ``weighting``: "token" (the reference's runs, which pack samples: a minibatch's loss is
    the mean over all its tokens, so longer samples weigh more) or "sequence" (each
    sequence's token mean, then the mean over sequences: OpenRLHF without packing).
    """

    sampler: Which = "learner"
    reference: Which = "initial"
    kl_beta: float = 0.01
    clip: float = 0.2
    minibatches: int = 4
    max_context: int = 2048
    weighting: str = "token"
    metric_names = ("kl", "clip_fraction")

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizer: Any,
        prefills: Mapping[str, str] | None = None,
        dist: Any = None,
    ) -> list[Rollout]:
        return rollouts(rounds, game, tokenizer, prefills=prefills)

    def weight(self, example: Rollout) -> float:
        # the loss is a sequence's token mean: weighted by its tokens, Σ w·loss / Σ w is the token mean
        return float(len(example.completion_ids)) if self.weighting == "token" else 1.0

    def prepare(self, player: Player, batch: Sequence[Rollout], dist: Any, chunk: int) -> None:
        """Old and reference log-probs, per-token returns and per-role whitened advantages.

        Called before the batch's first optimizer step: the learner is then the policy that
        generated the batch (the weights the rollout engine was synced with), so its log-probs
        are π_old, as the reference's actor forward at experience time."""
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            sequences = [(r.prompt_ids, r.completion_ids) for r in part]
            with torch.no_grad():
                old, mask = _logprobs(player, "learner", sequences, self.max_context)
                ref, _ = _logprobs(player, self.reference, sequences, self.max_context)
            for i, r in enumerate(part):
                n = int(mask[i].sum())  # every completion token (generations fit the context)
                r.old_logprobs = old[i, :n].tolist()
                r.token_advantages = reward_to_go(old[i, :n], ref[i, :n], r.reward, self.kl_beta).tolist()
                r.kl = float((old[i, :n] - ref[i, :n]).sum())
        for role in (ATTACKER, DEFENDER):  # every process takes part, with or without samples
            mine = [r for r in batch if r.role == role]
            values = torch.tensor([a for r in mine for a in r.token_advantages], dtype=torch.float64)
            total, squares, count = dist.sum([float(values.sum()), float((values**2).sum()), len(values)])
            for r in mine:
                r.token_advantages = whiten(torch.tensor(r.token_advantages), total, squares, count).tolist()

    def loss(self, player: Player, batch: Sequence[Rollout]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(r.prompt_ids, r.completion_ids) for r in batch]
        logps, mask = _logprobs(player, "learner", sequences, self.max_context)
        old, advantages = torch.zeros_like(logps), torch.zeros_like(logps)
        for i, r in enumerate(batch):
            old[i, : len(r.old_logprobs)] = torch.tensor(r.old_logprobs, dtype=logps.dtype)
            advantages[i, : len(r.token_advantages)] = torch.tensor(r.token_advantages, dtype=logps.dtype)
        losses, clipped = ppo_clip_loss(logps, old, advantages, mask, self.clip)
        return losses, {"kl": sum(r.kl for r in batch), "clip_fraction": float(clipped.sum())}


Algorithm = PreferenceOptimization | GRPO | SelfRedTeam


def build_algorithm(cfg: AlgorithmConfig, max_context: int) -> Algorithm:
    """The algorithm object of a config (``sequential`` trains with its ``base`` algorithm).

    The config has filled in every knob the algorithm reads (its paper's value where unset)."""
    name = cfg.base if cfg.name == "sequential" else cfg.name
    if name == "self_redteam":
        assert cfg.reward_kl_beta is not None and cfg.clip is not None and cfg.minibatches is not None
        assert cfg.weighting is not None
        if cfg.minibatches < 1:
            raise ValueError("algorithm.minibatches must be at least 1")
        return SelfRedTeam(
            kl_beta=cfg.reward_kl_beta,
            clip=cfg.clip,
            minibatches=cfg.minibatches,
            max_context=max_context,
            weighting=cfg.weighting,
        )
    assert cfg.sampler is not None and cfg.reference is not None
    if name == "grpo":
        assert cfg.kl_beta is not None and cfg.baseline is not None
        tis_cap = cfg.tis_cap if cfg.tis else None
        return GRPO(cfg.sampler, cfg.kl_beta, tis_cap, cfg.baseline, max_context, cfg.reference)
    assert cfg.beta is not None and cfg.clip_rejected_to_chosen_length is not None
    loss_fn = dpo_loss if name in ("dpo", "advgame_dpo_md") else ipo_loss
    return PreferenceOptimization(
        loss_fn, cfg.sampler, cfg.reference, cfg.beta, cfg.clip_rejected_to_chosen_length, max_context
    )


def shares_one_policy(algorithm: Algorithm) -> bool:
    """Self-play with one set of weights for both roles (Self-RedTeam)."""
    return isinstance(algorithm, SelfRedTeam)


def minibatches(algorithm: Algorithm) -> int:
    """Optimizer steps per player per batch of rounds."""
    return algorithm.minibatches if isinstance(algorithm, SelfRedTeam) else 1


def copies_needed(algorithm: Algorithm) -> set[str]:
    """Which weight copies (besides the learner) the players must keep."""
    return {w for w in (algorithm.sampler, algorithm.reference) if w != "learner"}
