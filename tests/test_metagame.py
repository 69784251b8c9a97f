"""The zero-sum meta-game solver on matrices whose equilibrium is known by hand."""

import math

import numpy as np
import pytest

from algorithms.gametheory import solve


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


def test_a_tied_meta_game_rates_a_member_against_the_even_mix_of_the_tied_equilibria():
    # defenders 0 and 1 stop both attackers, so every attacker mixture is an equilibrium; the
    # maximum-entropy one is the even mix, against which defender 2 is 50% safe
    success = [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    meta = solve(success)
    assert meta.value == pytest.approx(0.0, abs=1e-9)
    assert meta.attacker_mixture == pytest.approx((0.5, 0.5), abs=1e-6)
    assert meta.defender_mixture == pytest.approx((0.5, 0.5, 0.0), abs=1e-6)
    assert meta.defender_ratings == pytest.approx((1.0, 1.0, 0.5), abs=1e-6)


@pytest.mark.parametrize("copied", [0, 1])
def test_a_copied_member_changes_no_rating_even_where_the_equilibrium_is_tied(copied):
    success = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    once = solve(success)
    twice = solve(np.vstack([success, success[copied : copied + 1]]))
    assert twice.defender_ratings == pytest.approx(once.defender_ratings, abs=1e-6)
    assert twice.attacker_ratings[:2] == pytest.approx(once.attacker_ratings, abs=1e-6)
    # the copies share their member's weight evenly
    assert twice.attacker_mixture[copied] == pytest.approx(twice.attacker_mixture[2], abs=1e-6)
    assert twice.attacker_mixture[copied] + twice.attacker_mixture[2] == pytest.approx(
        once.attacker_mixture[copied], abs=1e-6
    )
    # a copied defender column, likewise
    cols = solve(np.hstack([success, success[:, 2:3]]))
    assert cols.defender_ratings[:3] == pytest.approx(once.defender_ratings, abs=1e-6)
    assert cols.attacker_ratings == pytest.approx(once.attacker_ratings, abs=1e-6)


def test_a_failed_linear_program_is_an_error_not_a_mixture(monkeypatch):
    import scipy.optimize

    import algorithms.gametheory as metagame

    class Failed:
        success, status, message, x = False, 4, "numerical difficulties", None

    monkeypatch.setattr(scipy.optimize, "linprog", lambda *a, **k: Failed())
    with pytest.raises(metagame.MetaGameError, match="numerical difficulties"):
        metagame.solve([[0.2, 0.8], [0.6, 0.4]])


def test_a_maximum_entropy_step_that_fails_its_check_is_an_error(monkeypatch):
    import scipy.optimize

    import algorithms.gametheory as metagame

    class Stalled:
        success, message = False, "stalled"

        def __init__(self, x):
            self.x = x

    # both optimisers return their start untouched: the dual's multipliers 0 give the uniform
    # mixture, which falls short of the value here; the primal's "stalled" is a failure
    monkeypatch.setattr(scipy.optimize, "minimize", lambda f, x0, **k: Stalled(np.asarray(x0)))
    with pytest.raises(metagame.MetaGameError, match=r"did not converge.*stalled"):
        metagame.solve([[0.9, 0.0, 0.5], [0.0, 0.9, 0.5], [0.5, 0.5, 0.45]])


def test_random_tied_matrices_give_equilibria_that_a_copied_member_does_not_move():
    # rates of a few judged samples tie often; every answer must be an equilibrium and copying
    # a member (here the first attacker) must leave every rating where it was
    rng = np.random.default_rng(0)
    for _ in range(60):
        m, n = rng.integers(2, 7, size=2)
        success = rng.integers(0, 5, size=(m, n)) / 4
        meta = solve(success)
        x, y = np.array(meta.attacker_mixture), np.array(meta.defender_mixture)
        assert (success @ y).max() <= meta.value + 1e-6 and (x @ success).min() >= meta.value - 1e-6
        copied = solve(np.vstack([success, success[:1]]))
        assert copied.defender_ratings == pytest.approx(meta.defender_ratings, abs=1e-5)
        assert copied.attacker_ratings[:m] == pytest.approx(meta.attacker_ratings, abs=1e-5)
