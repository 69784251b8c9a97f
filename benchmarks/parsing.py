"""Player and judge-output parsers on hostile texts: how their time grows with the input.

    .venv/bin/python benchmarks/parsing.py [--json out.json]

Sizes 1x, 10x, 100x; it prints the time ratio of the two largest and the fitted exponent
(time ~ size^k). Linear parsers give about 10 and 1 (at the smallest size, allocation and
cache effects push the first step above 10); the regular expressions they replaced gave about
100 and 2 (quadratic) on blanks before a missing tag. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import describe_machine, exponent, median_seconds

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


# The defender's think format as a regular expression, as it was: quadratic on blanks.
_REGEX = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*<answer>(.*)</answer>\s*$", re.IGNORECASE | re.DOTALL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--size", type=int, default=40_000)
    args = parser.parse_args()
    sizes = [args.size, 10 * args.size, 100 * args.size]
    results: dict[str, Any] = {"machine": describe_machine(), "sizes": sizes, "hostile": {}}
    print(results["machine"])
    for name, make in HOSTILE.items():
        seconds = [median_seconds(partial(parse_all, make(n))) for n in sizes]
        ratio, fit = seconds[2] / seconds[1], exponent(sizes, seconds)
        results["hostile"][name] = {"seconds": seconds, "ratio_10x": ratio, "exponent": fit}
        shown = ", ".join(f"{n:,}: {t * 1e3:.1f} ms" for n, t in zip(sizes, seconds, strict=True))
        print(f"{name}: {shown}; 10x input -> {ratio:.1f}x time; exponent {fit:.2f}")
    small = [2_000, 4_000, 8_000]
    regex = [median_seconds(partial(_REGEX.match, " " * n)) for n in small]
    ours = [median_seconds(partial(parse_response, " " * n, True, 10**9)) for n in small]
    results["regex_baseline"] = {"sizes": small, "regex": regex, "ours": ours, "exponent": exponent(small, regex)}
    shown = ", ".join(f"{n:,}: {t * 1e3:.1f} ms" for n, t in zip(small, regex, strict=True))
    print(f"baseline, blanks, the think-answer regex: {shown}; exponent {exponent(small, regex):.2f}", end="")
    print(f"; ours at {small[-1]:,}: {ours[-1] * 1e3:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
