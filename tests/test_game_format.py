"""Every training export records the game format its players were trained with, and the commands
that load a player play it that way unless a flag says otherwise (with a one-line warning)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from algorithms.cli.main import main, parse_command
from algorithms.config import load_config
from algorithms.training.game_format import FORMAT_FILE, GameFormat, attacker_format, read_format, write_format


def test_the_format_of_a_config_round_trips(tmp_path):
    fmt = GameFormat.of(load_config("configs/cpu_demo.yaml"))
    assert fmt.attacker_think is False and fmt.attacker_prefill == "" and fmt.templates["attacker_harmful"] == "v1"
    write_format(tmp_path, fmt)
    assert read_format(tmp_path) == fmt
    assert read_format("smollm2-135m-instruct") is None  # a bundled name records nothing
    (tmp_path / FORMAT_FILE).write_text("{}")
    with pytest.raises(ValueError, match=FORMAT_FILE):
        read_format(tmp_path)


def test_a_recorded_format_is_the_default_and_a_flag_overrides_it_with_a_warning(tmp_path):
    trained = tmp_path / "attacker"
    trained.mkdir()
    write_format(trained, replace(GameFormat.of(load_config("configs/cpu_demo.yaml")), attacker_prefill="<p>"))
    said: list[str] = []
    fmt = attacker_format([str(trained)], None, None, command="redteam", warn=said.append)
    assert (fmt.think, fmt.prefill, said) == (False, "<p>", [])
    fmt = attacker_format([str(trained)], True, None, command="redteam", warn=said.append)
    assert fmt.think is True and len(said) == 1
    assert said[0] == f"advgame redteam: warning: --think overrides {trained}, trained without the think block"
    assert attacker_format(["smollm2-135m-instruct"], None, None, command="x").think is True  # the game's default

    other = tmp_path / "other"
    other.mkdir()
    write_format(other, GameFormat.of(load_config(None)))  # a thinking attacker
    with pytest.raises(ValueError, match="give --think or --no-think"):
        attacker_format([str(trained), str(other)], None, "", command="crossplay")


def test_the_recorded_attacker_templates_are_played_and_must_agree(tmp_path):
    from advgame_env import TemplateSet
    from advgame_env.roles import ATTACKER

    srt, ours = tmp_path / "srt", tmp_path / "ours"
    for folder, cfg in ((srt, "configs/cpu_self_redteam.yaml"), (ours, None)):
        folder.mkdir()
        write_format(folder, GameFormat.of(load_config(cfg)))
    fmt = attacker_format([str(srt)], None, None, command="redteam")
    game = fmt.game(num_attacks=1)
    assert game.templates.attacker_harmful == TemplateSet.self_redteam().attacker_harmful != "v1"
    assert game.templates.judge_pairwise == TemplateSet().judge_pairwise  # the judge's stay the command's
    assert game.system_message(ATTACKER) and game.num_attacks == 1  # Self-RedTeam's attacker has a system turn
    assert fmt.settings()["attacker_templates"]["attacker_harmful"] == "srt1"  # type: ignore[index]
    plain = attacker_format([str(ours)], None, None, command="redteam")
    assert plain.settings() == {} and plain.game().templates == TemplateSet()  # a default run's settings as before
    with pytest.raises(ValueError, match="different attacker templates"):
        attacker_format([str(srt), str(ours)], True, "", command="crossplay")


def test_flags_read_positively():
    red = parse_command(["redteam", "--attacker", "a", "--target", "t", "--think"])
    assert red.think is True and red.no_think is False  # type: ignore[attr-defined]
    with pytest.raises(SystemExit):
        parse_command(["redteam", "--attacker", "a", "--target", "t", "--no-no-think"])
    assert main(["redteam", "--attacker", "smollm2-135m-instruct", "--target", "t", "--think", "--no-think"]) == 2


def test_redteam_plays_an_export_in_its_recorded_format(tiny_chat, tmp_path, capsys):
    attacker = tmp_path / "final" / "attacker"
    shutil.copytree(tiny_chat, attacker)
    write_format(attacker, GameFormat.of(load_config("configs/cpu_demo.yaml")))
    out = tmp_path / "red"
    args = ["redteam", "--attacker", str(attacker), "--target", str(tiny_chat), "--limit", "1", "--samples", "1"]
    args += ["--max-tokens", "8", "--no-embeddings", "--no-baseline", "--out", str(out)]
    assert main(args) == 0
    settings = json.loads((out / "run.json").read_text())
    assert settings["no_think"] is True and "warning" not in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "red2"), "--think"]) == 0
    assert "warning: --think overrides" in capsys.readouterr().err


@pytest.mark.slow
def test_a_training_export_records_its_format(tiny_chat, tmp_path):
    from algorithms.training.trainer import Trainer
    from tests.helpers import tiny_run

    cfg = tiny_run(tiny_chat, tmp_path / "run", "game.attacker_think=false", "run.steps=1")
    run = Trainer(cfg).train()
    for name in ("attacker", "defender"):
        fmt = read_format(run / "final" / name)
        assert fmt == GameFormat.of(cfg) and fmt is not None and fmt.attacker_think is False


@pytest.mark.parametrize(
    "name", ["demo", "play", "train", "eval", "redteam", "exploit", "crossplay", "compare", "plan"]
)
def test_no_command_offers_a_double_negative(name, capsys):
    from algorithms.cli.main import parse_command as parse

    with pytest.raises(SystemExit):
        parse([name, "--help"])
    shown = capsys.readouterr().out
    assert "--" in shown and "--no-no-" not in shown


def test_crossplay_plays_an_export_in_its_recorded_format(tiny_chat, tmp_path):
    from algorithms.evaluation.crossplay import SETTINGS_FILE

    attacker = tmp_path / "final" / "attacker"
    shutil.copytree(tiny_chat, attacker)
    write_format(attacker, replace(GameFormat.of(load_config("configs/cpu_demo.yaml")), attacker_prefill="<prompt>"))
    out = tmp_path / "cross"
    args = ["crossplay", "--attackers", str(attacker), "--defenders", str(tiny_chat), "--prompts", "2"]
    assert main([*args, "--max-tokens", "8", "--no-baseline", "--out", str(out)]) == 0
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["no_think"] is True and settings["config"]["prefill"] == "<prompt>"
    # the tiny model's 8-token rewrites: however valid they came out, the report's first lines agree
    validity = json.loads((out / "crossplay.json").read_text())["attack_validity"][0]
    head = "\n".join((out / "report.md").read_text().splitlines()[:4])
    assert ("rewrites were valid.** Most were not" in head) == (2 * validity["successes"] < validity["n"])
