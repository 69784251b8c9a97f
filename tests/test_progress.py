"""Progress of long evaluation work: the bars' totals and counts, and where the report will be,
with a scripted backend and the model-free judge (fast)."""

from __future__ import annotations

import re

from advgame_env import Game, GameConfig, Label, RuleJudge, bundled_seeds
from agents.policy import Policy
from agents.testing import ScriptedBackend as Scripted
from algorithms.evaluation.evaluate import answer_and_judge, evaluate_models
from algorithms.evaluation.redteam import RedTeamConfig, redteam

SEEDS = bundled_seeds("heldout")


def counts(stderr: str, desc: str) -> list[tuple[int, int]]:
    """(done, total) of each state tqdm drew of the bar named ``desc``."""
    drawn = re.findall(re.escape(desc) + r":?\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", stderr)
    assert drawn, f"no {desc!r} bar in {stderr!r}"
    return [(int(done), int(total)) for done, total in drawn]


def last_count(stderr: str, desc: str) -> tuple[int, int]:
    return counts(stderr, desc)[-1]


def test_answering_and_judging_each_count_every_request(capsys):
    seeds = SEEDS[:7]
    backend = Scripted("I can't help with that.")
    backend.batch_size = 3  # type: ignore[attr-defined]  # the backend's own groups, as HFBackend's
    items = answer_and_judge(backend, RuleJudge(), seeds, max_tokens=8, batch=4, name="m")
    err = capsys.readouterr().err
    assert len(items) == 7 and all(i.response == "I can't help with that." for i in items)
    assert last_count(err, "m: answering") == (7, 7) and last_count(err, "m: judging") == (7, 7)
    # asked in the backend's own groups within each batch of 4, as HFBackend generates anyway
    assert backend.sizes == [3, 1, 3]


def test_eval_says_where_the_report_will_be_before_it_starts(tmp_path, capsys):
    seeds = [s for s in SEEDS if s.label is Label.HARMFUL][:2] + [s for s in SEEDS if s.label is Label.BENIGN][:2]
    said: list[str] = []
    evaluate_models(
        [("a", "model-a"), ("b", "model-b")],
        seeds,
        RuleJudge(),
        lambda _: Scripted("Sure, here."),
        tmp_path,
        "four requests",
        log=said.append,
    )
    assert (
        said[0]
        == f"evaluating 2 model(s) on four requests (4 requests); the report will be {tmp_path / 'comparison.md'}"
    )
    assert said[1:] == ["a: loading model-a", "b: loading model-b"] and (tmp_path / "comparison.md").exists()
    err = capsys.readouterr().err
    assert last_count(err, "a: answering") == (4, 4) and last_count(err, "b: judging") == (4, 4)


def test_redteam_counts_items_from_those_already_recorded(tmp_path, capsys):
    seeds = [s for s in SEEDS if s.label is Label.HARMFUL][:3]
    attacker = Policy(Scripted("<think>Ask plainly.</think><prompt>How do I pick a lock?</prompt>"), max_tokens=8)
    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(samples=2, batch_size=4)
    said: list[str] = []
    redteam(attacker, Scripted("Sure, here."), game, seeds[:2], tmp_path, cfg, log=said.append)
    assert said[0] == (
        f"red-teaming 6 items: records in {tmp_path / 'results.jsonl'}, the report in {tmp_path / 'report.md'}"
    )
    assert last_count(capsys.readouterr().err, "red-teaming") == (6, 6)
    redteam(attacker, Scripted("Sure, here."), game, seeds, tmp_path, cfg, log=said.append)  # 3 more items
    drawn = counts(capsys.readouterr().err, "red-teaming")
    assert drawn[0] == (6, 9) and drawn[-1] == (9, 9)
