import subprocess
import sys
from pathlib import Path

import pytest

from algorithms.cli import main

ROOT = Path(__file__).parent.parent


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_demo_plays_rounds_with_the_bundled_model(capsys):
    assert main(["demo", "--rounds", "2", "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    assert out.count("seed ") == 2 and "(direct)" in out and "answer 0" in out


@pytest.mark.slow
def test_the_newcomer_example_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "play_one_round.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("rewards: {") == 2 and "(direct)" in result.stdout
