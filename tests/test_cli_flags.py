"""The command line's flags: --plugin on every command that loads a run or an algorithm, one meaning
per flag name (old spellings are an error naming the new one), library configs nested whole."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from algorithms.cli.main import COMMANDS, Compare, Exploit, ServeAttacker, ServeDefender, main, parse_command
from algorithms.evaluation.compare import CompareConfig, Entry
from algorithms.evaluation.exploit import ExploitConfig
from algorithms.training.runlog import read_metrics

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "custom_algorithm.py"
_fresh = itertools.count()

# ----------------------------------------------------------------------------- --plugin


def fresh_plugin(folder: Path) -> tuple[Path, str]:
    """The example plugin registered under a name this process has not seen yet (the registry is
    per process, and another test may have loaded the example as "hinge")."""
    name = f"cli_hinge_{next(_fresh)}"
    source = EXAMPLE.read_text().replace('@register("hinge")', f'@register("{name}")')
    assert name in source
    path = folder / f"{name}.py"
    path.write_text(source)
    return path, name


def plugin_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder whose config names a plugin's algorithm, as `advgame train --plugin` leaves it."""
    plugin, name = fresh_plugin(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"algorithm: {{name: {name}}}\nrun: {{out_dir: {run}}}\n")
    return plugin, run


LOADERS = {"demo", "train", "eval", "exploit", "crossplay", "compare", "plan", "judge-audit"}


def test_every_command_that_loads_a_run_or_an_algorithm_takes_plugin():
    takes = {name for name, command in COMMANDS.items() if "plugin" in {f.name for f in dataclasses.fields(command)}}
    assert takes == LOADERS  # play, plot, redteam and export load no config; serve MODEL is vllm's own
    assert all("plugin" in {f.name for f in dataclasses.fields(c)} for c in (ServeAttacker, ServeDefender))
    command = parse_command(["eval", "--run", "r", "--plugin", "a.py", "--plugin", "pkg.mod"])
    assert command.plugin == ["a.py", "pkg.mod"]  # type: ignore[attr-defined]


def test_a_run_of_a_plugin_algorithm_needs_plugin_on_every_command_that_loads_it(tmp_path, capsys):
    plugin, run = plugin_run(tmp_path)
    config = str(run / "config.yaml")
    for argv in (
        ["train", "--resume", "--config", config],
        ["eval", "--run", str(run)],
        ["exploit", "--defender", str(run), "--config", config, "--out", str(tmp_path / "x")],
        ["crossplay", "--run", str(run), "--out", str(tmp_path / "c")],
        ["compare", "--config", config, "--out", str(tmp_path / "cmp")],
        ["plan", "--config", config],
        ["judge-audit", "--config", config, "--out", str(tmp_path / "a")],
        ["demo", "--config", config],
        ["serve", "--attacker", str(run)],
        ["serve", "--defender", str(run)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is not one of" in err and "--plugin FILE_OR_MODULE" in err, (argv, err)
    assert main(["plan", "--plugin", str(plugin), "--config", config]) == 0
    assert "GiB" in capsys.readouterr().out


@pytest.mark.slow
def test_a_plugin_run_is_evaluated_resumed_and_exploited_with_plugin(tiny_chat, tmp_path, capsys):
    # without --plugin each of these is the one-line error of the test above: the registry is per
    # process, and once this one has loaded the plugin it cannot be unloaded here
    plugin, name = fresh_plugin(tmp_path)
    run = tmp_path / "run"
    quiet = ["run.progress=false", "run.tensorboard=false", "run.validate_every=0"]
    small = ["data.batch_size=1", "roles.attacker.max_tokens=8", "roles.defender.max_tokens=8"]
    given = [f"model.name={tiny_chat}", f"run.out_dir={run}", f"algorithm.name={name}", *quiet, *small]
    smoke = str(ROOT / "configs" / "cpu_smoke.yaml")
    assert main(["train", "--plugin", str(plugin), "--config", smoke, "run.steps=1", *given]) == 0
    capsys.readouterr()

    evaluate = ["eval", "--run", str(run), "--steps", "last", "--limit", "2", "--max-tokens", "8"]
    assert main([*evaluate, "--plugin", str(plugin)]) == 0
    assert any((run / "eval").rglob("summary.json"))

    resume = ["train", "--resume", "--config", smoke, "--allow-change", "run.steps", "run.steps=2", *given]
    assert main([*resume, "--plugin", str(plugin)]) == 0
    assert (run / "resumes.jsonl").is_file()
    assert len([m for m in read_metrics(run) if "game/rounds" in m]) == 2  # step 1 trained, then step 2

    config = str(run / "config.yaml")
    exploit = ["exploit", "--defender", str(run / "final" / "defender"), "--config", config, "--out"]
    exploit += [str(tmp_path / "exploit"), "--budget", "1", "--prompts", "2", "--samples", "1"]
    assert main([*exploit, "--plugin", str(plugin)]) == 0
    assert (tmp_path / "exploit" / "exploit.json").is_file()


# ----------------------------------------------------------------------------- one meaning per flag


@pytest.mark.parametrize(
    ("argv", "old", "new"),
    [
        (["redteam", "--attacker", "a", "--target", "t", "--seeds", "s.jsonl"], "--seeds", "--suite FILE"),
        (["crossplay", "--attackers", "a", "--defenders", "d", "--seeds=8"], "--seeds", "--prompts N"),
        (["exploit", "--defender", "d", "--seeds", "8"], "--seeds", "--prompts N"),
        (["compare", "--config", "cpu_smoke.yaml", "--seeds", "3"], "--seeds", "--run-seeds N"),
        # budgets that count held-out requests, not seeds of randomness
        (["compare", "--config", "cpu_smoke.yaml", "--eval-seeds", "8"], "--eval-seeds", "--eval-prompts N"),
        (["compare", "--config", "cpu_smoke.yaml", "--attack-seeds=2"], "--attack-seeds", "--attack-prompts N"),
        (["compare", "--config", "cpu_smoke.yaml", "--exploit-seeds", "4"], "--exploit-seeds", "--exploit-prompts N"),
        (["compare", "--config", "x.yaml", "--crossplay-seeds", "0"], "--crossplay-seeds", "--crossplay-prompts N"),
        (["demo", "--quick", "--attack-seeds", "2"], "--attack-seeds", "--attack-prompts N"),
        (["demo", "--quick", "--eval-size", "4"], "--eval-size", "--eval-prompts N"),
    ],
)
def test_an_old_flag_spelling_is_one_line_naming_the_new_flag(argv, old, new, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{argv[0]} {old} is now {new}" in err


def test_the_new_spellings_reach_the_library_configs():
    red = parse_command(["redteam", "--attacker", "a", "--target", "t", "--suite", "s.jsonl"])
    assert red.suite == "s.jsonl"  # type: ignore[attr-defined]
    cross = parse_command(["crossplay", "--attackers", "a", "--defenders", "d", "--prompts", "8"])
    assert cross.crossplay.seeds == 8  # type: ignore[attr-defined]
    counts = ["--eval-prompts", "6", "--attack-prompts", "2", "--exploit-prompts", "4", "--crossplay-prompts", "0"]
    compare = parse_command(["compare", "--config", "a.yaml", *counts])
    assert isinstance(compare, Compare)
    c = compare.compare
    assert (c.eval_prompts, c.attack_prompts, c.exploit_prompts, c.crossplay_prompts) == (6, 2, 4, 0)
    demo = parse_command(["demo", "--quick", "--attack-prompts", "3"])
    assert demo.attack_prompts == 3  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- nested configs


def test_exploit_and_compare_hold_their_library_configs_whole():
    exploit = parse_command(["exploit", "--defender", "d", "--prompts", "4", "--budget", "3", "run.seed=1"])
    assert isinstance(exploit, Exploit)
    assert exploit.exploit == ExploitConfig(budget=3, seeds=4, overrides=("run.seed=1",))
    assert exploit.settings() == ExploitConfig(
        side="attacker", frozen="d", budget=3, seeds=4, overrides=("run.seed=1",)
    )
    compare = parse_command(["compare", "--config", "a.yaml", "k=v", "--run-seeds", "3", "--seed-list", "4", "5"])
    assert isinstance(compare, Compare)
    assert compare.compare == CompareConfig(configs=(Entry("a.yaml"),), seeds=3, seed_list=(4, 5), overrides=("k=v",))
    # every field of the library config is a flag of the command (or its positional overrides)
    shown = " ".join(parse_help(["compare", "--help"]).split())
    for f in dataclasses.fields(CompareConfig):
        flag = {"configs": "--config", "seeds": "--run-seeds", "overrides": "key=value"}.get(f.name)
        assert (flag or "--" + f.name.replace("_", "-")) in shown, f.name


def test_a_nested_config_refusing_its_values_is_one_line_and_status_2(capsys):
    assert main(["crossplay", "--attackers", "a", "--defenders", "d", "--prompts", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("advgame crossplay: ") and "seeds" in err


def parse_help(argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse_command(argv)
    return out.getvalue()


# ----------------------------------------------------------------------------- train --help


def test_train_help_lists_every_run_config_key_with_its_default_and_rule():
    from algorithms.cli.config_keys import keys
    from algorithms.config import RULES, TrainConfig, to_dict

    shown = parse_help(["train", "--help"])
    listed = {k.key: k for k in keys()}
    lines = {line.split(" = ")[0].strip(): line for line in shown.splitlines() if " = " in line}
    assert "optim.lr" in lines and "1e-06" in lines["optim.lr"] and "a number > 0" in lines["optim.lr"]
    for key, entry in listed.items():
        assert key in lines, key
        if key in RULES:  # the reader's rule, in its own words (the shown line may wrap after it)
            assert RULES[key].allowed == entry.allowed
    flat = _flatten(to_dict(TrainConfig()))
    assert set(listed) == set(flat)  # every key the reader knows, and its default
    assert all(listed[key].default == default_of(key) for key in ("run.steps", "model.lora", "game.judging"))


def default_of(key: str) -> object:
    from algorithms.config import TrainConfig

    value: object = TrainConfig()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out |= _flatten(value, f"{prefix}{key}.")
    return out


# ----------------------------------------------------------------------------- docs/cli.md


def test_the_command_reference_names_every_flag_of_every_command():
    import re

    text = (ROOT / "docs" / "cli.md").read_text()
    sections = dict(re.findall(r"^## advgame (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M))
    helps = {name: ["--help"] if name != "serve" else ["--attacker", "x", "--help"] for name in [*COMMANDS, "serve"]}
    for name, rest in helps.items():
        assert name in sections, name
        defined = set(re.findall(r"^\W*(--[a-z][a-z0-9-]*)", parse_help([name, *rest]), flags=re.M))
        missing = sorted(flag for flag in defined - {"--help"} if f"`{flag}" not in sections[name])
        assert not missing, (name, missing)


# ----------------------------------------------------------------------------- recorded formats


def test_eval_asks_a_defender_in_the_format_its_export_records_and_a_flag_overrides_it(tmp_path):
    from dataclasses import replace

    from advgame_env import TemplateSet
    from algorithms.cli.main import _defender_plays
    from algorithms.config import load_config
    from algorithms.training.game_format import GameFormat, write_format

    plain, thinking, srt, bare = (tmp_path / n for n in ("plain", "thinking", "srt", "bare"))
    for folder in (plain, thinking, srt, bare):
        folder.mkdir()
    fmt = GameFormat.of(load_config(None))
    write_format(plain, fmt)
    write_format(thinking, replace(fmt, defender_think=True, defender_prefill="<think>"))
    write_format(srt, replace(fmt, defender_think=True, templates=TemplateSet.self_redteam().versions()))
    models = [(str(f), str(f)) for f in (plain, thinking, srt, bare)] + [("smollm2", "smollm2-135m-instruct")]
    plays, warnings = _defender_plays(models, None)
    assert set(plays) == {str(thinking), str(srt)} and warnings == []  # the others: the request as it is
    assert plays[str(thinking)].game.defender_think and plays[str(thinking)].prefill == "<think>"
    assert plays[str(srt)].game.templates == TemplateSet.self_redteam()  # the recorded template set
    assert "<answer>" in plays[str(srt)].chat("Hi")[-1]["content"]
    assert plays[str(thinking)].chat("Hi")[-1] == {"role": "assistant", "content": "<think>"}
    # a flag wins, with one line per recorded model it overrides
    plays, warnings = _defender_plays(models, False)
    assert plays == {} and len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith(f"--no-think overrides {thinking}, trained with the think block")
    plays, warnings = _defender_plays(models, True)
    assert len(plays) == 5 and warnings == [
        f"--think overrides {plain}, trained without the think block (its advgame_format.json)"
    ]
    (bare / "advgame_format.json").write_text("{")
    with pytest.raises(ValueError, match="not a game format record"):
        _defender_plays([("bare", str(bare))], None)
