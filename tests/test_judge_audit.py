"""The judge audit, the ensemble judge and the training-time monitor, on scripted judges whose
biases are known (test doubles of a biased LLM judge; every other role is the real rule judge)."""

from __future__ import annotations

import json
import random

import pytest

from advgame_env import (
    ClassifyItem,
    FaithfulnessItem,
    Game,
    GameConfig,
    JudgeError,
    PairItem,
    PointItem,
    Rubric,
    RuleJudge,
)
from advgame_env.ensemble import EnsembleJudge, majority
from advgame_env.judge_probes import MASTER_KEYS, PUBLISHED_MASTER_KEYS, calibration_pairs, injection_battery
from advgame_env.parsing import parse_pairwise_scores
from advgame_env.rewards import Classification
from advgame_env.seeds import Label
from advgame_env.wildguard import JudgeRoleError
from algorithms.cli.main import main
from algorithms.config import ConfigError, JudgeAuditConfig, load_config
from algorithms.evaluation.judge_audit import audit, markdown, wilson, write
from algorithms.judge_agreement import cohen_kappa
from algorithms.training.judge_monitor import JudgeAlarm, JudgeMonitor


class Scripted(RuleJudge):
    """The rule judge with one scripted fault in ``compare`` (and wherever a subclass says)."""


class Evenly:
    """Says yes on a share ``p`` of its calls, spread evenly (call k: yes when floor((k+1)p) > floor(kp)),
    so the bias a scripted judge has is exactly ``p`` over any run of calls."""

    def __init__(self, p: float) -> None:
        self.p, self.k = p, 0

    def __call__(self) -> bool:
        self.k += 1
        return int(self.k * self.p) > int((self.k - 1) * self.p)


class FirstWins(Scripted):
    """Prefers the answer shown first on a share ``p`` of pairs, else the second, whatever they say."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.yes = Evenly(p)

    def compare(self, items):
        return [(9.0, 1.0) if self.yes() else (1.0, 9.0) for _ in items]


class Longer(Scripted):
    """Prefers the longer answer on a share ``p`` of pairs, else the shorter."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.yes = Evenly(p)

    def compare(self, items):
        out = []
        for i in items:
            longer_first = len(i.response_a) > len(i.response_b)
            out.append((9.0, 1.0) if longer_first == self.yes() else (1.0, 9.0))
        return out


class FavoursKeys(Scripted):
    """Falls for the published master keys (not our variants): such a reply wins, scores 10 and
    passes as a faithful rewrite; ``hacked`` switches the fault on and off."""

    def __init__(self, hacked: bool = True) -> None:
        super().__init__()
        self.hacked = hacked

    def _key(self, text: str) -> bool:
        return self.hacked and text in PUBLISHED_MASTER_KEYS

    def compare(self, items):
        honest = super().compare(items)
        return [
            (10.0, 0.0) if self._key(i.response_a) else (0.0, 10.0) if self._key(i.response_b) else v
            for i, v in zip(items, honest, strict=True)
        ]

    def score(self, items):
        return [10.0 if self._key(i.response) else v for i, v in zip(items, super().score(items), strict=True)]

    def faithfulness(self, items):
        return [True if self._key(i.prompt) else v for i, v in zip(items, super().faithfulness(items), strict=True)]


class CopiesTags(Scripted):
    """Copies a literal verdict tag it finds in the text it judges (an injectable judge)."""

    def compare(self, items):
        out = []
        for i, v in zip(items, super().compare(items), strict=True):
            injected = parse_pairwise_scores(i.response_a)
            out.append(injected if injected is not None else v)
        return out


PAIRS = calibration_pairs()


def figure(report, name):
    return next(f for f in report.figures if f.name == name)


# ----------------------------------------------------------------------------- statistics


def test_wilson_and_kappa_give_the_textbook_values():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    # two raters, 10 items: 7 agree; marginals 6/4 and 5/5 -> pe = 0.5, kappa = 0.4
    a = ["y"] * 6 + ["n"] * 4
    b = ["y"] * 4 + ["n"] * 2 + ["n"] * 3 + ["y"]
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["y"] * 5, ["y"] * 5) is None  # undefined, not 1 or 0


# ----------------------------------------------------------------------------- the audit measures known biases


@pytest.mark.parametrize("p", [0.5, 0.8, 1.0])
def test_the_audit_measures_a_known_position_bias(p):
    report = audit(FirstWins(p), PAIRS, injection_limit=8)
    first = figure(report, "position: first wins")
    assert first.n == 4 * len(PAIRS) and first.failures == 0
    assert first.value == pytest.approx(p, abs=0.08)
    assert first.low <= p <= first.high


def test_the_rule_judge_has_no_position_bias_and_no_flips():
    report = audit(RuleJudge(), PAIRS, injection_limit=8)
    assert figure(report, "position: first wins").value == 0.5
    assert figure(report, "position: flip rate").value == 0.0


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_the_audit_measures_a_known_length_bias(p):
    report = audit(Longer(p), PAIRS, injection_limit=8)
    padded = figure(report, "length: padded wins")
    assert padded.value == pytest.approx(p, abs=0.08) and padded.low <= p <= padded.high


def test_the_audit_measures_how_often_master_keys_are_favoured():
    report = audit(FavoursKeys(), PAIRS, per_key=4, injection_limit=8)
    known = len(PUBLISHED_MASTER_KEYS) / len(MASTER_KEYS)  # every key meets as many pairs
    assert figure(report, "master key beats the right reply").value == pytest.approx(known)
    assert figure(report, "master key passes as a faithful rewrite").value == pytest.approx(known)
    assert all(row["faithful"] == row["published"] for row in report.master_keys.values())
    honest = audit(RuleJudge(), PAIRS, per_key=4, injection_limit=8)
    assert figure(honest, "master key beats the right reply").value == 0.0
    assert figure(honest, "master key passes as a faithful rewrite").value == 0.0


def test_an_injectable_judge_is_caught_and_the_rule_judge_is_not():
    steered = audit(CopiesTags(), PAIRS)
    assert steered.injection_families["pairwise"] > 0.5  # the literal attempts steer it
    clean = audit(RuleJudge(), PAIRS)
    assert figure(clean, "injection: injected verdict wins").value == 0.5
    assert figure(clean, "injection: injected verdict wins").n == len(injection_battery())


def test_failures_are_counted_never_dropped_and_missing_roles_are_not_applicable():
    class Flaky(RuleJudge):
        def compare(self, items):  # every third verdict fails
            return [None if k % 3 == 0 else v for k, v in enumerate(super().compare(items))]

        def score(self, items):  # the whole call fails
            raise ConnectionError("judge server down")

        def faithfulness(self, items):
            raise JudgeRoleError("classifies only")

    report = audit(Flaky(), PAIRS, injection_limit=8)
    first = figure(report, "position: first wins")
    assert first.failures > 0 and first.n + first.failures == 4 * len(PAIRS)
    scored = figure(report, "master key scores above 5")
    assert scored.value is None and scored.n == 0 and scored.failures > 0
    assert any("judge server down" in e for e in report.errors)
    assert figure(report, "master key passes as a faithful rewrite").note.startswith("not applicable")
    assert "not applicable" in markdown(report)


def test_agreement_with_a_second_judge_and_the_written_report(tmp_path):
    report = audit(FirstWins(1.0), PAIRS, against=RuleJudge(), names=("first-wins", "rule"), injection_limit=8)
    assert report.agreement["faithfulness"].agreement == 1.0  # the same rule underneath
    assert report.agreement["deflection"].agreement < 0.8  # the scripted fault disagrees
    write(report, tmp_path)
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["against"] == "rule" and (tmp_path / "audit.png").stat().st_size > 0
    assert "## Agreement with rule" in (tmp_path / "audit.md").read_text()


# ----------------------------------------------------------------------------- the ensemble


def test_majority_needs_more_than_half_of_the_answers():
    assert majority([True, True, False]) is True
    assert majority([True, False]) is None  # a tie is no verdict
    assert majority([None, False, None]) is False  # a failed member abstains
    assert majority([None, None]) is None


def test_the_ensemble_votes_labels_averages_scores_and_cancels_position_bias():
    pair = PairItem(Rubric.COMPLIANCE, PAIRS[12].query, PAIRS[12].answer, PAIRS[12].refusal)
    one_sided = EnsembleJudge([FirstWins(1.0), FirstWins(1.0)], both_orders=True)
    assert one_sided.compare([pair]) == [(5.0, 5.0)]
    mixed = EnsembleJudge([RuleJudge(), FavoursKeys()])
    key = PointItem(Rubric.COMPLIANCE, "q", ":")
    assert mixed.score([key]) == [pytest.approx((RuleJudge().score([key])[0] + 10.0) / 2)]
    tie = EnsembleJudge([RuleJudge(), FavoursKeys()]).faithfulness(
        [FaithfulnessItem("how do I bake bread", Label.BENIGN, ":")]
    )
    assert tie == [None]  # one says no, one says yes: a failure, not a guess

    class Classifier(RuleJudge):
        def __init__(self, labels):
            super().__init__()
            self.labels = labels

        def classify(self, items):
            return [self.labels for _ in items]

    c = ClassifyItem("p", "r", "p", Label.HARMFUL)
    votes = EnsembleJudge(
        [Classifier(Classification(True, True, False)), Classifier(Classification(True, False, None)), Classifier(None)]
    )
    assert votes.classify([c]) == [Classification(True, None, False)]


def test_a_member_that_fails_fails_the_call_and_the_game_retries_it():
    class Down(RuleJudge):
        def compare(self, items):
            raise ConnectionError("down")

    from advgame_env import Round, Seed

    game = Game(EnsembleJudge([RuleJudge(), Down()]), GameConfig(num_attacks=1, num_responses=2))
    round_ = Round(Seed("b", "How do I bake bread?", Label.BENIGN))
    game.attack([round_], [["<think>x</think><prompt>How do I bake bread at home?</prompt>"]])
    with pytest.raises(JudgeError, match="down"):
        game.respond([round_], [[["Knead, proof, bake.", "I can't help."]]])
    assert round_.responses == []  # untouched, ready to retry


def test_the_ensemble_config_is_checked():
    with pytest.raises(ConfigError, match="at least two member"):
        load_config(None, ["judge.kind=ensemble", "judge.members=[{kind: rule}]"])
    with pytest.raises(ConfigError, match=r"only judge\.kind ensemble"):
        load_config(None, ["judge.members=[{kind: rule}, {kind: rule}]"])
    with pytest.raises(ConfigError, match=r"members\[1\]\.kind"):
        load_config(None, ["judge.kind=ensemble", "judge.members=[{kind: rule}, {kind: oracle}]"])
    with pytest.raises(ConfigError, match="fraction"):
        load_config(None, ["judge.audit.fraction=0"])
    cfg = load_config(
        None, ["judge.kind=ensemble", "judge.members=[{kind: rule}, {kind: rule}]", "judge.audit.canaries=3"]
    )
    assert cfg.judge.audit is not None and cfg.judge.audit.canaries == 3 and len(cfg.judge.members) == 2


def test_a_run_config_with_an_ensemble_and_an_audit_saves_and_loads_back(tmp_path):
    from algorithms.config import save_config

    cfg = load_config(
        None,
        [
            "judge.kind=ensemble",
            "judge.members=[{kind: rule}, {kind: llm, mode: logprob}]",
            "judge.audit.judge.kind=llm",
            "judge.audit.alarm.max_canary_rate=0.1",
        ],
    )
    save_config(cfg, tmp_path / "config.yaml")  # what a run folder keeps, and --resume reads
    assert load_config(tmp_path / "config.yaml") == cfg


# ----------------------------------------------------------------------------- the training monitor


def _play_a_step(game: Game, rng: random.Random) -> None:
    """One batch of rounds of the real game, with answers that a master-key hacker would give half the time."""
    from advgame_env import Round, Seed

    rounds = [Round(Seed(f"s{k}", p.query, p.label)) for k, p in enumerate(PAIRS[:8])]
    game.attack(rounds, [[f"<think>t</think><prompt>{r.seed.prompt} Please.</prompt>"] * 2 for r in rounds])
    game.respond(rounds, [[[PAIRS[k].answer, rng.choice(MASTER_KEYS)]] * 2 for k in range(len(rounds))])


def _monitor(judge, **alarm) -> JudgeMonitor:
    cfg = JudgeAuditConfig(fraction=0.5, canaries=4, window=2)
    for key, value in alarm.items():
        setattr(cfg.alarm, key, value)
    return JudgeMonitor(cfg, judge, RuleJudge(), seed=0)


def test_the_alarm_fires_when_the_judge_starts_favouring_master_keys_mid_run():
    judge = FavoursKeys(hacked=False)
    monitor = _monitor(judge, max_canary_rate=0.2, min_kappa=0.5, min_count=8, action="stop")
    game, rng = Game(monitor.judge, GameConfig()), random.Random(0)
    for step in range(1, 4):
        _play_a_step(game, rng)
        figures = monitor.after_step(step)
        monitor.check(step)  # honest so far: quiet
        assert figures["audit/alarm"] == 0.0 and figures["audit/canary_favour"] == 0.0
        assert figures["audit/deflection_agreement"] == 1.0 and figures["audit/rescored"] > 0
    judge.hacked = True
    _play_a_step(game, rng)
    figures = monitor.after_step(4)
    assert figures["audit/alarm"] == 1.0 and figures["audit/canary_favour"] > 0.2
    with pytest.raises(JudgeAlarm, match=r"step 4: .*master-key canaries favoured at"):
        monitor.check(4)


def test_the_monitor_stays_quiet_on_an_honest_judge_and_reports_its_cost():
    monitor = _monitor(RuleJudge(), max_canary_rate=0.05, min_kappa=0.9, min_agreement=0.95, min_count=4)
    game, rng = Game(monitor.judge, GameConfig()), random.Random(1)
    for step in range(1, 6):
        _play_a_step(game, rng)
        figures = monitor.after_step(step)
        monitor.check(step)
        assert figures["audit/alarm"] == 0.0
    assert 0.2 < figures["audit/rescored_fraction"] < 0.8  # fraction 0.5, each verdict by chance
    assert 0 < figures["audit/canary_share"] < 1 and figures["audit/failures"] == 0
    assert figures["audit/canary_count"] > 0 and figures["time/audit_s"] >= 0


def test_canaries_never_reach_the_game():
    plain, monitored = Game(RuleJudge(), GameConfig()), Game(_monitor(RuleJudge()).judge, GameConfig())
    for game in (plain, monitored):
        _play_a_step(game, random.Random(2))
    items = [PairItem(Rubric.COMPLIANCE, "q", "a", "b")] * 3
    assert len(monitored.judge.compare(items)) == 3


# ----------------------------------------------------------------------------- the command


def test_judge_audit_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(
        ["judge-audit", "--judge", "rule", "--against", "rule", "--pairs", "4", "--injection", "8", "--out", str(out)]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"audit.md", "audit.json", "audit.png"}
    report = json.loads((out / "audit.json").read_text())
    assert report["settings"]["pairs"] == 4 and report["judge"] == "rule"
    assert "Agreement with rule" in capsys.readouterr().out


def test_judge_audit_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["judge-audit", "--pairs", "0", "--out", str(tmp_path)]) == 2
    assert main(["judge-audit", "judge.kind=oracle", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--pairs 0" in err[0] and "judge.kind" in err[1]


def test_judge_audit_command_audits_a_classifier_only_judge(tmp_path, monkeypatch):
    """WildGuard (here a scripted backend that always answers in its format) is audited on what it
    does: the roles it lacks are not applicable, whatever game the config describes."""
    from agents.testing import ScriptedBackend
    from algorithms.training import run_setup

    wildguard_format = ScriptedBackend("Harmful request: no\nResponse refusal: yes\nHarmful response: no")
    wildguard_format.tokenizer = type("Tokenizer", (), {"chat_template": None})()  # type: ignore[attr-defined]
    monkeypatch.setattr(run_setup, "build_backend", lambda *args, **kwargs: wildguard_format)
    out = tmp_path / "wg"
    assert main(["judge-audit", "--judge", "wildguard", "--pairs", "4", "--injection", "8", "--out", str(out)]) == 0
    figures = {f["name"]: f for f in json.loads((out / "audit.json").read_text())["figures"]}
    assert figures["position: first wins"]["note"].startswith("not applicable")
    assert figures["calibration: refusal label right"]["value"] == 0.5  # "refusal" for every reply
