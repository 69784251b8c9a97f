"""One config section per role (``roles.attacker`` / ``roles.defender``) and the errors the old
keys give: in a file (with its line), in an override, in a run folder's config.yaml on resume."""

import dataclasses
import re

import pytest
import yaml

from algorithms.cli.main import main
from algorithms.config import (
    MOVED_KEYS,
    RULES,
    ConfigError,
    RoleConfig,
    RolesConfig,
    check_resumed_config,
    load_config,
    save_config,
    to_dict,
)

ROLES = ("attacker", "defender")
# a value of the right type for each field of a role's section, as YAML
VALUES = {"model": "x", "max_tokens": "8", "urls": "[http://a:1]", "train": "false", "sft_data": "x.jsonl"}


def _value(old: str) -> str:
    return VALUES[MOVED_KEYS[old].rsplit(".", 1)[1]]


def test_every_field_of_a_role_has_exactly_one_old_key():
    new = {f"roles.{role}.{f.name}" for role in ROLES for f in dataclasses.fields(RoleConfig)}
    assert sorted(MOVED_KEYS.values()) == sorted(new)
    assert RULES["roles.attacker.max_tokens"].allowed == "an integer >= 1"


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_an_old_key_in_a_file_names_the_file_line_and_the_new_key(old, tmp_path):
    section, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"run:\n  steps: 2\n{section}:\n  {key}: {_value(old)}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 4: config.{old} has moved to {MOVED_KEYS[old]}"), message
    assert f"write {MOVED_KEYS[old]} instead" in message


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_an_old_key_in_an_override_names_the_override_and_the_new_key(old):
    override = f"{old}={_value(old)}"
    expected = f"override '{override}': config.{old} has moved to {MOVED_KEYS[old]}"
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        load_config(None, [override])


def test_an_old_key_set_to_null_is_refused_too(tmp_path):
    # a run folder's config.yaml of the old layout writes algorithm.sft_data: null
    path = tmp_path / "old.yaml"
    path.write_text("algorithm:\n  name: grpo\n  sft_data: null\n")
    with pytest.raises(ConfigError, match=r"line 3: config.algorithm.sft_data has moved to roles.defender.sft_data"):
        load_config(path)


def _old_layout(tmp_path):
    """A run's config.yaml as the library wrote it before roles: (every old key)."""
    data = to_dict(load_config(None, [f"run.out_dir={tmp_path / 'run'}", "run.steps=2"]))
    roles = data.pop("roles")
    assert isinstance(roles, dict)
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        _, role, name = new.split(".")
        data[section][key] = roles[role][name]  # type: ignore[index]
    return data


def test_a_config_with_several_old_keys_names_them_all_at_once(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_old_layout(tmp_path), sort_keys=False))
    lines = path.read_text().splitlines()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    for old, new in MOVED_KEYS.items():
        key = old.split(".")[1]
        line = next(
            n for n, text in enumerate(lines, 1) if text == f"  {key}:" or text.startswith(f"  {key}: ")
        )  # every old key sits in a different line of its own section
        assert f"line {line} {old} -> {new}" in message, (old, message)
    assert message.count(str(path)) == 1  # the file named once, its keys by line


def test_resuming_a_run_saved_with_the_old_layout_is_one_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(_old_layout(tmp_path), sort_keys=False))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    assert main(["train", "--resume", f"run.out_dir={run}", "run.steps=2"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: the run's own config does not load" in err and "Traceback" not in err
    assert f"{run / 'config.yaml'}: line " in err and "model.attacker -> roles.attacker.model" in err
    assert len(err.strip().splitlines()) == 1


def test_the_cli_takes_the_new_paths_and_refuses_the_old_ones(capsys):
    assert main(["train", "rollout.defender_max_tokens=32"]) == 2
    err = capsys.readouterr().err
    assert "config.rollout.defender_max_tokens has moved to roles.defender.max_tokens" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["train", "roles.defender.max_tokens=0"]) == 2
    assert "config.roles.defender.max_tokens: 0 is not allowed; expected an integer >= 1" in capsys.readouterr().err


def test_the_roles_section_is_typed_and_checked():
    cfg = load_config(None, ["roles.defender.max_tokens=32", "roles.attacker.train=false"])
    assert isinstance(cfg.roles, RolesConfig) and isinstance(cfg.roles.attacker, RoleConfig)
    assert cfg.roles["defender"] is cfg.roles.defender and cfg.roles.defender.max_tokens == 32
    assert (cfg.roles.attacker.train, cfg.roles.defender.train, cfg.roles.attacker.max_tokens) == (False, True, 256)
    with pytest.raises(KeyError):
        cfg.roles["judge"]
    with pytest.raises(
        ConfigError, match=r"config.roles: unknown key\(s\) \['judge'\]; valid keys: attacker, defender"
    ):
        load_config(None, ["roles.judge.max_tokens=3"])
    with pytest.raises(ConfigError, match=r"config.roles.attacker: unknown key\(s\) \['max_token'\]"):
        load_config(None, ["roles.attacker.max_token=3"])
    with pytest.raises(ConfigError, match=r"config.roles.attacker.urls: expected a list"):
        load_config(None, ["roles.attacker.urls=http://a:1"])


def test_a_role_s_settings_are_inherited_through_base_and_across_an_algorithm_change(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sft.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
    (tmp_path / "base.yaml").write_text(
        "roles:\n  attacker: {max_tokens: 40, sft_data: data/sft.jsonl}\n  defender: {max_tokens: 30}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "base: base.yaml\nalgorithm: {name: grpo}\nroles:\n  defender:\n    train: false\n"
    )
    cfg = load_config(tmp_path / "child.yaml")
    # the roles are not the algorithm's: an ablation that swaps the algorithm keeps them
    assert cfg.algorithm.name == "grpo"
    assert (cfg.roles.attacker.max_tokens, cfg.roles.defender.max_tokens, cfg.roles.defender.train) == (40, 30, False)
    assert cfg.roles.attacker.sft_data == str(tmp_path / "data" / "sft.jsonl")  # beside the file that names it
    assert (cfg.algorithm.sft_coef, cfg.algorithm.sft_batch_size) == (1.0, 4)  # read: a role has SFT chats


def test_the_sft_knobs_are_read_only_when_a_role_has_sft_chats():
    with pytest.raises(
        ConfigError,
        match=r"override 'algorithm.sft_coef=0.5': algorithm.sft_coef is not read .*"
        r"roles.attacker.sft_data or roles.defender.sft_data",
    ):
        load_config(None, ["algorithm.sft_coef=0.5"])
    cfg = load_config(None, ["roles.defender.sft_data=x.jsonl", "algorithm.sft_coef=0.5"])
    assert (cfg.algorithm.sft_coef, cfg.algorithm.sft_batch_size) == (0.5, 4)


def test_a_role_s_key_may_be_allowed_to_change_on_resume(tmp_path):
    saved = load_config(None)
    changed = load_config(None, ["roles.attacker.max_tokens=99"])
    with pytest.raises(ConfigError, match=r"roles.attacker.max_tokens: 256 -> 99.*--allow-change roles.attacker"):
        check_resumed_config(saved, changed)
    assert check_resumed_config(saved, changed, ["roles.attacker.max_tokens"]) == {
        "roles.attacker.max_tokens": (256, 99)
    }
    save_config(changed, tmp_path / "config.yaml")  # the saved layout is the new one and loads back
    assert "roles" in yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert load_config(tmp_path / "config.yaml") == changed
