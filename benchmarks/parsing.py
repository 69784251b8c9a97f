"""Player and judge-output parsers, and the judge-prompt tag neutraliser, on hostile texts: how
their time grows with the input.

    .venv/bin/python benchmarks/parsing.py [--json out.json]

Sizes 1x, 10x, 100x; it prints the time ratio of the two largest and the fitted exponent
(time ~ size^k). Linear parsers give about 10 and 1 (at the smallest size, allocation and
cache effects push the first step above 10); the regular expressions they replaced gave about
100 and 2 (quadratic) on blanks before a missing tag. The neutraliser (every LLM-judge prompt
goes through it) is measured the same way up to the 100,000-character size guard, beside its
old tag pattern. Nothing here asserts a time.
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

from advgame_env import templates
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
# The neutraliser's tag pattern as it was (blank runs on both sides of an optional "/").
_OLD_TAG = re.compile(templates._JUDGE_TAG.pattern.replace(r"\s*+", r"\s*"), re.IGNORECASE)

NEUTRALISER_HOSTILE = {
    "< then blanks then a word": lambda n: "<" + " " * (n - 2) + "x",
    "< / blank runs": lambda n: ("< / " + " " * 20) * (n // 24),
    "tag soup": lambda n: ("<score  \u2039 /answer >" + "\u3000" * 8) * (n // 32),
}


def neutraliser_growth(results: dict[str, Any]) -> None:
    sizes = [1_000, 10_000, 100_000]  # up to the size guard
    results["neutraliser"] = {"sizes": sizes}
    for name, make in NEUTRALISER_HOSTILE.items():
        seconds = [median_seconds(partial(templates.neutralise_tags, make(n))) for n in sizes]
        ratio, fit = seconds[2] / seconds[1], exponent(sizes, seconds)
        results["neutraliser"][name] = {"seconds": seconds, "ratio_10x": ratio, "exponent": fit}
        shown = ", ".join(f"{n:,}: {t * 1e3:.2f} ms" for n, t in zip(sizes, seconds, strict=True))
        print(f"neutraliser, {name}: {shown}; 10x input -> {ratio:.1f}x time; exponent {fit:.2f}")
    small = [500, 1_000, 2_000]  # the old pattern is quadratic: larger sizes take minutes
    old = [median_seconds(partial(_OLD_TAG.sub, "", "<" + " " * n + "x")) for n in small]
    new = [median_seconds(partial(templates._JUDGE_TAG.sub, "", "<" + " " * n + "x")) for n in small]
    results["neutraliser"]["old_pattern"] = {"sizes": small, "old": old, "new": new, "exponent": exponent(small, old)}
    shown = ", ".join(f"{n:,}: {t * 1e3:.1f} ms" for n, t in zip(small, old, strict=True))
    print(f"baseline, < then blanks, the old tag pattern: {shown}; exponent {exponent(small, old):.2f}", end="")
    print(f"; the new one at {small[-1]:,}: {new[-1] * 1e3:.3f} ms ({old[-1] / new[-1]:,.0f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--size", type=int, default=40_000)
    parser.add_argument("--neutraliser-only", action="store_true", help="skip the parsers")
    args = parser.parse_args()
    sizes = [args.size, 10 * args.size, 100 * args.size]
    results: dict[str, Any] = {"machine": describe_machine(), "sizes": sizes, "hostile": {}}
    print(results["machine"])
    if args.neutraliser_only:
        neutraliser_growth(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
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
    neutraliser_growth(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
