"""Run configs: typed loading, overrides, file inheritance, and the shipped recipes' values."""

from pathlib import Path

import pytest

from algorithms.config import ConfigError, load_config, save_config

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").rglob("*.yaml"))


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        None, ["optim.lr=1e-5", "optim.betas=[0.9, 0.99]", "algorithm.tis_cap=null", "game.num_attacks=4"]
    )
    assert cfg.optim.lr == 1e-5 and cfg.optim.betas == (0.9, 0.99)
    assert cfg.algorithm.tis_cap is None and cfg.game.num_attacks == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown key(s) ['lrr']; valid keys: lr,"),
        ("algorithm.name=ppo", "'ppo' is not one of 'advgame_dpo_md'"),
        ("run.steps=ten", "config.run.steps: expected int, got 'ten'"),
        ("game.num_attacks=0", "num_attacks and num_responses must be at least 1"),
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
    (tmp_path / "recipe.yaml").write_text("algorithm:\n  sft_data: data/sft.jsonl\ndata:\n  seeds: missing.jsonl\n")
    monkeypatch.chdir(tmp_path.parent)  # the relative path does not exist from here
    cfg = load_config(tmp_path / "recipe.yaml")
    assert cfg.algorithm.sft_data == str(tmp_path / "data" / "sft.jsonl")
    assert cfg.data.seeds == "missing.jsonl"  # no such file beside the config: left as written


def test_a_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    load_config(path)


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
    assert (main.rollout.temperature, main.rollout.top_p, main.rollout.defender_max_tokens) == (0.6, 0.9, 2048)
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
    assert llama.model.attacker == "mlabonne/Meta-Llama-3.1-8B-Instruct-abliterated"
    ablation = load_config("configs/paper/ablations/nonoptimistic_attacker.yaml")
    assert ablation.game.optimistic_attacker is False and ablation.optim.lr == 1e-6
