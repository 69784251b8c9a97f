"""Losses of the game's training algorithms, as small pure functions on tensors.

Preference losses (DPO, IPO) take SUMMED sequence log-probs, one value per pair, of the
trained policy and of the reference (the initial model on-policy, the EMA policy in the
"MD" recipe). The GRPO loss takes per-token log-probs. Every loss is returned per pair or
per rollout: the caller chooses the reduction (the paper sums, then divides by a count).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- preference losses


def margin(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
) -> torch.Tensor:
    """h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)], per pair.

    Logged as the "DPO margin": how much more the policy prefers the chosen sample than the
    reference does. The reference is a constant target, so no gradient flows into it.
    """
    return (policy_chosen - ref_chosen.detach()) - (policy_rejected - ref_rejected.detach())


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO: −log σ(β·h) per pair. logsigmoid keeps it finite for large |h|."""
    h = margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return -F.logsigmoid(beta * h)


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """IPO: (h − 1/(2β))² per pair.

    β plays the role of IPO's τ: it only sets the target margin 1/(2β) (5 nats at β = 0.1);
    unlike DPO there is no β factor inside h. Past the target the loss pushes h back down,
    which is what bounds IPO's update where DPO keeps pushing the margin up.
    """
    h = margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return (h - 1.0 / (2.0 * beta)) ** 2


# ----------------------------------------------------------------------------- GRPO


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π || π_ref): exp(r − l) − (r − l) − 1 with r = ref, l = π.

    Non-negative (e^x ≥ 1 + x), zero exactly where the two log-probs agree, unbiased for
    samples drawn from π, and with a much lower variance than the plain log-ratio.
    """
    delta = ref_logp.detach() - logp
    return torch.exp(delta) - delta - 1.0


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp_rollout: torch.Tensor | None,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl_beta: float = 0.1,
    tis_cap: float | None = 2.0,
) -> torch.Tensor:
    """GRPO loss per rollout, shape [batch], from per-token log-probs of shape [batch, tokens].

    logp: the trained policy's log-probs of the sampled tokens (differentiable).
    old_logp_rollout: the log-probs the sampler (vLLM) reported; ``None`` or ``tis_cap=None``
        turns truncated importance sampling off (the off-policy GRPO config runs without it).
    ref_logp: the fixed initial model's log-probs, for the KL term.
    advantages: one per rollout (reward minus baseline, see ``group_advantages``).
    mask: 1 on completion tokens, 0 on padding.

    Aggregation as the paper: summed over tokens, no length normalisation; the caller takes
    the mean over a group's rollouts and the sum or mean over groups.
    """
    keep = mask.bool()
    # Zero the padding first: garbage there (e.g. -inf) would give NaN through exp, even
    # behind a later mask, because 0 · ∞ is NaN in the backward pass as well.
    zero = torch.zeros_like(logp)
    logp = torch.where(keep, logp, zero)
    ref_logp = torch.where(keep, ref_logp, zero)

    # exp(l − sg(l)) equals 1 but has gradient ∇l: the REINFORCE term Â·∇log π, written so
    # that the loss value stays an interpretable "−Â per token".
    surrogate = torch.exp(logp - logp.detach()) * advantages.unsqueeze(-1)
    if old_logp_rollout is not None and tis_cap is not None:
        # Truncated importance ratio π/π_vLLM corrects the sampler/trainer mismatch. It is a
        # per-token WEIGHT, so it is detached; the reference code forgot the detach, which adds
        # its own gradient (ratio·∇l) to the surrogate's and doubles the step on unclipped tokens.
        old = torch.where(keep, old_logp_rollout, zero)
        ratio = torch.exp(logp.detach() - old).clamp(max=tis_cap)
        surrogate = surrogate * ratio
    per_token = -surrogate + kl_beta * k3_kl(logp, ref_logp)
    return torch.where(keep, per_token, zero).sum(-1)


Baseline = Literal["batch_mean", "group_mean"]


def group_advantages(
    rewards: Sequence[float | None],
    baseline: Baseline = "batch_mean",
    groups: Sequence[Hashable] | None = None,
    mean: float | None = None,
) -> list[float | None]:
    """Advantage = reward − mean reward, with no std scaling.

    ``batch_mean`` subtracts the mean over every valid reward of the batch: the paper's
    ``across_seeds`` when the batch is the global one. A process holding only its share of it
    passes ``mean``, the mean over every process's rewards (else its own mean is taken, the
    reference's per-rank ``per_seed``). ``group_mean`` subtracts the mean within each rollout's
    group (``groups[i]`` is rollout i's group key). Excluded rewards (None) take no part in any
    mean and get advantage None: the caller drops them.
    """
    if baseline == "batch_mean":
        keys: Sequence[Hashable] = [None] * len(rewards)  # one group: the whole batch
    elif baseline == "group_mean":
        if groups is None or len(groups) != len(rewards):
            raise ValueError("the group_mean baseline needs one group key per reward")
        keys = groups
    else:
        raise ValueError(f"baseline must be 'batch_mean' or 'group_mean', not {baseline!r}")
    totals: dict[Hashable, list[float]] = {}
    for key, reward in zip(keys, rewards, strict=True):
        if reward is not None:
            totals.setdefault(key, []).append(reward)
    means = {key: sum(values) / len(values) for key, values in totals.items()}
    if baseline == "batch_mean" and mean is not None:
        means = {None: mean}
    return [None if r is None else r - means[k] for k, r in zip(keys, rewards, strict=True)]


# ----------------------------------------------------------------------------- REINFORCE++ (Self-RedTeam)


def reward_to_go(old_logp: torch.Tensor, ref_logp: torch.Tensor, reward: float, kl_beta: float) -> torch.Tensor:
    """Per-token returns of one sequence (γ = 1): the game reward sits on the last token and
    every token pays the k1 KL penalty −β·(log π_old − log π_ref); a token's return is the sum
    of the rewards from it to the end."""
    return turn_returns(old_logp, ref_logp, [reward], [old_logp.numel()], kl_beta)


def turn_returns(
    old_logp: torch.Tensor, ref_logp: torch.Tensor, credits: Sequence[float], lengths: Sequence[int], kl_beta: float
) -> torch.Tensor:
    """Per-token returns (γ = 1) of a player's turns in one conversation, their tokens
    concatenated (``lengths`` each): every token pays the k1 KL penalty, of its own turn and of
    the later ones, and turn t's tokens are credited ``credits[t]`` (the conversation's reward,
    or the reward of turns t.. only). The credit sits on each turn's last token as the step
    G_t − G_{t+1}, so that the sum from any token to the end adds its own turn's G_t; one turn is
    ``reward_to_go``'s sequence."""
    token_rewards = -kl_beta * (old_logp - ref_logp)
    ends = torch.tensor(lengths).cumsum(0).tolist()
    for t, end in enumerate(ends):
        later = credits[t + 1] if t + 1 < len(credits) else 0.0
        if end:  # a turn with no token before it has nothing to credit
            token_rewards[end - 1] += credits[t] - later
    return token_rewards.flip(0).cumsum(0).flip(0)


def whiten(values: torch.Tensor, total: float, squares: float, count: float, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std with the mean and std of a population given by its sums (so the
    population can span processes)."""
    mean = total / count
    std = max(squares / count - mean * mean, 0.0) ** 0.5
    return (values - mean) / (std + eps)


def ppo_clip_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per sequence (token mean), and each sequence's clipped share.

    −min(ρ·Â, clip(ρ, 1 − ε, 1 + ε)·Â) with ρ = π/π_old per token: once a token's ratio has
    left [1 − ε, 1 + ε] in the direction its advantage favours, it stops pulling.
    """
    keep = mask.bool()
    ratio = torch.exp(torch.where(keep, logp - old_logp, torch.zeros_like(logp)))
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    tokens = mask.sum(-1).clamp(min=1)
    clipped = (((ratio - 1).abs() > clip).float() * mask).sum(-1) / tokens
    return -(surrogate * mask).sum(-1) / tokens, clipped.detach()


# ----------------------------------------------------------------------------- RAE (SPIRAL)


def role_conditioned_advantages(
    rewards: Sequence[float],
    roles: Sequence[str],
    baselines: Mapping[str, float],
    alpha: float = 0.95,
    means: Mapping[str, float] | None = None,
) -> tuple[list[float], dict[str, float]]:
    """SPIRAL's role-conditioned advantage estimation: A = r − b_role, with one running
    baseline per role. Returns the advantages and the baselines after this batch.

    Each role's baseline moves once per batch, b_role ← α·b_role + (1 − α)·m_role, where m_role
    is the mean reward of the role's samples in the batch (``means[role]``: the mean over every
    process's batch, when the caller holds only a share of it; else this batch's own). An
    advantage is taken against the baseline as it stood BEFORE the batch, so a sample never
    enters its own baseline; a role seen for the first time starts at its batch mean (then that
    batch's advantages are r − m_role, as a batch-mean baseline would give). A role without
    samples in the batch keeps its baseline.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"the RAE decay alpha must lie in [0, 1), got {alpha}")
    if len(rewards) != len(roles):
        raise ValueError(f"{len(rewards)} rewards but {len(roles)} roles")
    if means is None:
        totals: dict[str, list[float]] = {}
        for role, reward in zip(roles, rewards, strict=True):
            totals.setdefault(role, []).append(reward)
        means = {role: sum(values) / len(values) for role, values in totals.items()}
    before = {role: baselines.get(role, mean) for role, mean in means.items()} | {
        role: b for role, b in baselines.items() if role not in means
    }
    advantages = [reward - before[role] for reward, role in zip(rewards, roles, strict=True)]
    after = dict(before)
    for role, mean in means.items():
        after[role] = alpha * before[role] + (1.0 - alpha) * mean
    return advantages, after


# ----------------------------------------------------------------------------- Nash-MD


def nash_md_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, preference: torch.Tensor, tau: float
) -> torch.Tensor:
    """Nash-MD-PG (Munos et al. 2023, §7) per pair, from SUMMED sequence log-probs of the
    learner's sample y: the policy gradient of P(π_θ ≻ π_mix) − τ·KL(π_θ ‖ π_ref),

        ∇ ≈ [P(y ≻ y') − 1/2 − τ·(log π_θ(y) − log π_ref(y))] · ∇ log π_θ(y),

    with y' the opponent sample drawn from the geometric mixture (held fixed: no gradient
    flows through the opponent). The bracket is a constant weight; 1/2 is the baseline of a
    preference (a tie), so a draw does not move the policy. The value returned is −bracket
    (the exp(l − sg(l)) = 1 form of the REINFORCE term), so the loss reads as a negative advantage.
    """
    log_ratio = (policy_logps - ref_logps).detach()
    weight = preference - 0.5 - tau * log_ratio
    return -weight * torch.exp(policy_logps - policy_logps.detach())
