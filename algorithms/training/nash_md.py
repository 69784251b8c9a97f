"""Nash-MD (Munos et al. 2023, "Nash Learning from Human Feedback", arXiv 2312.00886), in its
policy-gradient form Nash-MD-PG, on the game's judge pairs.

Each group of two samples (an attacker's two rewrites of a seed; the defender's two answers to
one prompt) is a pair: the first sample y is drawn from the learner π_θ, the second, the
opponent y', from the geometric mixture π_mix ∝ π_θ^(1−β)·π_ref^β of the learner and the
reference (β = ``mixture_coef``; ``agents.hf.MixtureBackend``). The judge compares the two;
its verdict P(y ≻ y') (1 if y scored higher, 0 if lower, 1/2 on a tie) drives the update of y:

    loss = −[P(y ≻ y') − 1/2 − τ·(log π_θ(y) − log π_ref(y))] · log π_θ(y)   (the bracket held fixed)

(``losses.nash_md_loss``): the gradient of P(π_θ ≻ π_mix) − τ·KL(π_θ ‖ π_ref). β = 0 plays the
learner against itself, β = 1 against the reference. The reference is the initial model.

The mixture is sampled token by token from two models' logits, which only the in-process HF
backend can do: with ``rollout.backend: vllm`` the first step stops with the reason.

Written only through the public interface (``algorithms.training.algorithm``), as a user would;
its section, as every built-in algorithm's, is in ``algorithms.algorithm_configs``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from advgame_env.game import Game, Round
from advgame_env.protocol import GenerationBackend
from agents.hf import Chat, Generation, HFBackend, MixtureBackend, check_mixable
from algorithms.algorithm_configs import NashMDConfig
from algorithms.config import ConfigError
from algorithms.training.algorithm import Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.distributed import Dist
from algorithms.training.losses import nash_md_loss
from algorithms.training.players import Player

PAIRING = (
    "nash_md pairs one learner sample with one mixture sample per group: it needs game.num_attacks: 2, "
    "game.num_responses: 2 and sampling (rollout.temperature > 0)"
)


@dataclass
class NashMDPair:
    """The learner's sample of a pair, and the judge's verdict against the mixture's sample."""

    role: str
    prompt_ids: list[int]
    completion_ids: list[int]  # y ~ π_θ
    preference: float  # P(y ≻ y'): 1, 0 or 1/2


@dataclass
class PairedBackend:
    """Generates each pair of identical chats (``Policy.sample`` asks for a group's samples one
    after the other) as one learner sample, then one mixture sample; scores as the learner."""

    learner: HFBackend
    mixture: MixtureBackend

    def generate(
        self,
        chats: Sequence[Chat],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> list[Generation]:
        if len(chats) % 2 or any(chats[i] != chats[i + 1] for i in range(0, len(chats), 2)):
            raise ConfigError(PAIRING)
        first = self.learner.generate(
            chats[0::2], max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, adapter=adapter
        )
        second = self.mixture.generate(
            chats[1::2],
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=None if seed is None else seed + 1,
        )
        return [g for pair in zip(first, second, strict=True) for g in pair]

    def score(self, chats: Sequence[Chat], continuations: Sequence[str], *, adapter: str | None = None) -> list[float]:
        return self.learner.score(chats, continuations, adapter=adapter)


def verdict(reward: float, opponent: float) -> float:
    """P(y ≻ y') from the judge's pair: the two rewards of one comparison."""
    return 1.0 if reward > opponent else 0.0 if reward < opponent else 0.5


@register("nash_md")
class NashMD(Algorithm[NashMDPair]):
    config_class = NashMDConfig
    config: NashMDConfig
    metric_names = ("preference", "log_ratio")  # the learner samples; the initial model is the reference

    def rollout_backend(self, role: str, player: Player, backend: GenerationBackend) -> GenerationBackend:
        try:
            hf = check_mixable(backend, f"{role}'s rollout backend")
        except TypeError as error:
            raise ConfigError(f"algorithm nash_md: {error}") from None
        mixture = MixtureBackend(
            functools.partial(player.active, "learner"),
            functools.partial(player.active, self.reference),
            player.tokenizer,
            beta=self.config.mixture_coef,
            batch_size=hf.batch_size,
            max_context=hf.max_context,
        )
        return PairedBackend(hf, mixture)

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str],
        dist: Dist,
    ) -> list[NashMDPair]:
        if game.config.num_attacks != 2 or game.config.num_responses != 2:
            raise ConfigError(PAIRING)
        groups: dict[tuple[str, tuple[int, ...]], list[Rollout]] = {}
        for r in rollouts(rounds, game, tokenizers, prefills=prefills):  # each group's samples in order
            groups.setdefault((r.role, r.group), []).append(r)
        # a group with an excluded sample (judge failure: no reward) has no verdict: no pair
        return [
            NashMDPair(mine.role, mine.prompt_ids, mine.completion_ids, verdict(mine.reward, theirs.reward))
            for mine, theirs in (pair for pair in groups.values() if len(pair) == 2)
        ]

    def loss(self, player: Player, chunk: Sequence[NashMDPair]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(p.prompt_ids, p.completion_ids) for p in chunk]
        with torch.no_grad():
            ref_logps, mask = policy_logprobs(player, self.reference, sequences, self.max_context)
            ref = (ref_logps * mask).sum(-1)
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        policy = (logps * mask).sum(-1)
        preference = torch.tensor([p.preference for p in chunk], dtype=policy.dtype, device=policy.device)
        losses = nash_md_loss(policy, ref, preference, self.config.tau)
        log_ratio = (policy - ref).detach()
        return losses, {"preference": float(preference.sum()), "log_ratio": float(log_ratio.sum())}
