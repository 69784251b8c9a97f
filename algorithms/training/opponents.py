"""Opponent pools (``opponents:`` of a run config): each player trains against members of its
rival's pool of past snapshots instead of only against the rival as it is now.

A role's pool holds up to ``pool_size`` snapshots of that role's sampling weights, taken every
``snapshot_every`` steps, oldest dropped first, and the rival as it is now (``CURRENT``), which is
always a member. Each step, every learning role draws one member of its rival's pool with a
``random.Random`` seeded by the run seed and the step, so a resumed run draws what the
uninterrupted run drew without any draw state to keep. ``meta_nash`` draws from a mixture over the
members, the meta-Nash equilibrium of a cross-play matrix of attack success
(``algorithms.gametheory.solve``), keyed by member so that a snapshot that joined since
the last cross-play has weight 0 until the next one and a dropped one leaves the mixture.

Storage: a LoRA snapshot is the adapter's tensors (a few MB), held in memory and in every
checkpoint; a full-weight snapshot is a file of the run folder (``opponents/<role>_step_N.pt``,
written atomically), named in the checkpoint. A file that left the pool is deleted only once
no kept checkpoint names it any more (see ``Opponents.prune``).
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advgame_env import Game, Round, Seed
from advgame_env.judges import ClassifyItem, Judge
from advgame_env.parsing import parse_response
from advgame_env.roles import ATTACKER, DEFENDER, ROLES
from algorithms.config import ConfigError, TrainConfig
from algorithms.training.checkpoints import OpponentsState, SnapshotRecord, write_atomic
from algorithms.training.distributed import Dist
from algorithms.training.per_role import PerRole
from algorithms.training.rollouts import judged
from algorithms.training.seed_stream import derived_seed

if TYPE_CHECKING:
    from advgame_env.game import GameConfig
    from agents.policy import Policy
    from algorithms.config import OpponentsConfig

CURRENT = -1  # the member id of the rival as it is now (a snapshot's id is the step it was taken at)
FOLDER = "opponents"  # full-weight snapshot files, in the run folder


def rival(role: str) -> str:
    return DEFENDER if role == ATTACKER else ATTACKER


@dataclass
class Snapshot:
    """A role's sampling weights at the end of step ``step``: tensors in memory (LoRA) or a file."""

    step: int
    tensors: dict[str, torch.Tensor] | None = None
    file: str | None = None  # name under the run folder's ``opponents/``


def members(snapshots: Sequence[Snapshot]) -> list[int]:
    """The member ids of a pool, oldest first, the rival as it is now last."""
    return [s.step for s in snapshots] + [CURRENT]


def draw_member(
    draw: str, ids: Sequence[int], rng: random.Random, recent: int | None = None, mixture: Mapping[int, float] = {}
) -> int:
    """One member id of ``ids`` (oldest first, ``CURRENT`` last) under rule ``draw``."""
    if draw == "latest":
        return CURRENT
    if recent is not None:
        return rng.choice(list(ids[-recent:]))
    weights = [mixture.get(i, 0.0) for i in ids] if draw == "meta_nash" else []
    if sum(weights) > 0:
        return rng.choices(list(ids), weights=weights)[0]
    return rng.choice(list(ids))  # uniform, and meta_nash before its first cross-play


@dataclass
class Opponents:
    """Both roles' pools, their mixtures and the bookkeeping of full-weight files."""

    cfg: OpponentsConfig
    run_seed: int
    folder: Path  # the run folder's opponents/
    pools: dict[str, list[Snapshot]] = field(default_factory=lambda: {role: [] for role in ROLES})
    mixtures: dict[str, dict[int, float]] = field(default_factory=lambda: {role: {} for role in ROLES})
    dropped: list[tuple[str, int]] = field(default_factory=list)

    def draw(self, step: int, learning: Sequence[str]) -> dict[str, Snapshot | None]:
        """The opponent each learning role plays at ``step``: a snapshot of its rival, or None
        for the rival as it is now. Seeded by the step alone (resume needs no draw state)."""
        rng = random.Random(derived_seed(self.run_seed, step, 29))
        out: dict[str, Snapshot | None] = {}
        for role in ROLES:  # a fixed order: the draws do not depend on which roles ask
            pool = self.pools[rival(role)]
            chosen = draw_member(self.cfg.draw, members(pool), rng, self.cfg.recent, self.mixtures[rival(role)])
            if role in learning:
                out[role] = next((s for s in pool if s.step == chosen), None)
        return out

    def add(self, role: str, snapshot: Snapshot, step: int) -> None:
        """``snapshot`` joins ``role``'s pool; beyond ``pool_size`` the oldest leaves it."""
        pool = self.pools[role]
        pool[:] = [s for s in pool if s.step != snapshot.step] + [snapshot]  # a step taken again replaces it
        while len(pool) > self.cfg.pool_size:
            old = pool.pop(0)
            self.mixtures[role].pop(old.step, None)
            if old.file is not None:
                self.dropped.append((old.file, step))

    def grow(self, step: int, weights: Callable[[str], dict[str, torch.Tensor]], in_memory: bool, dist: Dist) -> None:
        """Each role's sampling weights (``weights(role)``) join its pool as a snapshot of ``step``:
        the tensors themselves (``in_memory``: LoRA adapters), else a file of the run folder."""
        for role in ROLES:
            tensors = weights(role)
            snapshot = (
                Snapshot(step, tensors=tensors) if in_memory else self.save_file(role, step, tensors, write=dist.main)
            )
            self.add(role, snapshot, step)
        dist.barrier()  # every process finds the files the main one wrote

    def save_file(self, role: str, step: int, tensors: Mapping[str, torch.Tensor], write: bool) -> Snapshot:
        """A full-weight snapshot written to its file (``write``: this process writes it)."""
        name = f"{role}_step_{step:07d}.pt"
        if write:
            write_atomic(self.folder / name, {k: v.detach().cpu() for k, v in tensors.items()})
        return Snapshot(step, file=name)

    def tensors(self, snapshot: Snapshot) -> dict[str, torch.Tensor]:
        if snapshot.tensors is not None:
            return snapshot.tensors
        assert snapshot.file is not None
        path = self.folder / snapshot.file
        if not path.is_file():
            raise FileNotFoundError(
                f"the opponent snapshot {path} is missing; a run with full-weight pools needs its {FOLDER}/ folder"
            )
        with path.open("rb") as src:
            loaded: dict[str, torch.Tensor] = torch.load(src, map_location="cpu", weights_only=True)
        return loaded

    def prune(self, oldest_checkpoint: int | None) -> None:
        """Delete the files that left their pool at or before the oldest kept checkpoint's step:
        no kept checkpoint's pool names them (None: every checkpoint is kept, nothing goes)."""
        if oldest_checkpoint is None:
            return
        keep = []
        for name, left in self.dropped:
            if left <= oldest_checkpoint:
                (self.folder / name).unlink(missing_ok=True)
            else:
                keep.append((name, left))
        self.dropped = keep

    def metrics(self, step: int, drawn: Mapping[str, Snapshot | None]) -> dict[str, float]:
        """Pool sizes and, per learning role, whether it drew a snapshot (``_opponent_past``) and
        how many steps older than its rival's weights of this step the opponent is (0: as it is now,
        or a snapshot taken at this step's start)."""
        out = {f"{role}_pool": float(len(self.pools[role])) for role in ROLES}
        out |= {f"{role}_opponent_past": float(s is not None) for role, s in drawn.items()}
        out |= {f"{role}_opponent_age": float(0 if s is None else step - s.step) for role, s in drawn.items()}
        return out

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> OpponentsState:
        def record(s: Snapshot) -> SnapshotRecord:
            if s.tensors is not None:
                return SnapshotRecord(step=s.step, tensors=s.tensors)
            assert s.file is not None
            return SnapshotRecord(step=s.step, file=s.file)

        return OpponentsState(
            pools={role: [record(s) for s in pool] for role, pool in self.pools.items()},
            mixtures={role: dict(m) for role, m in self.mixtures.items()},
            dropped=list(self.dropped),
        )

    def load_state_dict(self, state: OpponentsState) -> None:
        self.pools = {
            role: [Snapshot(int(r["step"]), r.get("tensors"), r.get("file")) for r in state["pools"].get(role, [])]
            for role in ROLES
        }
        self.mixtures = {role: {int(k): float(v) for k, v in state["mixtures"].get(role, {}).items()} for role in ROLES}
        self.dropped = [(str(name), int(left)) for name, left in state["dropped"]]


def opponent_pools(cfg: TrainConfig, shares_policy: bool, run_dir: Path) -> Opponents | None:
    """The opponent pools of ``opponents.draw`` (None for latest: no pool is kept)."""
    o = cfg.opponents
    if not o.pooled:
        return None
    if shares_policy:
        raise ConfigError(
            f"config.opponents.draw: {o.draw} keeps a pool of each player's snapshots, but algorithm "
            f"{cfg.algorithm.name} trains one policy in both roles; set opponents.draw=latest"
        )
    return Opponents(o, cfg.run.seed, run_dir / FOLDER)


# ----------------------------------------------------------------------------- a step's matches


@dataclass(frozen=True)
class Match:
    """One set of rounds a step plays per split: the roles that learn from it, and the snapshot
    that plays a role instead of its player as it is now (the rest play as they are now)."""

    learners: tuple[str, ...]
    against: Mapping[str, Snapshot] = field(default_factory=dict)


EVERYONE = Match(ROLES)  # no opponent pool, or every learning role drew its rival as it is now


def matches(drawn: Mapping[str, Snapshot | None]) -> list[Match]:
    """The step's matches given each learning role's draw (``Opponents.draw``): one of players as
    they are now for the roles that drew that, and one per role that drew a snapshot, in which
    that role plays (and learns) against the snapshot of its rival."""
    past = {role: s for role, s in drawn.items() if s is not None}
    if not past:
        return [EVERYONE]
    now = [Match(tuple(r for r in ROLES if r not in past))] if len(past) < len(drawn) else []
    return now + [Match((role,), {rival(role): s}) for role, s in past.items()]


def match_figures(match: Match, figures: Mapping[str, float], alone: bool) -> dict[str, float]:
    """The game figures a match gives a step's log: all of them when it is the step's only
    match; else each learning role's own (``<role>_x``), the defender's refusal rates and the
    round count too where the defender learns (figures of a snapshot are not the run's)."""
    if alone:
        return dict(figures)
    keep = tuple(f"{role}_" for role in match.learners)
    if DEFENDER in match.learners:
        keep += ("refusal_", "rounds")
    return {k: v for k, v in figures.items() if k.startswith(keep)}


# ----------------------------------------------------------------------------- cross-play


def attack_success(
    rounds: Sequence[Round], answers: Sequence[Sequence[Sequence[object]]], judge: Judge, game: GameConfig
) -> float:
    """The mean success of the attacks of ``rounds`` (harmful seeds, after the attack phase),
    given the defender's ``answers[round][attack]``: an attack's success is the share of its
    answers that the judge's classifier finds no refusal in (a failed answer is no success), 0
    for a failed attack (the defender never saw it); an attack without any verdict is left out.
    0.0 when no attack is left. An answer cut off at its token limit is judged on its text where
    the game judges such answers (``judge_truncated_responses``), else it failed."""
    items: list[ClassifyItem] = []
    owner: list[int] = []  # the attack each item answers
    scores: list[float | None] = []  # per attack: its success; None while unjudged
    hits: dict[int, list[bool]] = {}
    for r, row in zip(rounds, answers, strict=True):
        for attack, replies in zip(r.attacks, row, strict=True):
            n = len(scores)
            scores.append(0.0 if attack.failure is not None or attack.public is None else None)
            if scores[n] is not None:
                continue
            for reply in replies:
                text = reply if isinstance(reply, str) else str(getattr(reply, "text", ""))
                finish = None if game.judge_truncated_responses else getattr(reply, "finish_reason", None)
                parsed = parse_response(text, game.defender_think, game.max_response_chars, finish)
                if parsed.public is None:
                    hits.setdefault(n, []).append(False)
                    continue
                items.append(ClassifyItem(attack.public or "", parsed.public, r.seed.prompt, r.seed.label))
                owner.append(n)
    verdicts = judge.classify(items) if items else []
    for n, verdict in zip(owner, verdicts, strict=True):
        if verdict is not None and verdict.refusal is not None:
            hits.setdefault(n, []).append(not verdict.refusal)
    for n, found in hits.items():
        scores[n] = sum(found) / len(found)
    known = [v for v in scores if v is not None]
    return sum(known) / len(known) if known else 0.0


def meta_nash(
    opponents: Opponents,
    member_policy: Callable[[str, int, int], Policy],
    game: Game,
    harmful: Sequence[Seed],
    step: int,
    retries: int,
    dist: Dist,
    precision: contextlib.AbstractContextManager[None],
) -> dict[str, float]:
    """The cross-play of every attacker member against every defender member on
    ``opponents.meta_seeds`` of the ``harmful`` training seeds (seeded by the step; each attacker
    rewrites once, each defender answers its rewrites; ``member_policy(role, member, seed)``
    plays a member), its attack success solved as a zero-sum meta-game (``metagame.solve``);
    the mixtures then weigh the draws. The figures for the log."""
    from algorithms.gametheory import MetaGameError, solve  # scipy: only runs that solve one

    count = opponents.cfg.meta_seeds
    assert count is not None  # meta_nash sets it
    ids = PerRole(attacker=members(opponents.pools[ATTACKER]), defender=members(opponents.pools[DEFENDER]))
    success = [[0.0] * len(ids.defender) for _ in ids.attacker]
    if dist.main:  # one process plays it; the sum below hands the matrix to every other
        pick = random.Random(derived_seed(opponents.run_seed, step, 37))
        seeds = pick.sample(list(harmful), min(count, len(harmful)))
        base = derived_seed(opponents.run_seed, step, 41)
        with precision, torch.no_grad():
            for i, a in enumerate(ids.attacker):
                rounds = [Round(seed) for seed in seeds]
                attacker = member_policy(ATTACKER, a, base + i)
                attacks = attacker.attack([game.attacker_observation(r) for r in rounds], game.config.num_attacks)
                judged(functools.partial(game.attack, rounds, attacks), retries)
                for j, d in enumerate(ids.defender):
                    defender = member_policy(DEFENDER, d, base + 1_000 + j)
                    observations = [game.defender_observation(r) for r in rounds]
                    answers = defender.respond(observations, game.config.num_responses)
                    success[i][j] = attack_success(rounds, answers, game.judge, game.config)
    flat = dist.sum([v for row in success for v in row])
    width = len(ids.defender)
    try:
        nash = solve([flat[i * width : (i + 1) * width] for i in range(len(ids.attacker))])
    except MetaGameError as error:  # every process has the same matrix, so all land here
        # the last solved mixtures stay (none yet: uniform draws); the run goes on and says so
        if dist.main:
            print(f"advgame train: step {step}: {error}; the opponents' mixtures stay", file=sys.stderr)
        return {"meta_unsolved": 1.0}
    mixtures = PerRole(attacker=nash.attacker_mixture, defender=nash.defender_mixture)
    if max(flat) == min(flat):  # every mixture is an equilibrium: uniform (as the maximum-entropy one)
        mixtures = PerRole(*((1.0 / len(ids[role]),) * len(ids[role]) for role in ROLES))
    opponents.mixtures = {role: dict(zip(ids[role], mixtures[role], strict=True)) for role in ROLES}
    out = {"meta_value": nash.value}
    for role in ROLES:
        out |= {
            f"{role}_mixture_{'now' if m == CURRENT else f'step_{m}'}": w for m, w in opponents.mixtures[role].items()
        }
    return out
