"""What the command line tells a newcomer agrees with the code and the README, and fits a terminal."""

import re
from pathlib import Path

import pytest

from advgame_env import bundled_seeds
from advgame_env.metrics import rate
from algorithms.cli.demo import render_table
from algorithms.cli.main import parse_command
from algorithms.evaluation.evaluate import COMPARED, PANEL, Evaluated
from algorithms.evaluation.utility import Figure

ROOT = Path(__file__).parent.parent


def test_the_demo_help_states_the_held_out_count_and_the_measured_time(capsys):
    with pytest.raises(SystemExit):
        parse_command(["demo", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    held_out = len(bundled_seeds("heldout"))
    assert f"all {held_out}" in shown and f"all {held_out} held-out seeds" in (ROOT / "README.md").read_text()
    # the time the help states is the README's measured demo time (its set-up block), to the minute
    stated = re.search(r"about (\d+) min", shown)
    measured = re.search(r"runs the CPU alignment demo \((\d+) min (\d+) s", (ROOT / "README.md").read_text())
    assert stated and measured and "45 min" not in shown
    assert abs(int(stated[1]) - (int(measured[1]) + int(measured[2]) / 60)) <= 1


def evaluated(name: str) -> Evaluated:
    summary = {m: rate(67, 69) for m in COMPARED}
    figures = {m: Figure(0.207, 0.15, 0.3, 92) for m in PANEL}
    return Evaluated(name, summary, figures=figures)


def test_the_demo_table_fits_100_columns_and_keeps_every_figure():
    rows = [evaluated("before (step 0)"), evaluated("after (step 20)")]
    lines = render_table(rows)
    assert max(map(len, lines)) <= 100
    text = "\n".join(lines)
    assert all(m in text for m in (*COMPARED, *PANEL)) and text.count(str(rate(67, 69))) == 2 * len(COMPARED)
    many = render_table([evaluated(f"a rather long model name number {n}") for n in range(4)])
    assert max(map(len, many)) <= 100
