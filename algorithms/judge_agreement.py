"""How far two judges agree on the same items: Cohen's kappa and raw agreement of their verdicts,
read as categories (a pair's winner, a score's band, yes/no, the classifier's labels).

``advgame judge-audit`` reports it (``algorithms.evaluation.judge_audit``) and the trainer's judge
monitor (``algorithms.training.judge_monitor``) alarms on it; it sits below both, so that training
imports nothing of evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from advgame_env.judges import ClassifyItem, FaithfulnessItem, PairItem, PointItem
from advgame_env.rewards import Classification

MIDPOINT = 5.0  # of the judges' 0-10 scale: a score above it is favourable


def cohen_kappa(a: Sequence[object], b: Sequence[object]) -> float | None:
    """Cohen's kappa of two raters' labels; None where chance agreement is already 1 (one label
    used by both), where kappa is undefined. (scikit-learn has it, but is no dependency of ours.)"""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    expected = sum((list(a).count(k) / n) * (list(b).count(k) / n) for k in labels)
    return None if expected >= 1.0 else (observed - expected) / (1.0 - expected)


# What a judge method is asked about: ``faithfulness``, ``compare``, ``score``, ``classify``'s items
JudgeItem = FaithfulnessItem | PairItem | PointItem | ClassifyItem

# What a verdict says, as a category two judges can agree on: a pair's winner, a score's band,
# yes/no, the three classifier labels.
Verdict = tuple[float, float] | float | bool | Classification


def verdict_label(method: str, verdict: Verdict) -> str:
    if method == "compare":
        a, b = verdict  # type: ignore[misc]
        return "A" if a > b else "B" if b > a else "tie"
    if method == "score":
        s = float(verdict)  # type: ignore[arg-type]
        return "low" if s < 4 else "high" if s > 6 else "mid"
    if method == "faithfulness":
        return "yes" if verdict else "no"
    c: Classification = verdict  # type: ignore[assignment]
    return "/".join(
        "-" if v is None else "yes" if v else "no" for v in (c.prompt_harmful, c.refusal, c.response_harmful)
    )


def rubric_key(method: str, item: object) -> str:
    """The rubric a verdict is about, as agreement figures are keyed."""
    if method == "compare":
        return str(item.rubric.value)  # type: ignore[attr-defined]
    if method == "score":
        return f"{item.rubric.value}_score"  # type: ignore[attr-defined]
    return "faithfulness" if method == "faithfulness" else "classification"


@dataclass
class Agreement:
    count: int  # items both judges gave a verdict on
    agreement: float | None
    kappa: float | None
    failures: int  # items either judge failed on


def agreement(method: str, first: Sequence[Verdict | None], second: Sequence[Verdict | None]) -> Agreement:
    pairs = [(x, y) for x, y in zip(first, second, strict=True) if x is not None and y is not None]
    a = [verdict_label(method, x) for x, _ in pairs]
    b = [verdict_label(method, y) for _, y in pairs]
    raw = sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else None
    return Agreement(len(a), raw, cohen_kappa(a, b), len(first) - len(a))
