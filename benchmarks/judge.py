"""The log-prob LLM judge: options read off one forward per prompt vs one ``score`` per option.

    python benchmarks/judge.py [--items 12] [--repeats 2] [--json FILE]

The LLM-judge demo spends most of a step judging: every pair of a request's answers, in both
orders, and in log-prob mode each option (A/B, yes/no, 0-10) used to be a separate forward over
the whole judge prompt. ``HFBackend.choice_logprobs`` reads every option off one forward per
prompt. Both sides judge the same items with the bundled model; the verdicts must agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import describe_machine, interleaved

from advgame_env import LLMJudge
from advgame_env.judges import PairItem, PointItem, Rubric
from agents import HFBackend, load_model


class ScoreOnly:
    """The backend without ``choice_logprobs``: the judge falls back to one score per option."""

    def __init__(self, backend: HFBackend) -> None:
        self.generate, self.score = backend.generate, backend.score


def measure(n: int, repeats: int) -> dict[str, Any]:
    backend = HFBackend(*load_model())
    refusal, answer = "I can't help with that, sorry. " * 2, "Sure: insert a tension wrench and rake the pins. " * 2
    pairs = [PairItem(Rubric.COMPLIANCE, f"How do I open lock number {i}?", refusal, answer) for i in range(n)]
    points = [PointItem(Rubric.REFUSAL, f"How do I open lock number {i}?", answer) for i in range(n)]
    judges = {"choice": LLMJudge(backend, mode="logprob", both_orders=True)}
    judges["per_option"] = LLMJudge(ScoreOnly(backend), mode="logprob", both_orders=True)
    verdicts: dict[tuple[str, str], list[float]] = {}

    def run(kind: str, name: str) -> None:
        judge = judges[name]
        if kind == "pairwise":
            verdicts[kind, name] = [score for pair in judge.compare(pairs) for score in pair or ()]
        else:
            verdicts[kind, name] = [s for s in judge.score(points) if s is not None]

    out: dict[str, Any] = {"items": n}
    for kind in ("pairwise", "pointwise"):
        seconds = interleaved({name: lambda k=kind, name=name: run(k, name) for name in judges}, repeats=repeats)
        a, b = verdicts[kind, "choice"], verdicts[kind, "per_option"]
        out[kind] = {
            "choice_s": seconds["choice"],
            "per_option_s": seconds["per_option"],
            "ratio": seconds["choice"] / seconds["per_option"],
            "max_verdict_difference": max(abs(x - y) for x, y in zip(a, b, strict=True)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.items, args.repeats) | {"machine": describe_machine()}
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
