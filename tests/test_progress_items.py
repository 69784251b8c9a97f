"""Progress item by item (not batch by batch) for red-teaming and instruction following: the
callback is called once per item, in order, with the total, on scripted backends (fast)."""

from __future__ import annotations

import pytest

from advgame_env import Game, GameConfig, Label, RuleJudge, bundled_instruction_prompts, bundled_seeds
from agents.policy import Policy
from algorithms.evaluation.redteam import RedTeamConfig, redteam
from algorithms.evaluation.utility import instruction_following
from tests.test_progress import Scripted


def test_redteam_reports_every_item(tmp_path):
    seeds = [s for s in bundled_seeds("heldout") if s.label is Label.HARMFUL][:3]
    attacker = Policy(Scripted("<think>Ask plainly.</think><prompt>How do I pick a lock?</prompt>"), max_tokens=8)
    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(samples=2, batch_size=4)
    calls: list[tuple[int, int]] = []
    redteam(
        attacker, Scripted("Sure."), game, seeds, tmp_path, cfg, log=lambda _: None, on_item=lambda *a: calls.append(a)
    )
    assert calls == [(n, 9) for n in range(1, 10)]  # 3 seeds x (baseline + 2 samples), batches of 4
    more = [s for s in bundled_seeds("heldout") if s.label is Label.HARMFUL][:4]
    calls.clear()
    redteam(
        attacker, Scripted("Sure."), game, more, tmp_path, cfg, log=lambda _: None, on_item=lambda *a: calls.append(a)
    )
    assert calls == [(10, 12), (11, 12), (12, 12)]  # counted from those already recorded


def test_redteam_says_what_each_batch_is_doing_between_items(tmp_path, capsys):
    """A batch's minutes are not silent: each part of it (attacker, rewrite check, target, judge)
    is announced as it starts, batch by batch; the default bar shows it as its postfix."""
    seeds = [s for s in bundled_seeds("heldout") if s.label is Label.HARMFUL][:3]
    attacker = Policy(Scripted("<think>Ask plainly.</think><prompt>How do I pick a lock?</prompt>"), max_tokens=8)
    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(samples=1, batch_size=4)
    said: list[str] = []
    redteam(
        attacker,
        Scripted("Sure."),
        game,
        seeds,
        tmp_path / "a",
        cfg,
        log=lambda _: None,
        on_item=lambda *a: None,
        on_phase=said.append,
    )
    parts = ["the attacker writing", "checking", "the target answering", "the judge classifying"]
    assert [s.split(": ", 1)[0] for s in said] == ["batch 1 of 2"] * 4 + ["batch 2 of 2"] * 4
    assert [next(p for p in parts if s.split(": ", 1)[1].startswith(p)) for s in said] == parts * 2
    assert said[0].endswith("writing 4") and said[4].endswith("writing 2")  # 3 seeds x (baseline + 1 sample)
    redteam(attacker, Scripted("Sure."), game, seeds, tmp_path / "b", cfg, log=lambda _: None)
    assert "batch 2 of 2: the judge classifying" in capsys.readouterr().err


def test_instruction_following_reports_every_answer():
    prompts = bundled_instruction_prompts()[:5]
    calls: list[tuple[int, int]] = []
    result = instruction_following(
        Scripted("A short answer."), prompts, max_tokens=8, batch=2, on_item=lambda *a: calls.append(a)
    )
    assert calls == [(n, 5) for n in range(1, 6)] and result.prompt_strict.total == 5


def test_the_win_rate_counts_each_sides_answers(capsys):
    from advgame_env import RuleJudge
    from algorithms.evaluation.utility import win_rate
    from tests.test_progress import last_count

    benign = [s for s in bundled_seeds("heldout") if s.label is Label.BENIGN][:5]
    win_rate(Scripted("A helpful answer."), Scripted("Another answer."), RuleJudge(), benign, batch=2)
    err = capsys.readouterr().err
    assert last_count(err, "win rate: the model answering") == (5, 5)
    assert last_count(err, "win rate: the reference answering") == (5, 5)


def test_crossplay_reports_every_rewrite_and_every_answer(tmp_path):
    from tests.test_crossplay import SEEDS, play

    calls: list[tuple[int, int]] = []
    play(tmp_path, [[0.5, 1.0], [0.0, 0.5]], on_item=lambda *a: calls.append(a))
    rewriting = [(n, len(SEEDS)) for n in range(1, len(SEEDS) + 1)]  # one phase per attacker
    answering = [(n, 3 * len(SEEDS)) for n in range(1, 3 * len(SEEDS) + 1)]  # baseline + 2 attackers, per defender
    assert calls == 2 * rewriting + 2 * answering


def test_a_training_step_names_each_generation_and_judge_call_as_it_starts():
    from advgame_env import Round
    from algorithms.training.rollouts import play

    game = Game(RuleJudge(), GameConfig(num_attacks=2, num_responses=2))
    rounds = [Round(s) for s in bundled_seeds("heldout")[:3]]
    attacker = Policy(Scripted("<think>Ask plainly.</think><prompt>How do I pick a lock?</prompt>"), max_tokens=8)
    phases: list[str] = []
    play(game, attacker, Policy(Scripted("Sure."), max_tokens=8), rounds, on_phase=phases.append)
    assert phases == [
        "attacker writing 6 attacks",
        "judge reading 6 attacks",
        "defender writing 12 answers",
        "judge comparing 12 answers",
    ]


def test_the_training_bar_shows_the_phase_of_the_step_under_way(tmp_path, capsys):
    from algorithms.training.runlog import RunLog

    log = RunLog(tmp_path, start_step=0, total_steps=3, tensorboard=False, wandb_project=None, progress=True, config={})
    log.phase("harmful: judge comparing 12 answers")
    assert log.bar is not None and log.bar.desc == "train step 1: harmful: judge comparing 12 answers"
    log.log(1, {"game/defender_reward": 0.5})
    assert log.bar.desc == "train" and log.bar.n == 1  # the step is done: its phases are over
    log.phase("benign: attacker writing 4 attacks")
    assert log.bar.desc == "train step 2: benign: attacker writing 4 attacks"
    log.close()
    assert "train step 1: harmful: judge comparing 12 answers" in capsys.readouterr().err


@pytest.mark.slow
def test_a_training_run_shows_its_judge_calls_on_the_bar(tiny_chat, tmp_path, capsys):
    from algorithms.training.trainer import Trainer
    from tests.helpers import config

    cfg = config(tiny_chat, tmp_path / "run", "run.steps=1", "run.progress=true", "run.validate_every=0")
    Trainer(cfg).train()
    err = capsys.readouterr().err
    assert "train step 1: judge reading" in err and "train step 1: judge comparing" in err  # both splits at once
    assert "train step 1: updating on" in err


def test_compare_says_where_its_table_goes_then_counts_every_final_pair(tmp_path, monkeypatch):
    import algorithms.evaluation.compare as compare_module
    from algorithms.evaluation.compare import CompareConfig, Entry, compare

    monkeypatch.setattr(compare_module, "run_state", lambda cfg: "finished")  # nothing trains
    monkeypatch.setattr(compare_module, "_judge", lambda cc: RuleJudge())
    monkeypatch.setattr(compare_module, "_measure_run", lambda *a: {compare_module.HARMFUL: 0.5})
    configs = (Entry("cpu_smoke.yaml"), Entry("cpu_dpo.yaml"))
    cc = CompareConfig(configs=configs, seeds=2, crossplay_prompts=0, out=str(tmp_path))
    said: list[str] = []
    calls: list[tuple[int, int]] = []
    compare(cc, log=said.append, on_item=lambda *a: calls.append(a))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    first = next(i for i, line in enumerate(said) if "reusing" in line)
    assert any(f"the table will be {tmp_path / 'comparison.md'}" in line for line in said[:first])
