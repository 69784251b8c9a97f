"""``advgame compare``: configs trained over seeds, final pairs measured alike, one table
(algorithms/evaluation/compare.py).

Fast tests: the aggregation over seeds (a Student-t interval against a hand computation, one
seed's undefined interval), the config's and the command's validation, the derived runs and the
detection of a finished, interrupted or foreign run folder, and the saved parts a rerun reuses.
One slow test compares 2 configs × 2 seeds on the tiny chat model end to end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from algorithms.cli.main import Compare, parse_command
from algorithms.config import ConfigError, save_config
from algorithms.evaluation.compare import (
    ATTACK,
    ATTACKER_RATING,
    BENIGN,
    COLUMNS,
    DEFENDER_RATING,
    EXPLOIT,
    EXPLOIT_GAIN,
    HARMFUL,
    CompareConfig,
    Entry,
    final_model,
    part,
    run_config,
    run_state,
    summarise_seeds,
)
from tests.helpers import SHORT_ROUNDS

# ----------------------------------------------------------------------------- aggregation


def test_the_interval_over_seeds_is_students_t_by_hand():
    summary = summarise_seeds([0.3, 0.4, 0.5])
    # mean 0.4, sample sd 0.1, t(0.975, 2) = 4.302652729911275 (tables), half = t * sd / sqrt(3)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert summary.n == 3 and summary.mean == pytest.approx(0.4)
    assert summary.interval == pytest.approx((0.4 - half, 0.4 + half))
    assert str(summary) == f"40.0% [{100 * (0.4 - half):.1f}, {100 * (0.4 + half):.1f}] (n=3)"
    two = summarise_seeds([0.1, 0.3], share=False)  # sd sqrt(0.02), so half = t(0.975, 1) * 0.1
    assert two.interval == pytest.approx((0.2 - 1.2706204736174707, 0.2 + 1.2706204736174707))
    assert summarise_seeds([0.1, 0.3]).interval == (0.0, 1.0)  # a share's interval stays in [0, 1]


def test_one_seed_has_no_interval_and_a_missing_value_is_not_a_zero():
    one = summarise_seeds([0.25])
    assert one.interval is None and str(one) == "25.0% (n=1, interval undefined)"
    assert one.as_dict() == {"mean": 0.25, "low": None, "high": None, "n": 1, "values": [0.25]}
    gaps = summarise_seeds([None, math.nan, 0.5, 0.7])
    assert gaps.values == (0.5, 0.7) and gaps.n == 2
    assert str(summarise_seeds([None])) == "n/a"
    assert str(summarise_seeds([1.5, 2.5], share=False)).startswith("2 [")


# ----------------------------------------------------------------------------- configuration


def test_the_config_refuses_what_cannot_be_compared():
    entry = (Entry("cpu_smoke.yaml"),)
    with pytest.raises(ConfigError, match="at least one config"):
        CompareConfig()
    with pytest.raises(ConfigError, match=r"compare\.seeds"):
        CompareConfig(configs=entry, seeds=0)
    with pytest.raises(ConfigError, match="share the label cpu_smoke"):
        CompareConfig(configs=(Entry("cpu_smoke.yaml"), Entry("configs/cpu_smoke.yaml")))
    with pytest.raises(ConfigError, match="seed_list"):
        CompareConfig(configs=entry, seed_list=(1, 1))
    with pytest.raises(ConfigError, match=r"compare\.exploit_prompts"):
        CompareConfig(configs=entry, exploit_prompts=1)
    with pytest.raises(ConfigError, match="steps"):
        CompareConfig(configs=entry, steps=0)
    assert CompareConfig(configs=entry, seeds=3).run_seeds == (0, 1, 2)
    assert CompareConfig(configs=entry, seed_list=(5, 9)).run_seeds == (5, 9)
    same_file = (Entry("cpu_smoke.yaml"), Entry("cpu_smoke.yaml", "sequential", ("train.schedule=alternate",)))
    assert [e.name for e in CompareConfig(configs=same_file).configs] == ["cpu_smoke", "sequential"]


def test_the_command_flags_build_the_compare_config():
    flags = ["--config", "cpu_smoke.yaml", "--config", "b.yaml", "--run-seeds", "3", "--steps", "4", "--exploit-budget"]
    command = parse_command(
        ["compare", *flags, "1", "--eval-prompts", "6", "--crossplay-prompts", "0", "--out", "d", "optim.lr=1e-5"]
    )
    assert isinstance(command, Compare)
    assert command.compare == CompareConfig(
        configs=(Entry("cpu_smoke.yaml"), Entry("b.yaml")),
        seeds=3,
        steps=4,
        exploit_budget=1,
        eval_prompts=6,
        crossplay_prompts=0,
        out="d",
        overrides=("optim.lr=1e-5",),
    )


def test_a_command_error_is_one_line(capsys):
    from algorithms.cli.main import main

    assert main(["compare"]) == 2
    assert "advgame compare: compare needs at least one config" in capsys.readouterr().err
    assert main(["compare", "--config", "no_such.yaml", "--out", "x"]) == 2
    assert "no_such.yaml: no such config file or shipped recipe" in capsys.readouterr().err
    assert main(["compare", "--config", "cpu_smoke.yaml", "--exploit-algorithm", "nope", "--out", "x"]) == 2
    assert "exploit_algorithm: 'nope' is not registered" in capsys.readouterr().err


# ----------------------------------------------------------------------------- runs and reuse


def test_each_run_is_the_config_with_its_seed_folder_and_budget(tmp_path):
    cc = CompareConfig(
        configs=(Entry("cpu_smoke.yaml", "smoke", ("optim.lr=2e-4",)),),
        seeds=2,
        steps=5,
        out=str(tmp_path),
        overrides=("optim.lr=1e-5", "data.batch_size=4"),
    )
    cfg = run_config(cc.configs[0], 1, cc)
    assert (cfg.run.seed, cfg.run.steps, cfg.run.out_dir) == (1, 5, str(tmp_path / "smoke" / "seed_1"))
    assert cfg.optim.lr == 2e-4 and cfg.data.batch_size == 4  # the entry's own override comes last
    assert run_config(cc.configs[0], 0, CompareConfig(configs=cc.configs)).run.steps == 3  # the file's own budget


def test_a_finished_run_is_reused_an_interrupted_one_resumed_another_refused(tmp_path):
    cc = CompareConfig(configs=(Entry("cpu_smoke.yaml"),), steps=2, out=str(tmp_path))
    cfg = run_config(cc.configs[0], 0, cc)
    folder = Path(cfg.run.out_dir)
    assert run_state(cfg) == "new"
    folder.mkdir(parents=True)
    save_config(cfg, folder / "config.yaml")
    assert run_state(cfg) == "interrupted"
    (folder / "final" / "defender").mkdir(parents=True)
    assert run_state(cfg) == "finished"
    # an output-only key may differ; anything trained may not
    assert (
        run_state(
            run_config(
                cc.configs[0],
                0,
                CompareConfig(configs=cc.configs, steps=2, out=str(tmp_path), overrides=("run.progress=false",)),
            )
        )
        == "finished"
    )
    longer = run_config(cc.configs[0], 0, CompareConfig(configs=cc.configs, steps=3, out=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"another config \(run.steps: 2 -> 3\); use another --out"):
        run_state(longer)


def test_the_final_models_of_a_run_and_of_a_shared_policy(tmp_path):
    (tmp_path / "a" / "final" / "defender").mkdir(parents=True)
    (tmp_path / "b" / "final" / "policy").mkdir(parents=True)
    assert final_model(tmp_path / "a", "defender") == str(tmp_path / "a" / "final" / "defender")
    assert final_model(tmp_path / "b", "attacker") == str(tmp_path / "b" / "final" / "policy")
    with pytest.raises(FileNotFoundError, match="no attacker"):
        final_model(tmp_path / "a", "attacker")


def test_a_saved_part_is_reused_and_other_settings_measure_afresh(tmp_path):
    calls = []

    def measure(folder: Path) -> dict[str, float | None]:
        calls.append(folder)
        return {HARMFUL: 0.5, BENIGN: None}

    assert part(tmp_path, "heldout", {"eval_prompts": 4}, measure) == {HARMFUL: 0.5, BENIGN: None}
    assert part(tmp_path, "heldout", {"eval_prompts": 4}, measure) == {HARMFUL: 0.5, BENIGN: None}
    assert len(calls) == 1
    saved = json.loads((calls[0] / "result.json").read_text())
    assert saved["settings"] == {"eval_prompts": 4} and "wall_s" in saved
    part(tmp_path, "heldout", {"eval_prompts": 8}, measure)
    assert len(calls) == 2 and calls[1] != calls[0]


def test_the_table_has_a_row_per_config_and_says_what_was_not_measured(tmp_path):
    from algorithms.evaluation.compare import Comparison, write_comparison

    per_run: dict[str, dict[int, dict[str, float | None]]] = {
        "a": {0: {HARMFUL: 0.5, BENIGN: 0.1, EXPLOIT: 0.2}, 1: {HARMFUL: 0.3, BENIGN: 0.3, EXPLOIT: None}},
        "b": {0: {HARMFUL: 0.0, BENIGN: 0.4}},
    }
    rows = {k: {c: summarise_seeds([v.get(c) for v in runs.values()]) for c in COLUMNS} for k, runs in per_run.items()}
    result = Comparison(("a", "b"), (0, 1), COLUMNS, rows, per_run, tmp_path, {"steps": {"a": 1, "b": 1}})
    lines = write_comparison(result).read_text().splitlines()
    a = next(line for line in lines if line.startswith("| a | "))
    assert a.split(" | ")[1:4] == ["40.0% [0.0, 100.0] (n=2)", "20.0% [0.0, 100.0] (n=2)", "n/a"]
    assert "20.0% (n=1, interval undefined)" in a  # best-response ASR of one seed
    assert "| b | 0 | 0.0% | 40.0% | n/a |" in "\n".join(lines)  # every run's own figures
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert written["rows"][1][HARMFUL] == {"mean": 0.0, "low": None, "high": None, "n": 1, "values": [0.0]}
    assert (tmp_path / "comparison.png").stat().st_size > 0 and (tmp_path / "comparison.html").exists()


def test_the_plane_over_seeds_needs_both_figures(tmp_path):
    from algorithms.evaluation.plots import seed_means

    nan = math.nan
    assert seed_means({}, {"a": ((nan, nan, nan), (0.1, nan, nan))}, tmp_path / "x.png", "t") is None
    drawn = seed_means({"a": [(0.2, 0.1)]}, {"a": ((0.2, nan, nan), (0.1, nan, nan))}, tmp_path / "x.png", "t")
    assert drawn == tmp_path / "x.png" and drawn.stat().st_size > 0


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_configs_over_two_seeds_write_one_table(tiny_chat, tmp_path):
    from algorithms.evaluation.compare import compare

    base = tmp_path / "tiny.yaml"
    base.write_text(
        f"model: {{name: {tiny_chat}}}\n"
        "data: {batch_size: 1}\n"
        "game: {direct_fraction: 0.5}\n"
        "run: {progress: false, tensorboard: false, validate_every: 0}\n"
    )
    cc = CompareConfig(
        configs=(Entry(str(base), "dpo_md"), Entry(str(base), "ipo_md", ("algorithm.name=advgame_ipo_md",))),
        seeds=2,
        steps=1,
        eval_prompts=2,
        attack_prompts=1,
        exploit_budget=1,
        exploit_prompts=2,
        crossplay_prompts=2,
        max_tokens=8,
        out=str(tmp_path / "cmp"),
        overrides=SHORT_ROUNDS,
    )
    result = compare(cc, log=lambda _: None)
    assert result.labels == ("dpo_md", "ipo_md") and result.seeds == (0, 1)
    assert result.columns == COLUMNS
    for label in result.labels:
        for column in (HARMFUL, BENIGN, ATTACK, EXPLOIT, EXPLOIT_GAIN, ATTACKER_RATING, DEFENDER_RATING):
            assert result.rows[label][column].n == 2, (label, column)
            assert result.rows[label][column].interval is not None
        gain = result.rows[label][EXPLOIT_GAIN]
        assert gain.signed and all(-1 <= v <= 1 for v in gain.values)
    out = tmp_path / "cmp"
    table = (out / "comparison.md").read_text()
    assert "| dpo_md | " in table and "| ipo_md | " in table and EXPLOIT in table
    written = json.loads((out / "comparison.json").read_text())
    assert [r["config"] for r in written["rows"]] == ["dpo_md", "ipo_md"]
    assert written["rows"][0][HARMFUL]["n"] == 2
    assert (out / "comparison.png").stat().st_size > 0
    assert (out / "ipo_md" / "seed_1" / "final").is_dir()
    # a rerun trains and measures nothing again: the same table from the saved parts
    again = compare(cc, log=lambda _: None)
    assert again.per_run == result.per_run
    assert again.settings["wall_s (training this call)"] == {}


def test_a_run_s_attack_columns_count_valid_attacks_and_every_sample_and_the_best_response_s_gain(
    tmp_path, monkeypatch
):
    """The per-run measurements with their players scripted: the red-team rows and the exploit
    curve are known answers, so each column must carry exactly its figure."""
    import algorithms.evaluation.evaluate as evaluate
    import algorithms.evaluation.exploit as exploit_module
    import algorithms.evaluation.heldout as heldout
    from advgame_env.metrics import rate
    from algorithms.evaluation.compare import (
        ATTACK_VALID,
        EXPLOIT_GAIN,
        EXPLOIT_VALID,
        _measure_run,
    )
    from algorithms.evaluation.exploit import ASR_VALID, CurvePoint, ExploitResult

    cfg = run_config(Entry("cpu_smoke.yaml"), 0, CompareConfig(configs=(Entry("cpu_smoke.yaml"),), out=str(tmp_path)))
    (Path(cfg.run.out_dir) / "final" / "defender").mkdir(parents=True)

    row = SimpleNamespace(summary={HARMFUL: rate(1, 4), BENIGN: rate(0, 4)}, figures={})
    monkeypatch.setattr(evaluate, "evaluate_models", lambda *a, **k: ([row], None))
    red = {"ASR (every sample)": rate(1, 8), "ASR (valid attacks)": rate(1, 2)}
    monkeypatch.setattr(heldout, "attacker_rows", lambda *a, **k: [("step last", red)])

    def point(step: int, asr: tuple[int, int], valid: tuple[int, int]) -> CurvePoint:
        return CurvePoint(step, rate(*asr), rate(0, 2), rate(0, 2), {ASR_VALID: rate(*valid)})

    curve = [point(0, (1, 8), (1, 4)), point(2, (3, 8), (3, 4))]
    monkeypatch.setattr(exploit_module, "exploit", lambda ec, **k: ExploitResult("attacker", curve, tmp_path, {}))
    cc = CompareConfig(configs=(Entry("cpu_smoke.yaml"),), attack_prompts=2, exploit_budget=2, crossplay_prompts=0)
    figures = _measure_run(cfg, cc, judge=None, log=lambda _: None)  # type: ignore[arg-type]
    assert figures[ATTACK] == 1 / 8 and figures[ATTACK_VALID] == 1 / 2
    assert figures[EXPLOIT] == 3 / 8 and figures[EXPLOIT_VALID] == 3 / 4
    assert figures[EXPLOIT_GAIN] == pytest.approx(2 / 8)


def test_a_gain_s_interval_may_be_negative_and_shows_its_sign():
    summary = summarise_seeds([-0.2, 0.0, 0.1], signed=True)
    low, high = summary.interval  # type: ignore[misc]
    assert low < -0.2 and high > 0.1 and low >= -1.0
    assert str(summary).startswith("-3.3 pts [")


@pytest.mark.parametrize("tokens", [None, 256])
def test_instruction_following_answers_in_its_own_token_budget(tokens, tmp_path, monkeypatch):
    # --instruction-tokens reaches the utility plan (None: the held-out --max-tokens) and keys the saved part
    import algorithms.evaluation.evaluate as evaluate
    from advgame_env.metrics import rate
    from algorithms.evaluation.compare import _measure_run

    cfg = run_config(Entry("cpu_smoke.yaml"), 0, CompareConfig(configs=(Entry("cpu_smoke.yaml"),), out=str(tmp_path)))
    (Path(cfg.run.out_dir) / "final" / "defender").mkdir(parents=True)
    plans = []
    row = SimpleNamespace(summary={HARMFUL: rate(1, 4), BENIGN: rate(0, 4)}, figures={})
    monkeypatch.setattr(evaluate, "evaluate_models", lambda *a, **k: plans.append(k["plan"]) or ([row], None))
    cc = CompareConfig(
        configs=(Entry("cpu_smoke.yaml"),),
        attack_prompts=0,
        exploit_budget=0,
        crossplay_prompts=0,
        instruction_following=2,
        instruction_tokens=tokens,
    )
    _measure_run(cfg, cc, judge=None, log=lambda _: None)  # type: ignore[arg-type]
    assert [plan.instruction_tokens for plan in plans] == [tokens]
    saved = [json.loads(p.read_text())["settings"] for p in Path(cfg.run.out_dir).rglob("result.json")]
    assert [s.get("instruction_tokens") for s in saved if "eval_prompts" in s] == [tokens]
