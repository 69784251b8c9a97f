"""run_setup: where each player starts."""

import json

from algorithms.config import load_config
from algorithms.training.run_setup import start_model


def test_a_policy_shared_by_both_roles_starts_from_the_model_name(tmp_path):
    """Self-play under full fine-tuning loads its one player (named "policy") from model.name."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cfg = load_config("configs/cpu_self_redteam.yaml", [f"model.name={tmp_path / 'base'}", "model.lora=false"])
    assert start_model(cfg, "policy") == str(tmp_path / "base")
