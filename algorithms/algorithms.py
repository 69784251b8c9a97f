"""The training algorithms: what each one learns from a batch of played rounds.

Every algorithm runs inside the one trainer loop (``algorithms.trainer``) and differs only in
  * ``sampler``: whose weights play the rounds ("ema" in the MD recipes, else "learner");
  * ``reference``: the anchor of its loss ("ema", or the frozen "initial" model);
  * ``examples``: the training examples of each role from played rounds, each with a weight;
  * ``loss``: per-example losses of a chunk of examples under the player's policies.
The trainer minimises Σ weight·loss / Σ weight over a split (all processes together): the
mean over pairs for DPO/IPO, and for GRPO the paper's "mean over a group's rollouts, mean over
groups".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advgame_env.game import Game, Round
from agents.hf import token_logprobs
from algorithms.batches import PreferencePair, Rollout, preference_pairs, rollouts
from algorithms.config import AlgorithmConfig
from algorithms.losses import dpo_loss, group_advantages, grpo_token_loss, ipo_loss, margin
from algorithms.players import Player, Which

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

    def examples(self, rounds: Sequence[Round], game: Game, tokenizer: Any) -> list[PreferencePair]:
        return preference_pairs(
            rounds, game, tokenizer, clip_rejected_to_chosen_length=self.clip_rejected_to_chosen_length
        )

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
    truncated, detached importance ratio against the sampler's log-probs."""

    sampler: Which = "learner"
    kl_beta: float = 0.1
    tis_cap: float | None = 2.0
    baseline: str = "batch_mean"
    max_context: int = 2048
    reference: Which = "initial"

    metric_names = ("kl", "advantage")

    def examples(self, rounds: Sequence[Round], game: Game, tokenizer: Any) -> list[Rollout]:
        out = []
        for role_rollouts in _by_role(rollouts(rounds, game, tokenizer)):
            groups = [r.group for r in role_rollouts]
            advantages = group_advantages([r.reward for r in role_rollouts], self.baseline, groups)  # type: ignore[arg-type]
            sizes = {g: groups.count(g) for g in groups}
            for r, advantage in zip(role_rollouts, advantages, strict=True):
                assert advantage is not None  # rollouts() keeps scored samples only
                r.advantage, r.group_size = advantage, sizes[r.group]
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
        kl = ((torch.exp(ref_logps - logps.detach()) - (ref_logps - logps.detach()) - 1) * mask).sum(-1)
        return losses, {"kl": float(kl.sum()), "advantage": float(advantages.sum())}


def _by_role(items: Sequence[Any]) -> list[list[Any]]:
    roles = dict.fromkeys(item.role for item in items)
    return [[item for item in items if item.role == role] for role in roles]


Algorithm = PreferenceOptimization | GRPO

# name -> (loss family, default sampler, default reference)
_RECIPES: dict[str, tuple[str, Which, Which]] = {
    "advgame_dpo_md": ("dpo", "ema", "ema"),
    "advgame_ipo_md": ("ipo", "ema", "ema"),
    "dpo": ("dpo", "learner", "initial"),
    "ipo": ("ipo", "learner", "initial"),
    "grpo": ("grpo", "learner", "initial"),
}


def build_algorithm(cfg: AlgorithmConfig, max_context: int) -> Algorithm:
    if cfg.name not in _RECIPES:
        raise ValueError(f"unknown algorithm {cfg.name!r}; known: {', '.join(_RECIPES)}")
    family, sampler, reference = _RECIPES[cfg.name]
    sampler = sampler if cfg.sampler == "auto" else cfg.sampler
    reference = reference if cfg.reference == "auto" else cfg.reference
    if sampler == "initial":
        raise ValueError("algorithm.sampler must be 'ema' or 'learner'")
    if family == "grpo":
        return GRPO(sampler, cfg.kl_beta, cfg.tis_cap, cfg.baseline, max_context, reference)
    loss_fn = dpo_loss if family == "dpo" else ipo_loss
    return PreferenceOptimization(
        loss_fn, sampler, reference, cfg.beta, cfg.clip_rejected_to_chosen_length, max_context
    )


def copies_needed(algorithm: Algorithm) -> set[str]:
    """Which weight copies (besides the learner) the players must keep."""
    return {w for w in (algorithm.sampler, algorithm.reference) if w != "learner"}
