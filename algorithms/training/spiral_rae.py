"""Role-conditioned self-play (SPIRAL, Liu et al. 2025, arXiv 2506.24119): one shared policy plays
both roles and learns by REINFORCE, each sample's advantage taken against a running baseline of
its own role (role-conditioned advantage estimation, RAE; ``losses.role_conditioned_advantages``).

SPIRAL keeps one baseline per game and role; here a "game" is the seed's label (harmful and
benign seeds pay by opposite rules, so their rewards have different means), unless
``per_label: false`` keys the baselines by role alone. The baselines are the algorithm's state:
every checkpoint saves them and a resumed run continues from them.

Written only through the public interface (``algorithms.training.algorithm``), as a user would;
its section, as every built-in algorithm's, is in ``algorithms.algorithm_configs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advgame_env.game import Game, Round
from advgame_env.seeds import Label
from algorithms.algorithm_configs import SpiralRAEConfig
from algorithms.config import AlgorithmConfig
from algorithms.training.algorithm import ROLES, Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.distributed import Dist
from algorithms.training.losses import grpo_token_loss, k3_kl, role_conditioned_advantages
from algorithms.training.players import Player, Which


@dataclass
class RAERollout(Rollout):
    """A rollout with its role-conditioned advantage and the baseline it was taken against."""

    advantage: float = 0.0
    baseline: float = 0.0


@register("spiral_rae")
class SpiralRAE(Algorithm[RAERollout]):
    config_class = SpiralRAEConfig
    config: SpiralRAEConfig
    shares_policy = True  # one policy, both roles; both splits' samples in one update
    metric_names = ("advantage", "baseline", "kl")

    def __init__(self, config: AlgorithmConfig, max_context: int = 2048) -> None:
        super().__init__(config, max_context)
        self.baselines: dict[str, float] = {}  # "<label>/<role>" (or "<role>") -> running baseline

    def reference_of(self, role: str) -> Which:
        return "initial" if self.config.kl_beta > 0 else "learner"  # "learner": no copy to keep

    def key(self, round_: Round, role: str) -> str:
        """The baseline a sample of ``role`` in ``round_`` is compared with."""
        return f"{round_.seed.label.value}/{role}" if self.config.per_label else role

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str],
        dist: Dist,
    ) -> list[RAERollout]:
        """Every scored sample with its advantage; moves the baselines of the keys it has samples
        of (the trainer calls it once per split and step, on every process)."""
        played = rollouts(rounds, game, tokenizers, prefills=prefills)
        keys = [self.key(rounds[r.group[0]], r.role) for r in played]
        rewards = [r.reward for r in played]
        # every process sums every key, in one fixed order (a process without samples of a key
        # still takes part), so the means, and the baselines, are the same everywhere
        every = self.keys()
        sums = dist.sum([v for k in every for v in _sum_count(k, keys, rewards)])
        means = {k: sums[2 * i] / sums[2 * i + 1] for i, k in enumerate(every) if sums[2 * i + 1]}
        before = {k: self.baselines.get(k, m) for k, m in means.items()}
        advantages, self.baselines = role_conditioned_advantages(
            rewards, keys, self.baselines, self.config.alpha, means
        )
        return [
            RAERollout(**vars(r), advantage=a, baseline=before[k])
            for r, k, a in zip(played, keys, advantages, strict=True)
        ]

    def keys(self) -> list[str]:
        """Every baseline a batch can move: one per (seed label, role), or per role."""
        return [f"{label.value}/{role}" for label in Label for role in ROLES] if self.config.per_label else list(ROLES)

    def loss(self, player: Player, chunk: Sequence[RAERollout]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(r.prompt_ids, r.completion_ids) for r in chunk]
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        if self.config.kl_beta > 0:
            with torch.no_grad():
                ref_logps, _ = policy_logprobs(player, "initial", sequences, self.max_context)
        else:
            ref_logps = logps.detach()
        advantages = torch.tensor([r.advantage for r in chunk], dtype=logps.dtype, device=logps.device)
        # REINFORCE: −A·Σ_t log π(y_t) per sample (summed over tokens), plus the optional k3 KL
        losses = grpo_token_loss(logps, None, ref_logps, advantages, mask, self.config.kl_beta, tis_cap=None)
        kl = (k3_kl(logps.detach(), ref_logps) * mask).sum(-1)
        return losses, {
            "advantage": float(advantages.sum()),
            "baseline": sum(r.baseline for r in chunk),
            "kl": float(kl.sum()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"baselines": dict(self.baselines)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.baselines = {str(k): float(v) for k, v in state.get("baselines", {}).items()}


def _sum_count(key: str, keys: Sequence[str], rewards: Sequence[float]) -> tuple[float, float]:
    mine = [r for k, r in zip(keys, rewards, strict=True) if k == key]
    return float(sum(mine)), float(len(mine))
