"""``base:`` in a user's config names a shipped config the same way ``--config`` does."""

import pytest

from algorithms.config import ConfigError, load_config


def test_a_user_config_starts_from_a_shipped_config_by_name(tmp_path):
    mine = tmp_path / "my_run.yaml"
    mine.write_text("base: cpu_smoke.yaml\nrun:\n  steps: 1\n")
    cfg, shipped = load_config(mine), load_config("cpu_smoke.yaml")
    assert cfg.run.steps == 1 and cfg.model == shipped.model and cfg.algorithm == shipped.algorithm
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text("base: configs/cpu_demo.yaml\n")  # the docs' spelling
    assert load_config(tmp_path / "configs" / "x.yaml").game == load_config("configs/cpu_demo.yaml").game


def test_a_file_beside_wins_and_a_missing_base_is_named(tmp_path):
    (tmp_path / "cpu_smoke.yaml").write_text("run:\n  steps: 7\n")
    (tmp_path / "mine.yaml").write_text("base: cpu_smoke.yaml\n")
    assert load_config(tmp_path / "mine.yaml").run.steps == 7
    (tmp_path / "typo.yaml").write_text("base: cpu_smok.yaml\n")
    with pytest.raises(
        ConfigError, match=r"cpu_smok\.yaml does not exist beside typo\.yaml, nor is it a shipped config"
    ):
        load_config(tmp_path / "typo.yaml")
