"""The zero-sum meta-game solver on matrices whose equilibrium is known by hand."""

import math

import numpy as np
import pytest

from algorithms.evaluation.metagame import solve


def test_rock_paper_scissors_has_the_uniform_equilibrium():
    # attack success of 3 attackers against 3 defenders in a cycle: each attacker beats one
    # defender, ties one and loses to one (1, 0.5, 0).
    success = [[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]]
    meta = solve(success)
    assert meta.attacker_mixture == pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=1e-6)
    assert meta.defender_mixture == pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=1e-6)
    assert meta.value == pytest.approx(0.5, abs=1e-6)
    assert meta.attacker_ratings == pytest.approx((0.5, 0.5, 0.5), abs=1e-6)
    assert meta.defender_ratings == pytest.approx((0.5, 0.5, 0.5), abs=1e-6)


def test_a_dominant_pair_is_a_pure_equilibrium():
    # attacker 2 is best against every defender, defender 0 is safest against every attacker
    success = [[0.1, 0.3, 0.4], [0.2, 0.5, 0.6], [0.3, 0.7, 0.9]]
    meta = solve(success)
    assert meta.attacker_mixture == pytest.approx((0, 0, 1), abs=1e-6)
    assert meta.defender_mixture == pytest.approx((1, 0, 0), abs=1e-6)
    assert meta.value == pytest.approx(0.3, abs=1e-6)
    # ratings: payoff against the rival's equilibrium mixture
    assert meta.attacker_ratings == pytest.approx((0.1, 0.2, 0.3), abs=1e-6)
    assert meta.defender_ratings == pytest.approx((0.7, 0.3, 0.1), abs=1e-6)


def test_a_mixed_2x2_equilibrium_matches_the_closed_form():
    # [[a, b], [c, d]] without a saddle point: x1 = (d - c) / (a - b - c + d)
    a, b, c, d = 0.9, 0.2, 0.3, 0.6
    meta = solve([[a, b], [c, d]])
    x1 = (d - c) / (a - b - c + d)
    y1 = (d - b) / (a - b - c + d)
    assert meta.attacker_mixture == pytest.approx((x1, 1 - x1), abs=1e-6)
    assert meta.defender_mixture == pytest.approx((y1, 1 - y1), abs=1e-6)
    assert meta.value == pytest.approx((a * d - b * c) / (a - b - c + d), abs=1e-6)


def test_duplicating_a_member_leaves_the_ratings_unchanged():
    success = np.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    once = solve(success)
    twice = solve(np.vstack([success, success[:1]]))  # attacker 0 entered twice
    assert twice.value == pytest.approx(once.value, abs=1e-6)
    assert twice.defender_ratings == pytest.approx(once.defender_ratings, abs=1e-6)
    assert sum(twice.attacker_mixture) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [[], [[]], [[0.5, math.nan]], [[0.5, math.inf]]])
def test_a_bad_matrix_is_refused(bad):
    with pytest.raises(ValueError, match="cross-play matrix"):
        solve(bad)
