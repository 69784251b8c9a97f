"""The levers of the next demo recipe (issue 27): ordinary instructions mixed into the benign split
(``data.extra_benign_seeds``), an SFT term that fades out (``algorithm.sft_stop_step``), and the
candidate recipe that uses them (configs/cpu_demo_v2.yaml)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from advgame_env import Label, bundled_seeds, load_seeds
from advgame_env.rule_judge import Behaviour, behaviour
from algorithms.config import ConfigError, load_config
from algorithms.training.run_setup import extra_benign_seeds
from algorithms.training.seed_stream import SeedStream, mixed_take
from algorithms.training.sft import sft_coef_at
from algorithms.training.trainer import Trainer
from tests.helpers import config

ROOT = Path(__file__).resolve().parents[1]
V2 = ROOT / "configs" / "cpu_demo_v2.yaml"


def write_seeds(path: Path, labels: list[str]) -> Path:
    rows = [
        {"id": f"x{i}", "prompt": f"List {i + 2} kinds of cheese.", "category": label} for i, label in enumerate(labels)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the SFT term's schedule


def test_the_sft_coefficient_is_constant_without_a_stop_step():
    assert [sft_coef_at(step, 0.5) for step in (0, 7, 10_000)] == [0.5, 0.5, 0.5]


def test_the_sft_coefficient_falls_linearly_to_zero_at_the_stop_step():
    # stop at 6 after 3 decay steps: full for steps 0-2, then 3/4, 2/4, 1/4 of it, then off
    got = [sft_coef_at(step, 2.0, stop_step=6, decay_steps=3) for step in range(9)]
    assert got == [2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0, 0.0]
    # no decay steps: a switch-off
    assert [sft_coef_at(step, 1.0, stop_step=2) for step in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_the_sft_schedule_keys_are_read_with_an_sft_file_only():
    cfg = load_config(None, ["roles.defender.sft_data=x.jsonl", "algorithm.sft_stop_step=10"])
    assert (cfg.algorithm.sft_stop_step, cfg.algorithm.sft_decay_steps) == (10, 0)
    default = load_config(None, ["roles.defender.sft_data=x.jsonl"]).algorithm
    assert (default.sft_stop_step, default.sft_decay_steps) == (None, None)  # today's constant term
    with pytest.raises(ConfigError, match=r"algorithm\.sft_stop_step is not read"):
        load_config(None, ["algorithm.sft_stop_step=10"])
    with pytest.raises(ConfigError, match=r"algorithm\.sft_decay_steps is not read"):
        load_config(None, ["roles.defender.sft_data=x.jsonl", "algorithm.sft_decay_steps=3"])
    with pytest.raises(ConfigError, match="set at most 4"):
        load_config(
            None, ["roles.defender.sft_data=x.jsonl", "algorithm.sft_stop_step=4", "algorithm.sft_decay_steps=5"]
        )


# ----------------------------------------------------------------------------- extra benign seeds


def test_the_extra_benign_share_is_read_with_a_file_only(tmp_path):
    cfg = load_config(None, [f"data.extra_benign_seeds={write_seeds(tmp_path / 'e.jsonl', ['benign'])}"])
    assert cfg.data.extra_benign_share == 0.5
    assert load_config(None, []).data.extra_benign_share is None
    with pytest.raises(ConfigError, match=r"data\.extra_benign_share: it is read only with data\.extra_benign_seeds"):
        load_config(None, ["data.extra_benign_share=0.3"])
    with pytest.raises(ConfigError, match=r"extra_benign_share: 1\.5 is not allowed"):
        load_config(None, ["data.extra_benign_seeds=e.jsonl", "data.extra_benign_share=1.5"])


def test_an_extra_benign_file_with_a_harmful_seed_is_refused(tmp_path):
    bad = write_seeds(tmp_path / "mixed.jsonl", ["benign", "harmful", "benign"])
    cfg = load_config(None, [f"data.extra_benign_seeds={bad}"])
    with pytest.raises(ConfigError, match=r"holds 1 harmful seeds \(first: x1\)"):
        extra_benign_seeds(cfg)


def test_mixed_take_draws_the_share_from_each_stream_and_moves_both():
    main, extra = SeedStream(list(range(100)), 1), SeedStream(list(range(100, 200)), 2)
    got = mixed_take(main, extra, 0.25, 400, random.Random(0))
    from_extra = sum(item >= 100 for item in got)
    assert 70 < from_extra < 130 and len(got) == 400  # a quarter, drawn
    assert main.epoch * 100 + main.position == 400 - from_extra and extra.epoch * 100 + extra.position == from_extra
    only_main = mixed_take(SeedStream(list(range(10)), 1), SeedStream([99], 2), 0.0, 4, random.Random(1))
    assert only_main == SeedStream(list(range(10)), 1).take(4)
    assert mixed_take(SeedStream([0], 1), SeedStream([99], 2), 1.0, 3, random.Random(1)) == [99, 99, 99]


@pytest.mark.slow
def test_the_game_plays_extra_benign_seeds_and_the_sft_term_stops(tiny_chat, tmp_path):
    extra = write_seeds(tmp_path / "everyday.jsonl", ["benign"] * 6)
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"Q {i}?", "response": "No."}) + "\n" for i in range(4)))
    overrides = [
        f"data.extra_benign_seeds={extra}",
        "data.extra_benign_share=1.0",
        f"roles.defender.sft_data={sft}",
        "algorithm.sft_stop_step=1",
        "run.steps=2",
    ]
    trainer = Trainer(config(tiny_chat, tmp_path / "run", *overrides))
    played: list[tuple[Label, str]] = []
    real, sft_steps = trainer._seeds, []
    trainer._seeds = lambda label, split, n: [(played.append((label, s.id)), s)[1] for s in real(label, split, n)]  # type: ignore[method-assign]
    real_sft = trainer._sft_loss
    trainer._sft_loss = lambda player, role: sft_steps.append(trainer.step) or real_sft(player, role)  # type: ignore[method-assign]
    trainer.train_step()
    trainer.train_step()
    benign = {seed for label, seed in played if label is Label.BENIGN}
    assert benign and benign <= {f"x{i}" for i in range(6)}  # every benign seed from the extra file
    assert {seed for label, seed in played if label is Label.HARMFUL}.isdisjoint(benign)
    assert sft_steps and set(sft_steps) == {0}  # the SFT term at step 0, none from the stop step on
    assert trainer.state()["data"]["benign_extra"] == trainer.extra_benign.state()  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- the candidate recipe


def test_the_candidate_recipe_loads_with_its_levers():
    cfg, demo = load_config(V2), load_config(ROOT / "configs" / "cpu_demo.yaml")
    assert cfg.data.extra_benign_seeds is not None and cfg.data.extra_benign_share == 0.5
    assert cfg.algorithm.sft_stop_step is not None and cfg.algorithm.sft_stop_step < cfg.run.steps
    assert cfg.roles.defender.sft_data != demo.roles.defender.sft_data
    assert (cfg.game, cfg.optim, cfg.rollout) == (demo.game, demo.optim, demo.rollout)  # the demo otherwise
    seeds = extra_benign_seeds(cfg)
    assert len(seeds) >= 200 and len({s.prompt for s in seeds}) == len(seeds)
    assert {s.id for s in seeds}.isdisjoint({s.id for s in bundled_seeds("all")})


def test_the_candidate_sft_data_refuses_in_many_ways_and_answers_the_instructions():
    cfg = load_config(V2)
    assert cfg.roles.defender.sft_data is not None and cfg.data.extra_benign_seeds is not None
    rows = [json.loads(line) for line in Path(cfg.roles.defender.sft_data).read_text(encoding="utf-8").splitlines()]
    refusals = [r["response"] for r in rows if r["label"] == "harmful"]
    helpful = [r for r in rows if r["label"] == "benign"]
    assert all(behaviour(text) is not Behaviour.COMPLIANCE for text in refusals)
    assert all(behaviour(r["response"]) is Behaviour.COMPLIANCE for r in helpful)
    assert len(set(refusals)) >= 24 and max(refusals.count(text) for text in refusals) <= len(refusals) / 16
    assert len(helpful) >= 1.5 * len(refusals)  # at least three helpful chats to two refusals
    instructions = {s.id for s in load_seeds(cfg.data.extra_benign_seeds)}
    assert sum(r["id"] in instructions for r in helpful) >= 100
