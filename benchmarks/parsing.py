"""Player and judge-output parsers on hostile texts: time at 10x the input / time at 1x.

    .venv/bin/python benchmarks/parsing.py [--json out.json]

A linear parser gives a ratio near 10; the regular expressions they replaced gave about 100
(quadratic) on blanks before a missing tag. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import describe_machine, median_seconds

from advgame_env.parsing import parse_attack, parse_pairwise_scores, parse_response

HOSTILE = {
    "blanks": lambda n: " " * n,
    "blanks then a word": lambda n: " " * n + "x",
    "closing think tags": lambda n: "</think>" * (n // 8),
    "judge tags with blanks": lambda n: ("<score_A> " + " " * 10) * (n // 20),
}


def parse_all(text: str) -> None:
    parse_attack(text, think=True, max_chars=10**9)
    parse_response(text, think=True, max_chars=10**9)
    parse_pairwise_scores(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--size", type=int, default=40_000)
    args = parser.parse_args()
    results = {"machine": describe_machine(), "size": args.size, "ratios": {}}
    for name, make in HOSTILE.items():
        small, large = make(args.size), make(10 * args.size)
        t1 = median_seconds(lambda: parse_all(small))  # noqa: B023
        t10 = median_seconds(lambda: parse_all(large))  # noqa: B023
        results["ratios"][name] = t10 / t1
        print(f"{name}: {args.size} chars {t1 * 1e3:.2f} ms, 10x {t10 * 1e3:.2f} ms, ratio {t10 / t1:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
