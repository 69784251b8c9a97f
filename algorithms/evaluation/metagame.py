"""The meta-game over a population of attackers and defenders (cross-play, PSRO-style pools).

A cross-play matrix ``P[i, j]`` holds how often attacker ``i`` succeeds against defender ``j``
(attack success rate). Read as a two-player zero-sum game, the attackers maximise ``P`` and the
defenders minimise it. Its Nash equilibrium ``(x*, y*)`` is a mixture over each population with

    x*ᵀ P y  ≥  v  ≥  xᵀ P y*    for every mixture x of attackers and y of defenders,

where ``v = x*ᵀ P y*`` is the game's value: the success rate the best attacker mixture is sure of
against any defender mixture. Nash averaging (Balduzzi et al., 2018, "Re-evaluating evaluation")
rates each member by its payoff against the rival population's equilibrium mixture: an attacker
``i`` by ``(P y*)_i``, a defender ``j`` by ``1 - (x*ᵀ P)_j`` (its safety).

A tied game has a whole polytope of equilibria, and members outside every equilibrium's support
are rated differently against different ones. So, as Nash averaging prescribes, we take the
*maximum-entropy* equilibrium, which is unique (entropy is strictly concave on the convex set of
equilibria): first the game's value by the minimax LP (scipy's ``linprog``, HiGHS), then the
mixture of maximum entropy among those that secure it (scipy's SLSQP). Members whose payoff rows
(or columns) are identical are one strategy: they are merged before solving and share its weight
evenly after, so entering a member twice changes no rating and no other member's weight (the
plain maximum-entropy mixture alone would give a copied member more weight). A solver that does
not report success is a ``MetaGameError``, never a mixture.
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


class MetaGameError(ValueError):
    """The meta-game's solver failed (the matrix was valid): names the solver and its message."""


def _maximin(matrix: np.ndarray) -> np.ndarray:
    """The row player's maximum-entropy maximin mixture of ``matrix`` (the row player maximises)."""
    from scipy import optimize  # imported here: only the commands that solve a meta-game pay for it

    m, n = matrix.shape
    # variables (x, v): maximise v subject to (xᵀ A)_j >= v for every column, x a distribution
    lp = optimize.linprog(
        c=np.r_[np.zeros(m), -1.0],
        A_ub=np.c_[-matrix.T, np.ones(n)],
        b_ub=np.zeros(n),
        A_eq=np.r_[np.ones(m), 0.0][None, :],
        b_eq=[1.0],
        bounds=[(0.0, None)] * m + [(None, None)],
        method="highs",
    )
    if not lp.success:
        raise MetaGameError(f"the meta-game's minimax LP failed (status {lp.status}): {lp.message}")
    value, start = float(lp.x[-1]), _clean(lp.x[:m])
    if m == 1:
        return start
    floor = value - 1e-9 * max(1.0, float(np.abs(matrix).max()))  # the LP's own round-off

    def neg_entropy(x: np.ndarray) -> tuple[float, np.ndarray]:
        safe = np.maximum(x, 1e-300)
        return float(np.sum(x * np.log(safe))), np.log(safe) + 1.0

    best = optimize.minimize(
        neg_entropy,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[
            {"type": "eq", "fun": lambda x: np.sum(x) - 1.0, "jac": lambda x: np.ones((1, m))},
            {"type": "ineq", "fun": lambda x: matrix.T @ x - floor, "jac": lambda x: matrix.T},
        ],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    if not best.success:
        raise MetaGameError(f"the meta-game's maximum-entropy step failed: {best.message}")
    return _clean(best.x)


def _merged(matrix: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``matrix`` with identical rows (axis 0) or columns (axis 1) kept once; for each original
    member, its merged index; for each merged one, its number of copies."""
    unique, index, counts = np.unique(matrix, axis=axis, return_inverse=True, return_counts=True)
    return unique, index.reshape(-1), counts


def solve(success: Sequence[Sequence[float]] | np.ndarray) -> MetaNash:
    """The maximum-entropy meta-Nash equilibrium of attack success ``success[attacker][defender]``
    (attackers maximise); copies of a member share its weight evenly."""
    matrix = payoff_matrix(success)
    rows, row_of, row_copies = _merged(matrix, 0)
    reduced, col_of, col_copies = _merged(rows, 1)
    x_merged = _maximin(reduced)
    y_merged = _maximin(-reduced.T)  # the defenders maximise the attackers' failure
    x = x_merged[row_of] / row_copies[row_of]
    y = y_merged[col_of] / col_copies[col_of]
    return MetaNash(
        attacker_mixture=tuple(float(v) for v in x),
        defender_mixture=tuple(float(v) for v in y),
        value=float(x @ matrix @ y),
        attacker_ratings=tuple(float(v) for v in matrix @ y),
        defender_ratings=tuple(float(1.0 - v) for v in x @ matrix),
    )
