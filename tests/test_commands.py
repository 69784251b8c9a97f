"""The command line is built from the commands' dataclasses; shared options are declared once."""

import dataclasses

import pytest

from algorithms.cli.main import COMMANDS, CrossPlay, Eval, JudgeOptions, RedTeam, main, parse_command
from algorithms.evaluation.crossplay import CrossPlayConfig
from algorithms.evaluation.redteam import RedTeamConfig


def test_every_command_is_a_dataclass_parsed_from_its_flags():
    assert set(COMMANDS) == {
        "demo",
        "play",
        "train",
        "eval",
        "plot",
        "redteam",
        "exploit",
        "crossplay",
        "compare",
        "serve",
        "export",
        "plan",
        "judge-audit",
    }
    assert all(dataclasses.is_dataclass(command) for command in COMMANDS.values())
    command = parse_command(["demo", "--quick", "--eval-prompts", "4", "run.out_dir=x", "run.steps=2"])
    assert (command.quick, command.eval_prompts, command.overrides) == (True, 4, ["run.out_dir=x", "run.steps=2"])


def test_eval_and_redteam_share_the_judge_options():
    given = ["--judge", "j", "--judge-backend", "openai", "--judge-url", "http://127.0.0.1:9/v1"]
    ev = parse_command(["eval", "--model", "m", "--model", "n", *given])
    red = parse_command(["redteam", "--attacker", "a", "--target", "t", *given])
    assert isinstance(ev, Eval) and isinstance(red, RedTeam)
    assert ev.judging == red.judging == JudgeOptions("j", "openai", "http://127.0.0.1:9/v1")
    assert ev.model == ["m", "n"]


def test_the_redteam_flags_build_its_config_directly():
    red = parse_command(["redteam", "--attacker", "a", "--target", "t", "--no-baseline", "--max-tokens", "9"])
    assert isinstance(red, RedTeam)
    assert red.redteam == RedTeamConfig(target_max_tokens=9, baseline=False)
    assert red.settings()["no_baseline"] is True and red.settings()["max_tokens"] == 9


def test_the_crossplay_flags_name_both_sides_and_build_its_config():
    command = parse_command(
        [
            "crossplay",
            "--attackers",
            "a1",
            "a2",
            "--defenders",
            "d",
            "--prompts",
            "8",
            "--max-tokens",
            "9",
            "--judge",
            "j",
        ]
    )
    assert isinstance(command, CrossPlay)
    assert (command.attackers, command.defenders, command.judging.judge) == (["a1", "a2"], ["d"], "j")
    assert command.crossplay == CrossPlayConfig(seeds=8, max_tokens=9)


def test_serve_passes_its_options_to_vllm_untouched():
    command = parse_command(["serve", "m", "--port", "8001", "--max-model-len", "512"])
    assert (command.model, command.vllm_args) == ("m", ["--port", "8001", "--max-model-len", "512"])


def test_an_error_names_the_command_that_failed(capsys):
    missing = ["--judge", "j", "--judge-backend", "openai"]
    assert main(["redteam", "--attacker", "a", "--target", "t", *missing]) == 2
    assert "advgame redteam: --judge-backend openai needs --judge-url" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--backend", "openai"]) == 2
    assert "advgame eval: --backend openai needs --url" in capsys.readouterr().err


def test_the_backend_factory_says_what_is_missing():
    from agents import OpenAIBackend, build_backend

    with pytest.raises(ValueError, match="backend openai needs the server's URL"):
        build_backend("openai", "m")
    with pytest.raises(ValueError, match="not one of 'hf', 'vllm', 'openai'"):
        build_backend("tpu", "m")
    backend = build_backend("openai", "m", "http://127.0.0.1:9/v1", deadline=5.0)
    assert isinstance(backend, OpenAIBackend)
    backend.close()
