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

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advgame_env.judges import ClassifyItem, Judge
from advgame_env.parsing import parse_response
from advgame_env.roles import ATTACKER, DEFENDER, ROLES
from algorithms.training.checkpoints import OpponentsState, SnapshotRecord, write_atomic
from algorithms.training.seed_stream import derived_seed

if TYPE_CHECKING:
    from advgame_env.game import GameConfig, Round
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
