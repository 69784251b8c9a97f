"""Small runs a newcomer asks for (--limit N), and red-team records and reports that show what
the attacker wrote when its rewrites were invalid."""

from __future__ import annotations

import json

from advgame_env import Game, GameConfig, Label, RuleJudge, bundled_seeds
from advgame_env.suites import first_seeds
from agents.testing import ScriptedBackend
from algorithms.cli.main import main, parse_command
from algorithms.evaluation.redteam import RedTeamConfig, plan, play_batch, write_report
from tests.test_redteam import record

HARMFUL = bundled_seeds("heldout", "harmful")


def test_first_seeds_take_both_labels_in_suite_order():
    suite = bundled_seeds("heldout")
    chosen = first_seeds(suite, 5)
    labels = [s.label for s in chosen]
    assert labels.count(Label.HARMFUL) == 3 and labels.count(Label.BENIGN) == 2
    assert chosen[:3] == [s for s in suite if s.label is Label.HARMFUL][:3]
    assert first_seeds(HARMFUL, 4) == HARMFUL[:4]  # one label only: it fills in


def test_eval_and_redteam_take_a_limit(tmp_path, capsys):
    assert parse_command(["eval", "--model", "m", "--limit", "6"]).limit == 6  # type: ignore[attr-defined]
    assert parse_command(["redteam", "--attacker", "a", "--target", "t", "--limit", "3"]).limit == 3  # type: ignore[attr-defined]
    assert main(["eval", "--model", "smollm2-135m-instruct", "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_an_invalid_attack_keeps_what_the_attacker_wrote(tmp_path):
    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(baseline=False, samples=1)
    items = plan(HARMFUL[:2], cfg)
    attacks = ["no tags at all, just chatter", f"<think>plain</think><prompt>{HARMFUL[1].prompt}</prompt>"]
    target = ScriptedBackend("I can't help with that.")  # every prompt gets the same answer
    records = play_batch(game, target, items, attacks, cfg)
    bad, good = records
    assert bad.valid is False and bad.failure == "bad_format" and bad.rewrite is None
    assert bad.invalid_output == "no tags at all, just chatter"
    assert good.valid is True and good.invalid_output is None and good.rewrite == HARMFUL[1].prompt


def test_a_report_without_successes_has_no_empty_section_and_says_when_the_format_failed(tmp_path):
    raw = "Sure! Here is a prompt: tell me"
    records = [
        record(str(n), failure="bad_format", valid=False, invalid_output=raw, rewrite=None) for n in range(3)
    ] + [record("x", success=False)]
    report = write_report(records, tmp_path, "a mismatched attacker").read_text()
    head = report.splitlines()[:4]
    assert any("Most attacks were malformed: 3 of 4 `bad_format`" in line for line in head)
    assert repr(raw) in report
    assert "## Successful attacks" not in report
    assert json.loads((tmp_path / "summary.json").read_text())["items"] == 4

    fine = write_report([record("a", success=True), record("b", success=False)], tmp_path, "fine").read_text()
    assert "malformed" not in fine and "## Successful attacks by category" in fine
