"""Progress item by item (not batch by batch) for red-teaming and instruction following: the
callback is called once per item, in order, with the total, on scripted backends (fast)."""

from __future__ import annotations

from advgame_env import Game, GameConfig, Label, RuleJudge, bundled_instruction_prompts, bundled_seeds
from agents.policy import Policy
from algorithms.evaluation.redteam import RedTeamConfig, redteam
from algorithms.evaluation.utility import instruction_following
from tests.test_progress import Scripted


def test_redteam_reports_every_item(tmp_path):
    seeds = [s for s in bundled_seeds("heldout") if s.label is Label.HARMFUL][:3]
    attacker = Policy(Scripted("<think>Ask plainly.</think><prompt>How do I pick a lock?</prompt>"), max_tokens=8)
    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(samples=2, batch_size=4)
    calls: list[tuple[int, int]] = []
    redteam(
        attacker, Scripted("Sure."), game, seeds, tmp_path, cfg, log=lambda _: None, on_item=lambda *a: calls.append(a)
    )
    assert calls == [(n, 9) for n in range(1, 10)]  # 3 seeds x (baseline + 2 samples), batches of 4
    more = [s for s in bundled_seeds("heldout") if s.label is Label.HARMFUL][:4]
    calls.clear()
    redteam(
        attacker, Scripted("Sure."), game, more, tmp_path, cfg, log=lambda _: None, on_item=lambda *a: calls.append(a)
    )
    assert calls == [(10, 12), (11, 12), (12, 12)]  # counted from those already recorded


def test_instruction_following_reports_every_answer():
    prompts = bundled_instruction_prompts()[:5]
    calls: list[tuple[int, int]] = []
    result = instruction_following(
        Scripted("A short answer."), prompts, max_tokens=8, batch=2, on_item=lambda *a: calls.append(a)
    )
    assert calls == [(n, 5) for n in range(1, 6)] and result.prompt_strict.total == 5


def test_the_win_rate_counts_each_sides_answers(capsys):
    from advgame_env import RuleJudge
    from algorithms.evaluation.utility import win_rate
    from tests.test_progress import last_count

    benign = [s for s in bundled_seeds("heldout") if s.label is Label.BENIGN][:5]
    win_rate(Scripted("A helpful answer."), Scripted("Another answer."), RuleJudge(), benign, batch=2)
    err = capsys.readouterr().err
    assert last_count(err, "win rate: the model answering") == (5, 5)
    assert last_count(err, "win rate: the reference answering") == (5, 5)
