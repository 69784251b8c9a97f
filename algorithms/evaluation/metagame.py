"""The meta-game over a population of attackers and defenders (cross-play, PSRO-style pools).

A cross-play matrix ``P[i, j]`` holds how often attacker ``i`` succeeds against defender ``j``
(attack success rate). Read as a two-player zero-sum game, the attackers maximise ``P`` and the
defenders minimise it. Its Nash equilibrium ``(x*, y*)`` is a mixture over each population with

    x*ᵀ P y  ≥  v  ≥  xᵀ P y*    for every mixture x of attackers and y of defenders,

where ``v = x*ᵀ P y*`` is the game's value: the success rate the best attacker mixture is sure of
against any defender mixture. Nash averaging (Balduzzi et al., 2018, "Re-evaluating evaluation")
rates each member by its payoff against the rival population's equilibrium mixture: an attacker
``i`` by ``(P y*)_i``, a defender ``j`` by ``1 - (x*ᵀ P)_j`` (its safety). Copies of one member do
not change these ratings, unlike averages over the population.

The linear program is nashpy's (``Game.linear_program``, the minimax LP of a zero-sum game); we
only orient the matrix and read the ratings off the mixtures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetaNash:
    """The equilibrium of the zero-sum meta-game and the Nash-averaged ratings."""

    attacker_mixture: tuple[float, ...]  # x*: weight of each attacker (rows)
    defender_mixture: tuple[float, ...]  # y*: weight of each defender (columns)
    value: float  # x*ᵀ P y*: the attack success rate at equilibrium
    attacker_ratings: tuple[float, ...]  # (P y*)_i: success of attacker i against the defenders' mixture
    defender_ratings: tuple[float, ...]  # 1 - (x*ᵀ P)_j: safety of defender j against the attackers' mixture

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "attacker_mixture": list(self.attacker_mixture),
            "defender_mixture": list(self.defender_mixture),
            "attacker_ratings": list(self.attacker_ratings),
            "defender_ratings": list(self.defender_ratings),
        }


def payoff_matrix(rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """A finite, non-empty 2-D float matrix, or a ValueError saying what is wrong."""
    matrix = np.asarray(rows, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"a cross-play matrix needs at least one attacker and one defender, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        bad = [tuple(int(k) for k in idx) for idx in np.argwhere(~np.isfinite(matrix))]
        raise ValueError(f"the cross-play matrix has entries that are not numbers (attacker, defender): {bad[:5]}")
    return matrix


def _clean(mixture: np.ndarray) -> np.ndarray:
    """Clip the LP's round-off (tiny negatives) and renormalise to a probability vector."""
    clipped = np.clip(np.asarray(mixture, dtype=float), 0.0, None)
    clipped[clipped < 1e-12] = 0.0
    return clipped / clipped.sum()


def solve(success: Sequence[Sequence[float]] | np.ndarray) -> MetaNash:
    """The meta-Nash equilibrium of attack success ``success[attacker][defender]`` (attackers maximise)."""
    import nashpy  # imported here: only the commands that solve a meta-game pay for it

    matrix = payoff_matrix(success)
    # nashpy's LP solves the zero-sum game whose row player receives A; the attackers are the rows.
    rows, cols = nashpy.Game(matrix).linear_program()
    x, y = _clean(rows), _clean(cols)
    return MetaNash(
        attacker_mixture=tuple(float(v) for v in x),
        defender_mixture=tuple(float(v) for v in y),
        value=float(x @ matrix @ y),
        attacker_ratings=tuple(float(v) for v in matrix @ y),
        defender_ratings=tuple(float(1.0 - v) for v in x @ matrix),
    )
