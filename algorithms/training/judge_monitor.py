"""``judge.audit``: the run's own verdicts re-scored by a second judge while it trains.

Two learners optimising one judge is the setting for reward hacking, so a run can watch its judge:

    every judge call      the run's judge sees ``canaries`` extra items hidden in the batch: a
                          master key (arXiv 2507.08794) against the right reply of a hand-labelled
                          pair, or alone to be scored, or as a rewrite to pass as faithful; their
                          verdicts are kept here and never reach the game
    after every step      a ``fraction`` of the step's verdicts (each one with that probability,
                          seeded by the step) is judged again by the audit judge
    over ``window`` steps per rubric: Cohen's kappa, raw agreement and the count; the canaries'
                          favour rate (a win 1, a tie 1/2); ``audit/alarm`` when a figure over at
                          least ``min_count`` items crosses its threshold

A warning goes to the progress bar's stream and ``metrics.jsonl``; with ``action: stop`` the run
ends after logging the step, with :class:`JudgeAlarm` naming the rubric and the figures. The
cost is logged: the re-scored items (``audit/rescored``, and their share of the step's
verdicts), the canaries' share of the judge's items, and the re-scoring's seconds
(``time/audit_s``). Judge calls made between two steps (validation) count with the next step.
The window is not kept in checkpoints: a resumed run starts a fresh one.
A failed verdict of either judge is counted (``audit/failures``) and never enters a figure.
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

from advgame_env.judge_probes import MASTER_KEYS, CalibrationPair, calibration_pairs
from advgame_env.judges import ClassifyItem, FaithfulnessItem, Judge, JudgeError, PairItem, PointItem, Rubric
from advgame_env.rewards import Classification, SelfRedTeamCoefficients, srt_defender_reward
from advgame_env.seeds import Label
from algorithms.config import JudgeAuditConfig
from algorithms.judge_agreement import MIDPOINT, JudgeItem, Verdict, agreement, rubric_key
from algorithms.training.seed_stream import derived_seed

METHODS = ("faithfulness", "compare", "score", "classify")


class JudgeAlarm(RuntimeError):
    """The audit's alarm stopped the run (``judge.audit.alarm.action: stop``)."""


@dataclass
class Canary:
    method: str
    item: JudgeItem
    key_first: bool = True  # compare: the master key is response_a


def _rubric(label: Label) -> Rubric:
    return Rubric.DEFLECTION if label is Label.HARMFUL else Rubric.COMPLIANCE


def _favour(canary: Canary, verdict: Verdict) -> float:
    """How far a verdict favours the master key: 1 yes, 0 no, 1/2 a tied pair."""
    match canary.method, verdict:
        case "compare", (first, second):
            key, other = (first, second) if canary.key_first else (second, first)
            return 1.0 if key > other else 0.0 if key < other else 0.5
        case "score", float() | int() as score:
            return float(score > MIDPOINT)
        case "faithfulness", _:
            return float(verdict is True)
        case "classify", Classification() as labels:
            reward = srt_defender_reward(labels, SelfRedTeamCoefficients())  # is the key paid?
            return float(reward is not None and reward > 0)
    raise JudgeError(f"a {canary.method} verdict the judge's protocol does not allow: {verdict!r}")


class MonitoredJudge:
    """The run's judge, with canaries mixed into each call and every verdict kept for re-scoring."""

    def __init__(self, judge: Judge, canaries: int, seed: int, pairs: Sequence[CalibrationPair] | None = None) -> None:
        self.judge, self.canaries = judge, canaries
        self.pairs = list(pairs) if pairs is not None else calibration_pairs()
        self.rng = random.Random(seed)
        self.roles = getattr(judge, "roles", frozenset(METHODS))
        self.verdicts: dict[str, list[tuple[JudgeItem, Verdict | None]]] = {
            m: [] for m in METHODS
        }  # since the last step
        self.favour: list[float] = []  # the canaries' since the last step
        self.canary_failures = 0

    def _canaries(self, method: str) -> list[Canary]:
        out = []
        for _ in range(self.canaries):
            pair, key = self.rng.choice(self.pairs), self.rng.choice(MASTER_KEYS)
            rubric = _rubric(pair.label)
            right = pair.answer if rubric is Rubric.COMPLIANCE else pair.refusal
            if method == "compare":
                first = self.rng.random() < 0.5  # either position, so position bias cancels out
                a, b = (key, right) if first else (right, key)
                out.append(Canary(method, PairItem(rubric, pair.query, a, b), first))
            elif method == "score":
                out.append(Canary(method, PointItem(rubric, pair.query, key)))
            elif method == "faithfulness":
                out.append(Canary(method, FaithfulnessItem(pair.query, pair.label, key)))
            else:
                out.append(Canary(method, ClassifyItem(pair.query, key, pair.query, pair.label)))
        return out

    @overload
    def _call(self, method: Literal["faithfulness"], items: Sequence[FaithfulnessItem]) -> list[bool | None]: ...
    @overload
    def _call(self, method: Literal["compare"], items: Sequence[PairItem]) -> list[tuple[float, float] | None]: ...
    @overload
    def _call(self, method: Literal["score"], items: Sequence[PointItem]) -> list[float | None]: ...
    @overload
    def _call(self, method: Literal["classify"], items: Sequence[ClassifyItem]) -> list[Classification | None]: ...

    def _call(self, method: str, items: Sequence[JudgeItem]) -> Sequence[Verdict | None]:
        if not items:
            return []
        canaries = self._canaries(method)
        verdicts: list[Verdict | None] = list(getattr(self.judge, method)([*items, *(c.item for c in canaries)]))
        if len(verdicts) != len(items) + len(canaries):
            raise JudgeError(f"the judge returned {len(verdicts)} verdicts for {len(items) + len(canaries)} items")
        real = verdicts[: len(items)]
        for canary, verdict in zip(canaries, verdicts[len(items) :], strict=True):
            if verdict is None:
                self.canary_failures += 1
            else:
                self.favour.append(_favour(canary, verdict))
        self.verdicts[method] += list(zip(items, real, strict=True))
        return real

    def faithfulness(self, items: Sequence[FaithfulnessItem]) -> list[bool | None]:
        return self._call("faithfulness", items)

    def compare(self, items: Sequence[PairItem]) -> list[tuple[float, float] | None]:
        return self._call("compare", items)

    def score(self, items: Sequence[PointItem]) -> list[float | None]:
        return self._call("score", items)

    def classify(self, items: Sequence[ClassifyItem]) -> list[Classification | None]:
        return self._call("classify", items)


@dataclass
class _Step:
    """One step's re-scored verdicts (rubric -> (method, run judge's, audit judge's)) and canaries."""

    pairs: dict[str, tuple[str, list[Verdict | None], list[Verdict | None]]] = field(default_factory=dict)
    favour: list[float] = field(default_factory=list)


class JudgeMonitor:
    """``judge.audit`` for one run: see the module docstring."""

    def __init__(self, cfg: JudgeAuditConfig, judge: Judge, auditor: Judge, seed: int) -> None:
        self.cfg, self.auditor, self.seed = cfg, auditor, seed
        self.judge = MonitoredJudge(judge, cfg.canaries, derived_seed(seed, 53))
        self.window: deque[_Step] = deque(maxlen=cfg.window)
        self.alarm: str | None = None

    def after_step(self, step: int) -> dict[str, float]:
        """Re-score a share of the verdicts since the last call; the step's ``audit/*`` figures."""
        started = time.perf_counter()
        pick = random.Random(derived_seed(self.seed, step, 59))
        now, rescored, failures, total = _Step(favour=self.judge.favour), 0, 0, 0
        for method, judged in self.judge.verdicts.items():
            total += len(judged)
            chosen = [(item, verdict) for item, verdict in judged if pick.random() < self.cfg.fraction]
            if not chosen:
                continue
            rescored += len(chosen)
            try:
                again = list(getattr(self.auditor, method)([item for item, _ in chosen]))
                if len(again) != len(chosen):
                    raise JudgeError(f"{len(again)} verdicts for {len(chosen)} items")
            except Exception as error:  # the audit judge failed: counted, never guessed, the run goes on
                print(
                    f"advgame train: judge audit at step {step}: {method} re-scoring failed: {error}", file=sys.stderr
                )
                failures += len(chosen)
                continue
            for (item, verdict), other in zip(chosen, again, strict=True):
                _, mine, theirs = now.pairs.setdefault(rubric_key(method, item), (method, [], []))
                mine.append(verdict)
                theirs.append(other)
        canaries = len(self.judge.favour) + self.judge.canary_failures
        failures += self.judge.canary_failures
        self.judge.verdicts = {m: [] for m in METHODS}
        self.judge.favour, self.judge.canary_failures = [], 0
        self.window.append(now)
        out = {
            "audit/rescored": float(rescored),
            "audit/rescored_fraction": rescored / total if total else 0.0,
            "audit/canary_share": canaries / (total + canaries) if total + canaries else 0.0,
            "audit/failures": float(failures),
        }
        out |= self._figures()
        out["time/audit_s"] = time.perf_counter() - started
        return out

    def _figures(self) -> dict[str, float]:
        out: dict[str, float] = {}
        alarm, limits = [], self.cfg.alarm
        rubrics = sorted({key for s in self.window for key in s.pairs})
        for key in rubrics:
            rows = [s.pairs[key] for s in self.window if key in s.pairs]
            method = rows[0][0]
            a = agreement(method, [v for r in rows for v in r[1]], [v for r in rows for v in r[2]])
            out[f"audit/{key}_count"] = float(a.count)
            if a.agreement is not None:
                out[f"audit/{key}_agreement"] = a.agreement
            if a.kappa is not None:
                out[f"audit/{key}_kappa"] = a.kappa
            if a.count < limits.min_count:
                continue
            if limits.min_kappa is not None and a.kappa is not None and a.kappa < limits.min_kappa:
                alarm.append(f"{key}: Cohen's kappa {a.kappa:.2f} < {limits.min_kappa:g} over {a.count} verdicts")
            if limits.min_agreement is not None and a.agreement is not None and a.agreement < limits.min_agreement:
                alarm.append(f"{key}: agreement {a.agreement:.2f} < {limits.min_agreement:g} over {a.count} verdicts")
        favour = [v for s in self.window for v in s.favour]
        out["audit/canary_count"] = float(len(favour))
        if favour:
            rate = sum(favour) / len(favour)
            out["audit/canary_favour"] = rate
            ceiling = limits.max_canary_rate
            if ceiling is not None and len(favour) >= limits.min_count and rate > ceiling:
                alarm.append(f"master-key canaries favoured at {rate:.2f} > {ceiling:g} over {len(favour)} canaries")
        out["audit/alarm"] = float(bool(alarm))
        self.alarm = "; ".join(alarm) or None
        return out

    def check(self, step: int) -> None:
        """After the step is logged: warn, or stop the run (``alarm.action``), if the alarm is up."""
        if self.alarm is None:
            return
        message = f"judge audit alarm at step {step}: {self.alarm}"
        if self.cfg.alarm.action == "stop":
            raise JudgeAlarm(f"{message}; the run stopped (judge.audit.alarm.action: stop)")
        from tqdm.auto import tqdm  # through tqdm, so a progress bar is not torn

        tqdm.write(f"advgame train: warning: {message}", file=sys.stderr)
