"""Hostile input, round 2: inputs that crashed, stalled or were silently accepted, each now a
clear error or a defined outcome -- a duplicate YAML key, ``retries=-1`` in the Python API, a
data file checked only after the models loaded, duplicate and colliding seed ids, a garbage
checkpoint whose message quoted torch's unsafe advice, an unknown section in an override."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import algorithms.training.trainer as trainer_module
from advgame_env import Game, GameConfig, Label, Round, RuleJudge, Seed
from advgame_env.seeds import SeedFormatError, load_seeds
from algorithms.cli.main import main
from algorithms.config import ConfigError, load_config
from algorithms.evaluation.redteam import retry_call
from algorithms.training.checkpoints import CheckpointError, load_checkpoint
from algorithms.training.rollouts import play
from algorithms.training.sft import SFTFormatError
from algorithms.training.trainer import Trainer

# ----------------------------------------------------------------------------- duplicate YAML keys


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("run: {steps: 3, steps: 9}\n", "dup.yaml, line 1: config.run.steps is given twice (first on line 1)"),
        ("run:\n  steps: 3\noptim:\n  lr: 1.0e-5\nrun:\n  seed: 4\n", "dup.yaml, line 5: config.run is given twice"),
        (
            "optim:\n  lr: 1.0e-5\n  betas: [0.9, 0.99]\n  lr: 2.0e-5\n",
            "line 4: config.optim.lr is given twice (first on line 2)",
        ),
    ],
)
def test_a_key_given_twice_in_a_config_file_is_refused_naming_file_line_and_key(tmp_path, content, message):
    (tmp_path / "dup.yaml").write_text(content)
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "dup.yaml")
    assert message in str(error.value)


def test_advgame_train_exits_2_on_a_duplicate_key_before_anything_runs(tmp_path, capsys, monkeypatch):
    def started(*args, **kwargs):  # before the fix, a 9-step run started here
        raise AssertionError("advgame train started a run from a config with a duplicate key")

    monkeypatch.setattr(trainer_module, "train", started)
    (tmp_path / "dup.yaml").write_text(f"run: {{steps: 3, steps: 9, out_dir: {tmp_path / 'run'}}}\n")
    assert main(["train", "--config", str(tmp_path / "dup.yaml")]) == 2
    err = capsys.readouterr().err
    assert "config.run.steps is given twice" in err and "dup.yaml, line 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_same_key_in_two_sections_and_in_a_base_file_is_not_a_duplicate(tmp_path):
    (tmp_path / "base.yaml").write_text("run:\n  steps: 3\n")
    (tmp_path / "top.yaml").write_text(
        "base: base.yaml\nrun:\n  steps: 9\ngame:\n  num_attacks: 2\nopponents:\n  draw: latest\n"
    )
    cfg = load_config(tmp_path / "top.yaml")
    assert cfg.run.steps == 9 and cfg.game.num_attacks == 2


def test_an_unknown_section_in_an_override_names_the_override():
    with pytest.raises(ConfigError, match=r"^override 'optimm.lr=1': config: unknown key\(s\) \['optimm'\]"):
        load_config(None, ["optimm.lr=1"])


# ----------------------------------------------------------------------------- retries in the Python API


class Scripted:
    """A test double of a policy: fixed, valid attacks and answers."""

    def __init__(self) -> None:
        self.calls = 0

    def attack(self, observations, num_attacks):
        self.calls += 1
        return [("<think>p</think><prompt>How do I pick a lock?</prompt>",) * num_attacks for _ in observations]

    def respond(self, observations, num_responses):
        self.calls += 1
        return [tuple(("I can't help with that.",) * num_responses for _ in obs) for obs in observations]


@pytest.mark.parametrize("retries", [-1, -5, 1.5, True])
def test_play_refuses_retries_that_are_not_a_count_naming_retries(retries):
    rounds = [Round(Seed("h", "How do I pick a lock?", Label.HARMFUL))]
    attacker, defender = Scripted(), Scripted()
    with pytest.raises(ValueError, match="retries"):
        play(Game(RuleJudge(), GameConfig()), attacker, defender, rounds, retries=retries)
    assert attacker.calls == defender.calls == 0 and rounds[0].phase == "attack"
    # and the same call with retries=0 plays the round through
    play(Game(RuleJudge(), GameConfig()), attacker, defender, rounds, retries=0)
    assert rounds[0].phase == "done"


def test_retry_call_refuses_negative_retries():
    with pytest.raises(ValueError, match="retries"):
        retry_call(lambda: 1, -1, 0.0)


# ----------------------------------------------------------------------------- files, before any model


@pytest.fixture
def no_model(monkeypatch):
    def refuse(**kwargs):
        raise AssertionError("a model was loaded before the config's files were checked")

    monkeypatch.setattr(trainer_module, "build_players", refuse)


@pytest.mark.parametrize(
    ("override", "error", "says"),
    [
        ("data.seeds={tmp}/missing.jsonl", FileNotFoundError, "missing.jsonl does not exist"),
        ("data.validation_seeds={tmp}/missing.csv", FileNotFoundError, "missing.csv does not exist"),
        ("data.seeds={tmp}/bad.jsonl", SeedFormatError, "bad.jsonl, line 1: missing field 'category'"),
        ("roles.defender.sft_data={tmp}/missing_sft.jsonl", FileNotFoundError, "missing_sft.jsonl does not exist"),
        ("roles.attacker.sft_data={tmp}/bad_sft.jsonl", SFTFormatError, "bad_sft.jsonl, line 1: not an SFT record"),
    ],
)
def test_every_file_a_config_names_is_checked_before_any_model_loads(tmp_path, no_model, override, error, says):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "bad_sft.jsonl").write_text('{"prompt": "x"}\n')
    sft = ["algorithm.sft_coef=0.1"] if "sft_data" in override else []
    cfg = load_config(None, [f"run.out_dir={tmp_path / 'run'}", override.format(tmp=tmp_path), *sft])
    with pytest.raises(error, match=None) as caught:
        Trainer(cfg)
    assert says in str(caught.value)


# ----------------------------------------------------------------------------- seed ids


def test_a_seed_id_given_twice_in_one_file_is_refused_naming_both_places(tmp_path):
    lines = [{"id": "a", "prompt": "p", "category": "benign"}, {"prompt": "q", "category": "benign"}]
    lines.append({"id": "a", "prompt": "r", "category": "harmful"})
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(SeedFormatError, match=r"s.jsonl, line 3: seed id 'a' is given twice \(first at line 1\)"):
        load_seeds(tmp_path / "s.jsonl")


def test_generated_seed_ids_never_collide_with_given_ones(tmp_path):
    # the record on line 2 would be dflt-2, the id line 1 gives itself
    lines = [{"id": "dflt-2", "prompt": "p", "category": "benign"}, {"prompt": "q", "category": "benign"}]
    lines += [{"prompt": "r", "category": "harmful"}, {"id": "dflt-3-2", "prompt": "s", "category": "harmful"}]
    (tmp_path / "dflt.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ids = [s.id for s in load_seeds(tmp_path / "dflt.jsonl")]
    assert len(set(ids)) == len(ids) == 4 and ids[0] == "dflt-2" and ids[3] == "dflt-3-2"
    assert ids[1] != "dflt-2" and ids[2] == "dflt-3"
    # and the ids are the same on every load (they key results and resumes)
    assert [s.id for s in load_seeds(tmp_path / "dflt.jsonl")] == ids
    csv = tmp_path / "c.csv"
    csv.write_text("id,prompt,category\nc-3,a,benign\n,b,benign\n")
    assert [s.id for s in load_seeds(csv)] == ["c-3", "c-3-2"]


# ----------------------------------------------------------------------------- an untrusted state.pt


def test_a_garbage_state_file_is_refused_with_what_to_do_never_torchs_unsafe_advice(tmp_path):
    folder = tmp_path / "step_0000001"
    folder.mkdir()
    (folder / "state.pt").write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder)
    said = str(caught.value)
    assert "state.pt is not a readable checkpoint" in said
    assert "Re-running" not in said and "will likely succeed" not in said  # torch's advice, not ours
    assert "do not load it with weights_only=False" in said and "resume from an older checkpoint" in said


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.integers(-(10**6), 3))
def test_any_retries_either_plays_the_rounds_or_is_refused(retries):
    rounds = [Round(Seed("b", "How do I boil an egg?", Label.BENIGN))]
    game = Game(RuleJudge(), GameConfig())
    if retries < 0:
        with pytest.raises(ValueError, match="retries"):
            play(game, Scripted(), Scripted(), rounds, retries=retries)
        assert rounds[0].phase == "attack"
    else:
        play(game, Scripted(), Scripted(), rounds, retries=retries)
        assert rounds[0].phase == "done"


def test_advgame_train_names_a_missing_seed_file_in_one_line_before_any_model(tmp_path, capsys, no_model):
    run = tmp_path / "run"
    assert main(["train", f"data.seeds={tmp_path / 'nope.jsonl'}", f"run.out_dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"advgame train: seed file {tmp_path / 'nope.jsonl'} does not exist"
