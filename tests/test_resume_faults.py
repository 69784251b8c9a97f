"""Resuming a run from damaged files: corrupt or stray checkpoints, a torn metrics log, and a
config that changed since the run started."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from algorithms.config import ConfigError, config_changes, load_config
from algorithms.training.checkpoints import (
    CheckpointError,
    checkpoints,
    load_checkpoint,
    newest_intact_checkpoint,
    save_checkpoint,
)
from algorithms.training.runlog import RunLogError, read_metrics, repair_metrics
from algorithms.training.trainer import Trainer
from tests.helpers import tiny_run

STATE = {"step": 0, "weights": {}, "optimizers": {}, "schedulers": {}, "data": {}, "rng": {}}


def _saved(run: Path, *steps: int) -> None:
    for step in steps:
        save_checkpoint(run, step, STATE | {"step": step}, keep=0)


# ----------------------------------------------------------------------------- checkpoint files


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(b""), "state.pt is empty"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "state.pt is not a readable"),
        (lambda p: p.write_bytes(b"garbage" * 100), "state.pt is not a readable"),
        (lambda p: p.unlink(), "has no state.pt"),
        (lambda p: torch.save({"step": 2}, p), "state.pt lacks weights, optimizers"),
        (lambda p: torch.save([1, 2], p), "state.pt lacks"),
        (lambda p: torch.save(STATE | {"step": 9}, p), "state.pt is of step 9"),
    ],
)
def test_a_damaged_checkpoint_is_a_checkpoint_error_naming_it(tmp_path, damage, reason):
    _saved(tmp_path, 2)
    damage(tmp_path / "checkpoints" / "step_0000002" / "state.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "checkpoints" / "step_0000002")
    assert "step_0000002" in str(error.value) and reason in str(error.value)


def test_the_newest_intact_checkpoint_is_chosen_and_stray_folders_are_ignored(tmp_path):
    _saved(tmp_path, 1, 2, 3)
    (tmp_path / "checkpoints" / "step_0000003" / "state.pt").write_bytes(b"")
    (tmp_path / "checkpoints" / "step_latest").mkdir()  # a stray folder is no checkpoint
    (tmp_path / "checkpoints" / "step_0000009").write_text("a file, not a folder")
    assert [p.name for p in checkpoints(tmp_path)] == ["step_0000001", "step_0000002", "step_0000003"]
    path, state, skipped = newest_intact_checkpoint(tmp_path)
    assert (path.name, state["step"]) == ("step_0000002", 2)
    assert len(skipped) == 1 and "step_0000003" in skipped[0] and "empty" in skipped[0]
    for step in (1, 2):
        (tmp_path / "checkpoints" / f"step_{step:07d}" / "state.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*step_0000003.*step_0000002.*step_0000001"):
        newest_intact_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- the metrics log


def test_a_torn_last_metrics_line_is_dropped_and_a_torn_middle_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]  # a running or killed run's log reads
    assert "torn last line" in str(repair_metrics(path))
    assert path.read_text() == '{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n'
    assert repair_metrics(path) is None  # nothing left to repair
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(RunLogError, match=r"metrics\.jsonl, line 2: not a metrics record"):
        repair_metrics(path)
    path.write_text('{"step": 1}\n["no step"]\n')
    with pytest.raises(RunLogError, match="line 2"):
        repair_metrics(path)


# ----------------------------------------------------------------------------- config changes


def test_config_changes_name_each_key_with_both_values():
    old = load_config(None, ["optim.lr=1e-5", "run.steps=4"])
    new = load_config(None, ["optim.lr=2e-5", "run.steps=4", "optim.betas=[0.8, 0.9]"])
    assert config_changes(old, new) == {"optim.lr": (1e-5, 2e-5), "optim.betas": ((0.9, 0.95), (0.8, 0.9))}
    assert config_changes(old, old) == {}


# ----------------------------------------------------------------------------- a real run (tiny model)


def _config(model: Path, out: Path, *overrides: str):
    """A checkpoint after each step; short answers, default learning rate and temperature (the
    changed-config test names their values)."""
    return tiny_run(
        model,
        out,
        "run.checkpoint_every=1",
        "roles.attacker.max_tokens=8",
        "roles.defender.max_tokens=8",
        *overrides,
    )


@pytest.fixture(scope="module")
def finished_run(tiny_chat, tmp_path_factory) -> Path:
    """A two-step run with a checkpoint after each step (copied by each test that damages it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(_config(tiny_chat, out)).train()
    return out


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_resumes_from_the_one_before(tiny_chat, finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path / "run")
    newest = run / "checkpoints" / "step_0000002" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated write
    with (run / "metrics.jsonl").open("a") as log:
        log.write('{"step": 3, "tr')  # and a torn log line
    cfg = _config(tiny_chat, run)
    trainer = Trainer(cfg, resume=True)
    assert trainer.step == 1
    said = capsys.readouterr().err
    assert "resuming from step_0000001" in said
    assert "skipped " in said and "step_0000002: state.pt is not a readable checkpoint" in said
    assert "torn last line" in said
    assert (run / "checkpoints" / "step_0000002.corrupt").is_dir()  # kept aside, out of the way
    trainer.train()
    assert [p.name for p in checkpoints(run)] == ["step_0000001", "step_0000002"]
    assert load_checkpoint(run / "checkpoints" / "step_0000002")["step"] == 2
    assert sorted({m["step"] for m in read_metrics(run)}) == [1, 2]
    record = json.loads((run / "resumes.jsonl").read_text().splitlines()[-1])
    assert record["checkpoint"] == "step_0000001" and "step_0000002" in record["skipped"][0]


@pytest.mark.slow
def test_a_changed_config_is_refused_on_resume_naming_the_keys(tiny_chat, finished_run, tmp_path):
    run = _copy(finished_run, tmp_path / "run")
    before = (run / "config.yaml").read_text()
    changed = _config(tiny_chat, run, "optim.lr=5e-4", "rollout.temperature=0.3")
    with pytest.raises(ConfigError) as error:
        Trainer(changed, resume=True)
    message = str(error.value)
    assert "optim.lr: 1e-06 -> 0.0005" in message and "rollout.temperature: 0.6 -> 0.3" in message
    assert "--allow-change" in message
    assert (run / "config.yaml").read_text() == before  # untouched
    # operational keys may change; run.steps only when allowed, and the change is recorded
    with pytest.raises(ConfigError, match=r"run\.steps: 2 -> 3"):
        Trainer(_config(tiny_chat, run, "run.steps=3", "run.keep_checkpoints=1"), resume=True)
    trainer = Trainer(
        _config(tiny_chat, run, "run.steps=3", "run.keep_checkpoints=1"), resume=True, allow_change=["run.steps"]
    )
    assert trainer.step == 2
    record = json.loads((run / "resumes.jsonl").read_text().splitlines()[-1])
    changed = record["changed"]
    assert changed["run.out_dir"][1] == str(run)  # the folder was copied: recorded, allowed
    assert {k: v for k, v in changed.items() if k != "run.out_dir"} == {
        "run.steps": [2, 3],
        "run.keep_checkpoints": [3, 1],
    }
    with pytest.raises(ConfigError, match="not a config key"):
        Trainer(_config(tiny_chat, run), resume=True, allow_change=["run.stepz"])


def test_a_checkpoint_in_the_shape_written_before_the_schema_resumes(tiny_chat, finished_run, tmp_path):
    run = _copy(finished_run, tmp_path / "run")
    newest = run / "checkpoints" / "step_0000002" / "state.pt"
    saved = torch.load(newest, weights_only=True)
    old = {key: saved[key] for key in ("step", "weights", "optimizers", "schedulers", "data", "rng")}
    torch.save(dict(old), newest)  # a plain dict with the keys spelled out, as Trainer.state() wrote it
    trainer = Trainer(
        _config(tiny_chat, run, "run.steps=3", "run.keep_checkpoints=3"), resume=True, allow_change=["run.steps"]
    )
    assert trainer.step == 2
    for key, tensors in old["weights"].items():
        name, which = key.split("/")
        for param, value in trainer.learners[name].player.weights(which).items():
            torch.testing.assert_close(value, tensors[param], rtol=0, atol=0)
    assert trainer.state()["data"] == old["data"]
