"""advgame crossplay: hand-made matrices through the whole pipeline (scripted attackers and
defenders, the rule judge) give the known meta-game equilibria; resuming after a kill; input
errors; and one CLI run on the tiny chat model (slow)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from advgame_env import Game, GameConfig, Label, RuleJudge, Seed, bundled_seeds
from agents.testing import ScriptedBackend
from algorithms.cli.main import main
from algorithms.evaluation.crossplay import (
    CrossPlay,
    CrossPlayConfig,
    CrossPlayError,
    Member,
    choose_seeds,
    crossplay,
    members,
)
from algorithms.evaluation.redteam import RedTeamError

HARMFUL = bundled_seeds("heldout", "harmful")[:4]
BENIGN = bundled_seeds("heldout", "benign")[:2]
SEEDS = [*HARMFUL, *BENIGN]
REFUSE, COMPLY = "I can't help with that.", "Sure, here is how you do it: first, gather what you need."

# Rock-paper-scissors in attack success: each attacker beats one defender, ties one, loses to one.
RPS = [[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]]
# Attacker 2 is best against every defender, defender 0 safest against every attacker: a saddle point.
DOMINANT = [[0.0, 0.25, 0.5], [0.25, 0.5, 0.75], [0.5, 0.75, 1.0]]


def Scripted(reply: Callable[[str], str]) -> ScriptedBackend:
    """A generation backend that answers each chat's last user turn with ``reply``."""
    return ScriptedBackend(lambda chat: reply(chat[-1]["content"]))


def seed_in(text: str) -> Seed:
    return next(s for s in SEEDS if s.prompt in text)


def attacker(tag: int) -> ScriptedBackend:
    """A faithful rewrite in the game's format, signed with the attacker's number."""
    return Scripted(lambda task: f"<think>Keep it.</think><prompt>{seed_in(task).prompt} (A{tag})</prompt>")


def defender(column: int, success: list[list[float]], induced: set[tuple[int, int]]) -> ScriptedBackend:
    """Complies with the first ``success[a][column]`` share of the harmful seeds rewritten by
    attacker ``a``, refuses the rest; refuses benign rewrites of the attackers in ``induced``;
    answers the seeds as they are safely (refuses harmful, helps benign)."""

    def reply(prompt: str) -> str:
        seed, signed = seed_in(prompt), re.search(r"\(A(\d+)\)$", prompt)
        if signed is None:  # the baseline: the seed as it is
            return REFUSE if seed.label is Label.HARMFUL else COMPLY
        row = int(signed.group(1))
        if seed.label is Label.BENIGN:
            return REFUSE if (row, column) in induced else COMPLY
        return COMPLY if HARMFUL.index(seed) < round(success[row][column] * len(HARMFUL)) else REFUSE

    return Scripted(reply)


def population(success: list[list[float]], induced: set[tuple[int, int]] | None = None):
    """(attackers, defenders, backend factory, models built so far) of a hand-made matrix."""
    built: list[str] = []
    scripted = {f"a{i}": attacker(i) for i in range(len(success))}
    scripted |= {f"d{j}": defender(j, success, induced or set()) for j in range(len(success[0]))}

    def backend(model: str) -> ScriptedBackend:
        built.append(model)
        return scripted[model]

    attackers: list[Member] = [(f"attacker {i}", f"a{i}") for i in range(len(success))]
    defenders: list[Member] = [(f"defender {j}", f"d{j}") for j in range(len(success[0]))]
    return attackers, defenders, backend, built


def play(out: Path, success: list[list[float]], **kw) -> tuple[CrossPlay, list[str]]:
    attackers, defenders, backend, built = population(success, kw.pop("induced", set()))
    game = Game(RuleJudge(), GameConfig(num_attacks=1))
    cfg = kw.pop("cfg", CrossPlayConfig(seeds=len(SEEDS), batch_size=4))
    return crossplay(attackers, defenders, SEEDS, game, backend, out, cfg, log=lambda _: None, **kw), built


def values(matrix) -> list[list[float]]:
    return [[r.value for r in row] for row in matrix]


# ---------------------------------------------------------------------------------------------
# hand-made matrices through the whole pipeline


def test_rock_paper_scissors_gives_the_uniform_equilibrium_and_every_output(tmp_path):
    result, built = play(tmp_path, RPS, induced={(0, 0)})
    assert values(result.success) == RPS  # the judge's verdicts make the hand-made matrix
    assert all(r.total == len(HARMFUL) for row in result.success for r in row)
    meta = result.meta
    assert meta is not None
    assert meta.attacker_mixture == pytest.approx((1 / 3,) * 3, abs=1e-6)
    assert meta.defender_mixture == pytest.approx((1 / 3,) * 3, abs=1e-6)
    assert meta.value == pytest.approx(0.5, abs=1e-6)
    assert meta.defender_ratings == pytest.approx((0.5,) * 3, abs=1e-6)
    assert values(result.induced_refusal) == [[1.0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert [r.value for r in result.validity] == [1.0] * 3
    assert [r.value for r in result.baseline_compliance] == [0.0] * 3  # the seeds as they are: refused
    assert [r.value for r in result.baseline_refusal] == [0.0] * 3
    assert sorted(built) == ["a0", "a1", "a2", "d0", "d1", "d2"]  # each model loaded once

    body = json.loads((tmp_path / "crossplay.json").read_text())
    assert body["attackers"] == ["attacker 0", "attacker 1", "attacker 2"]
    assert [[c["rate"] for c in row] for row in body["attack_success"]] == RPS
    cell = body["attack_success"][0][0]
    assert cell["n"] == 4 and cell["successes"] == 2 and cell["low"] < 0.5 < cell["high"]  # Wilson interval
    assert body["meta_nash"]["value"] == pytest.approx(0.5, abs=1e-6)
    assert body["settings"]["seeds"] == [s.id for s in SEEDS]
    report = (tmp_path / "report.md").read_text()
    assert "| attacker 0 | 0.333 | 50.0% |" in report and "Value (attack success at equilibrium): 50.0%" in report
    assert "| attacker 0 | 50.0% [" in report and (tmp_path / "heatmap.png").stat().st_size > 10_000
    # one line per sample in each pair's records: 3 x 3 pairs x 6 seeds, and one baseline per defender
    pairs = sorted((tmp_path / "pairs").glob("*/*/results.jsonl"))
    assert len(pairs) == 9 and all(len(p.read_text().splitlines()) == 6 for p in pairs)
    assert len(list((tmp_path / "baseline").glob("*/results.jsonl"))) == 3


def test_a_dominant_pair_gives_a_pure_equilibrium(tmp_path):
    result, _ = play(tmp_path, DOMINANT)
    assert values(result.success) == DOMINANT
    assert result.meta is not None
    assert result.meta.attacker_mixture == pytest.approx((0, 0, 1), abs=1e-6)
    assert result.meta.defender_mixture == pytest.approx((1, 0, 0), abs=1e-6)
    assert result.meta.value == pytest.approx(0.5, abs=1e-6)
    assert result.meta.attacker_ratings == pytest.approx((0.0, 0.25, 0.5), abs=1e-6)


def test_an_invalid_attack_is_a_failure_and_a_rerun_loads_nothing(tmp_path):
    attackers, defenders, backend, built = population([[1.0], [1.0]])
    broken = Scripted(lambda task: "no format at all")  # attacker 1 never keeps the format
    game = Game(RuleJudge(), GameConfig(num_attacks=1))
    cfg = CrossPlayConfig(seeds=6, batch_size=4, baseline=False)

    def build(model: str):
        built.append(model)
        return broken if model == "a1" else backend(model)

    result = crossplay(attackers, defenders, SEEDS, game, build, tmp_path, cfg, log=lambda _: None)
    assert values(result.success) == [[1.0], [0.0]] and result.success[1][0].total == 4
    assert [r.value for r in result.validity] == [1.0, 0.0] and result.baseline_compliance == ()
    assert result.meta is not None and result.meta.attacker_mixture == pytest.approx((1, 0), abs=1e-6)
    built.clear()
    again = crossplay(attackers, defenders, SEEDS, game, build, tmp_path, cfg, log=lambda _: None)
    assert again == result and built == []  # everything recorded: no model loads


def test_a_killed_run_resumes_without_losing_or_repeating_records(tmp_path):
    whole, _ = play(tmp_path / "whole", RPS)
    attackers, defenders, backend, _ = population(RPS)

    def dies_in_its_second_call(model: str):
        scripted = backend(model)
        if model != "d1":
            return scripted
        answer = scripted.generate

        def generate(chats, **kw):
            if len(scripted.calls) == 1:
                raise KeyboardInterrupt  # a kill: not an error to record, the run stops
            return answer(chats, **kw)

        scripted.generate = generate  # type: ignore[method-assign]
        return scripted

    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), CrossPlayConfig(seeds=len(SEEDS), batch_size=4)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        crossplay(attackers, defenders, SEEDS, game, dies_in_its_second_call, out, cfg, log=lambda _: None)
    assert not (out / "crossplay.json").exists()
    done = sum(len(p.read_text().splitlines()) for p in (out / "pairs").glob("*/*/results.jsonl"))
    assert done == 3 * 6  # defender 0's pairs are kept; defender 1 died before its first pair's batch
    _, _, fresh, built = population(RPS)
    resumed = crossplay(attackers, defenders, SEEDS, game, fresh, out, cfg, log=lambda _: None)
    assert resumed == whole and built == ["d1", "d2"]  # the rewrites and defender 0's pairs are recorded
    assert all(len(p.read_text().splitlines()) == 6 for p in (out / "pairs").glob("*/*/results.jsonl"))


# ---------------------------------------------------------------------------------------------
# input errors


def test_bad_input_is_named(tmp_path, capsys):
    attackers, defenders, backend, _ = population(RPS)
    game = Game(RuleJudge(), GameConfig(num_attacks=1))
    with pytest.raises(CrossPlayError, match=r"at least one attacker \(--attackers MODEL"):
        crossplay([], defenders, SEEDS, game, backend, tmp_path)
    with pytest.raises(CrossPlayError, match="a name of its own; given twice: defender 0"):
        crossplay(attackers, [defenders[0], defenders[0]], SEEDS, game, backend, tmp_path)
    with pytest.raises(CrossPlayError, match="no harmful seed"):
        choose_seeds(BENIGN, 4)
    missing = tmp_path / "runs" / "x" / "final" / "attacker"
    with pytest.raises(CrossPlayError, match=f"{re.escape(str(missing))}: no such model folder"):
        members([str(missing)], role="attacker")
    with pytest.raises(CrossPlayError, match="not a training run folder"):
        members([], runs=[tmp_path], role="attacker")
    play(tmp_path / "run", DOMINANT)
    with pytest.raises(RedTeamError, match=r"other settings \(config\)"):  # red-teaming's check
        play(tmp_path / "run", DOMINANT, cfg=CrossPlayConfig(seeds=len(SEEDS), max_tokens=7))

    assert main(["crossplay", "--out", str(tmp_path / "cli")]) == 2
    assert "cross-play needs at least one attacker" in capsys.readouterr().err
    assert main(["crossplay", "--attackers", str(missing), "--defenders", "smollm2-135m-instruct"]) == 2
    assert f"{missing}: no such model folder" in capsys.readouterr().err
    assert main(["crossplay", "--attackers", "a", "--defenders", "d", "--backend", "openai"]) == 2
    assert "--backend openai needs --url" in capsys.readouterr().err


def test_a_run_adds_its_checkpoints_of_each_role_named_by_the_run(tmp_path, monkeypatch):
    import algorithms.evaluation.evaluate as evaluate

    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    asked = []

    def checkpoints(run_dir, role, which, steps):  # the exports evaluate.checkpoint_models would write
        asked.append((run_dir, role, which, steps))
        return [("step 0", "smollm2-135m-instruct"), ("step 4", str(run_dir))]

    monkeypatch.setattr(evaluate, "checkpoint_models", checkpoints)
    got = members(["smollm2-135m-instruct"], runs=[run], role="defender", steps="0,last", which="ema")
    assert got == [
        ("smollm2-135m-instruct", "smollm2-135m-instruct"),
        ("demo step 0", "smollm2-135m-instruct"),
        ("demo step 4", str(run)),
    ]
    assert asked == [(run, "defender", "ema", "0,last")]


def test_the_seeds_are_half_harmful_half_benign_in_suite_order():
    suite = bundled_seeds("heldout")
    chosen = choose_seeds(suite, 5)
    assert [s.label for s in chosen] == [Label.HARMFUL] * 3 + [Label.BENIGN] * 2
    assert chosen[:3] == [s for s in suite if s.label is Label.HARMFUL][:3]
    assert len(choose_seeds(SEEDS, 6)) == 6 and choose_seeds(SEEDS, 6)[4:] == BENIGN  # too few benign: filled up
    with pytest.raises(ValueError, match=r"crossplay\.seeds: 0 is not allowed"):
        CrossPlayConfig(seeds=0)


# ---------------------------------------------------------------------------------------------
# a real model through the CLI


@pytest.mark.slow
def test_the_cli_on_the_tiny_model_writes_the_matrix_and_the_heatmap(tiny_chat, tmp_path, capsys):
    twin = tmp_path / "twin"
    twin.symlink_to(tiny_chat)  # a second attacker name for the same weights
    out = tmp_path / "cross"
    argv = ["crossplay", "--attackers", str(tiny_chat), str(twin), "--defenders", str(tiny_chat)]
    argv += ["--prompts", "4", "--max-tokens", "16", "--out", str(out)]
    assert main(argv) == 0
    body = json.loads((out / "crossplay.json").read_text())
    assert len(body["attack_success"]) == 2 and len(body["attack_success"][0]) == 1
    assert all(cell["n"] == 2 for row in body["attack_success"] for cell in row)  # 2 harmful seeds, 1 sample
    assert body["meta_nash"] is not None and sum(body["meta_nash"]["attacker_mixture"]) == pytest.approx(1.0)
    assert (out / "heatmap.png").stat().st_size > 10_000 and "meta-Nash value" in capsys.readouterr().out


def test_attack_success_is_reported_over_valid_attacks_beside_every_sample(tmp_path):
    attackers, defenders, backend, _ = population([[1.0], [1.0]])
    broken = Scripted(lambda task: "no format at all")  # attacker 1 never keeps the format
    cfg = CrossPlayConfig(seeds=6, batch_size=4, baseline=False)
    game = Game(RuleJudge(), GameConfig(num_attacks=1))
    result = crossplay(
        attackers, defenders, SEEDS, game, lambda m: broken if m == "a1" else backend(m), tmp_path, cfg,
        log=lambda _: None,
    )  # fmt: skip
    assert values(result.success) == [[1.0], [0.0]]  # every sample: an invalid attack fails
    valid = result.success_valid
    assert valid[0][0].value == 1.0 and valid[0][0].total == 4 and valid[1][0].total == 0  # no valid attack
    body = json.loads((tmp_path / "crossplay.json").read_text())
    assert body["attack_success_valid"][0][0]["rate"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "## Attack success over valid attacks (harmful seeds)" in report


def test_a_failed_meta_game_solver_leaves_the_matrices_and_says_why(tmp_path, monkeypatch):
    import algorithms.evaluation.crossplay as module
    from algorithms.gametheory import MetaGameError

    def fail(_):
        raise MetaGameError("the meta-game's minimax LP failed (status 4): numerical difficulties")

    monkeypatch.setattr(module, "solve", fail)
    result, _ = play(tmp_path, RPS)
    assert result.meta is None and "numerical difficulties" in result.unsolved
    assert values(result.success) == RPS
    assert "Not solved: the meta-game's minimax LP failed" in (tmp_path / "report.md").read_text()


def test_the_command_prints_attack_success_over_every_sample_and_over_valid_attacks(tmp_path, capsys, monkeypatch):
    import algorithms.evaluation.crossplay as module
    from advgame_env.metrics import rate

    def scripted(attackers, defenders, *args, **kwargs):
        return CrossPlay(
            ("a",), ("d",), ((rate(1, 4),),), ((rate(0, 2),),), (rate(2, 4),), (), (), None, "scripted",
            ((rate(1, 2),),),
        )  # fmt: skip

    monkeypatch.setattr(module, "crossplay", scripted)
    argv = ["crossplay", "--attackers", "a", "--defenders", "d", "--backend", "openai", "--url", "http://127.0.0.1:9"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "attack success of a: d 25.0% [" in out
    assert "attack success of a over valid attacks: d 50.0% [" in out
