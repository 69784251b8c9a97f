"""Run configs: typed loading, overrides, file inheritance, and the shipped recipes' values."""

import pytest

from algorithms.config import ConfigError, load_config, save_config


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        None, ["optim.lr=1e-5", "optim.betas=[0.9, 0.99]", "algorithm.tis_cap=null", "game.num_attacks=4"]
    )
    assert cfg.optim.lr == 1e-5 and cfg.optim.betas == (0.9, 0.99)
    # null: unset, which a knob of another algorithm may be; the section still has no such knob
    assert not hasattr(cfg.algorithm, "tis_cap") and cfg.game.num_attacks == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown key(s) ['lrr']; valid keys: lr,"),
        ("algorithm.name=ppo", "'ppo' is not one of 'advgame_dpo_md'"),
        ("run.steps=ten", "config.run.steps: expected int, got 'ten'"),
        ("game.judging=both", "config.game.judging: 'both' is not one of 'pairwise'"),
        ("optim.lr", "is not of the form key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_a_file_builds_on_its_base_and_round_trips(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 1e-6\n  weight_decay: 0.1\nrun:\n  steps: 7\n")
    (tmp_path / "top.yaml").write_text("base: base.yaml\noptim:\n  lr: 2.0e-6\n")
    cfg = load_config(tmp_path / "top.yaml", ["run.steps=9"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.run.steps) == (2e-6, 0.1, 9)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_data_files_named_in_a_config_are_found_beside_it_from_any_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sft.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
    (tmp_path / "recipe.yaml").write_text(
        "roles:\n  defender:\n    sft_data: data/sft.jsonl\ndata:\n  seeds: missing.jsonl\n"
    )
    monkeypatch.chdir(tmp_path.parent)  # the relative path does not exist from here
    cfg = load_config(tmp_path / "recipe.yaml")
    assert cfg.roles.defender.sft_data == str(tmp_path / "data" / "sft.jsonl")
    assert cfg.data.seeds == "missing.jsonl"  # no such file beside the config: left as written


def test_a_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml")


def test_paper_recipes_carry_the_paper_values():
    main = load_config("configs/paper/qwen25_dpo_md.yaml")
    assert (main.algorithm.name, main.algorithm.beta, main.algorithm.ema_decay) == ("advgame_dpo_md", 0.1, 0.95)
    assert (main.optim.lr, main.optim.betas, main.optim.weight_decay, main.optim.max_grad_norm) == (
        1e-6,
        (0.9, 0.95),
        0.1,
        1.0,
    )
    assert (main.optim.final_lr_scale, main.run.steps, main.game.num_attacks, main.game.num_responses) == (
        0.2,
        1000,
        2,
        2,
    )
    assert (main.rollout.temperature, main.rollout.top_p, main.roles.defender.max_tokens) == (0.6, 0.9, 2048)
    assert not main.model.lora and main.judge.model == "Qwen/Qwen2.5-32B-Instruct"
    grpo = load_config("configs/paper/qwen25_grpo.yaml")
    assert (grpo.algorithm.name, grpo.game.judging, grpo.game.num_attacks, grpo.algorithm.tis_cap) == (
        "grpo",
        "pointwise",
        4,
        2.0,
    )
    assert load_config("configs/paper/qwen25_ipo_md.yaml").algorithm.name == "advgame_ipo_md"
    llama = load_config("configs/paper/llama31_dpo_md.yaml")
    assert llama.roles.attacker.model == "mlabonne/Meta-Llama-3.1-8B-Instruct-abliterated"
    ablation = load_config("configs/paper/ablations/nonoptimistic_attacker.yaml")
    assert ablation.game.optimistic_attacker is False and ablation.optim.lr == 1e-6


# ----------------------------------------------------------------------------- allowed values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("judge.retries=-1", "config.judge.retries: -1 is not allowed; expected an integer >= 0"),
        ("run.checkpoint_every=0", "config.run.checkpoint_every: 0 is not allowed; expected an integer >= 1"),
        ("data.batch_size=0", "config.data.batch_size: 0 is not allowed; expected an integer >= 1"),
        ("run.steps=-3", "config.run.steps: -3 is not allowed; expected an integer >= 1"),
        ("optim.lr=fast", "config.optim.lr: expected a number, got 'fast'"),
        ("optim.lr=0", "config.optim.lr: 0.0 is not allowed; expected a number > 0"),
        ("optim.lr=.nan", "config.optim.lr: expected a finite number, got nan"),
        ("optim.lr=true", "config.optim.lr: expected a number, got True"),
        ("optim.betas=[0.9, 1.5]", "config.optim.betas: (0.9, 1.5) is not allowed; expected each a number in [0, 1)"),
        ("algorithm.beta=0", "config.algorithm.beta: 0.0 is not allowed; expected a number > 0"),
        ("algorithm.ema_decay=1", "config.algorithm.ema_decay: 1.0 is not allowed; expected a number in [0, 1)"),
        ("algorithm.clip=-0.2", "config.algorithm.clip: -0.2 is not allowed"),
        ("algorithm.minibatches=0", "config.algorithm.minibatches: 0 is not allowed"),
        ("algorithm.sft_coef=-1", "config.algorithm.sft_coef: -1.0 is not allowed; expected a number >= 0"),
        ("algorithm.tis_cap=0", "config.algorithm.tis_cap: 0.0 is not allowed"),
        ("rollout.top_p=0", "config.rollout.top_p: 0.0 is not allowed; expected a number in (0, 1]"),
        ("game.num_attacks=0", "config.game.num_attacks: 0 is not allowed; expected an integer >= 1"),
        ("game.direct_fraction=2", "config.game.direct_fraction: 2.0 is not allowed; expected a number in [0, 1]"),
        ("game.srt_coefficients.format=-1", "config.game.srt_coefficients.format: -1.0 is not allowed"),
        ("run.out_dir=''", "config.run.out_dir: '' is not allowed; expected a non-empty string"),
        ("game.templates.defender=v9", "config.game.templates: template 'defender' has no version 'v9'"),
    ],
)
def test_values_out_of_range_name_the_key_the_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_none_is_allowed_where_the_type_is_optional():
    assert (
        load_config(None, ["algorithm.name=grpo", "algorithm.tis=false", "algorithm.tis_cap=null"]).algorithm.tis_cap
        is None
    )


def _numeric_keys(cls: type, prefix: str = "") -> list[str]:
    import dataclasses
    import typing

    keys = []
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            keys += _numeric_keys(kind, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(kind) or (kind,)
        if any(a in (int, float) for a in args):
            keys.append(prefix + f.name)
    return keys


def test_every_numeric_field_has_a_range_and_every_rule_a_field():
    from algorithms.config import RULES, TrainConfig, _walk, validate
    from algorithms.training.algorithm import lookup, names

    # every built-in algorithm's section: each one's own dataclass (plugins' knobs carry their own rules)
    builtin = [name for name in names() if lookup(name).algorithm.__module__.startswith("algorithms.")]
    sections = [TrainConfig(algorithm=lookup(name).config(name=name)) for name in builtin]
    numeric = sorted(
        {k for s in sections for k in _numeric_keys(type(s)) + _numeric_keys(type(s.algorithm), "algorithm.")}
    )
    assert numeric and [k for k in numeric if k not in RULES] == []
    fields = {key for s in sections for key, _ in _walk(s)}
    assert [k for k in RULES if k not in fields] == []
    validate(TrainConfig())  # the defaults pass their own rules


def test_the_range_is_checked_for_values_from_a_file_too(tmp_path):
    (tmp_path / "bad.yaml").write_text("run:\n  checkpoint_every: 0\n")
    with pytest.raises(ConfigError, match=r"run\.checkpoint_every: 0 is not allowed"):
        load_config(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"run:\n  steps: [1, 2\n", "bad.yaml, line 3, column 1: not valid YAML"),
        (b"run:\n  out_dir: caf\xe9\n", "bad.yaml, line 2: not UTF-8"),
        (b"base: 5\n", "bad.yaml, line 1: config.base: expected the name of a config file, got 5"),
        (b"base: missing.yaml\n", "bad.yaml, line 1: config.base: missing.yaml does not exist"),
        (b"run:\n  steps: 10\n  checkpoint_every: 0\n", "bad.yaml, line 3: config.run.checkpoint_every: 0 is not"),
        (b"optim:\n  lr: fast\n", "bad.yaml, line 2: config.optim.lr: expected a number, got 'fast'"),
        (b"optim:\n  lrr: 1\n", "bad.yaml, line 2: config.optim: unknown key(s) ['lrr']"),
        (b"1: 2\n", "bad.yaml, line 1: config: unknown key(s) ['1']"),
        (b"game:\n  templates:\n    defender: v9\n", "bad.yaml, line 3: config.game.templates: template 'defender'"),
        (b"[" * 5000 + b"]" * 5000, "bad.yaml: not valid YAML"),
    ],
)
def test_a_bad_config_file_is_a_config_error_naming_the_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.yaml").write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "bad.yaml")
    assert message in str(error.value)


def test_a_bad_override_names_the_override_and_a_file_with_a_bom_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'run.steps=\[1': not valid YAML"):
        load_config(None, ["run.steps=[1"])
    with pytest.raises(ConfigError, match=r"override 'optim.lr=fast': config.optim.lr: expected a number"):
        load_config(None, ["optim.lr=fast"])
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfrun:\n  steps: 7\n")
    assert load_config(tmp_path / "bom.yaml").run.steps == 7


# ----------------------------------------------------------------------------- the mechanism, on any dataclass


def test_from_dict_parses_any_dataclass_with_the_config_errors_and_origins():
    from dataclasses import dataclass, field

    from algorithms.config import CHOOSE, at_least, from_dict, ranged

    @dataclass
    class Plain:
        name: str = "plain"
        size: int = ranged(1, at_least(1))

    @dataclass
    class Wide(Plain):
        width: float = 1.0

    @dataclass
    class Top:
        # the section's class is chosen by its own "name" key
        part: Plain = field(
            default_factory=Plain, metadata={CHOOSE: lambda data: Wide if data.get("name") == "wide" else Plain}
        )

    assert from_dict(Top, {"part": {"name": "wide", "width": 2}}).part == Wide(name="wide", width=2.0)
    with pytest.raises(ConfigError, match=r"config\.part: unknown key\(s\) \['width'\]; valid keys: name, size"):
        from_dict(Top, {"part": {"width": 2}})
    origins = {"part.size": "my.yaml, line 4"}
    with pytest.raises(ConfigError) as error:
        from_dict(Top, {"part": {"size": 0}}, origins=origins)
    assert str(error.value) == "my.yaml, line 4: config.part.size: 0 is not allowed; expected an integer >= 1"


def test_one_function_checks_every_rule_and_each_sections_own_check():
    from algorithms.config import RULES, TrainConfig, validate

    cfg = TrainConfig()
    cfg.run.steps = 0  # set after loading: the rule on the field still holds
    with pytest.raises(ConfigError, match=r"config\.run\.steps: 0 is not allowed; expected an integer >= 1"):
        validate(cfg)
    cfg = TrainConfig()
    cfg.judge.kind, cfg.judge.backend = "llm", "openai"
    with pytest.raises(ConfigError, match=r"config\.judge\.url: judge\.backend openai needs judge\.url"):
        validate(cfg)
    assert RULES["optim.lr"].allowed == "a number > 0" and RULES["game.num_attacks"].allowed == "an integer >= 1"
