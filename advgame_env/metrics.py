"""Evaluation figures as pure functions: rates with confidence intervals, attack diversity.

* ``rate``: a proportion with its Wilson score interval (well behaved at 0 %, 100 % and small n,
  where the normal approximation gives intervals outside [0, 1]); ``wilson`` is the interval alone.
* ``embedding_diversity``: 1 − mean off-diagonal cosine similarity of a set of embeddings (the
  "SBERT diversity" of Self-RedTeam when the embeddings come from all-MiniLM-L6-v2).
* ``self_bleu_diversity``: 1 − mean BLEU of each text against all the others (÷ 100).
* ``bleu``: sentence BLEU-4 with several references, brevity penalty, and exponential smoothing
  of empty n-gram orders (the "exp" method), on whitespace/punctuation tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class Rate:
    successes: int
    total: int
    low: float  # Wilson interval
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.total if self.total else math.nan

    def as_dict(self) -> dict[str, float]:
        """The fields reports write to JSON (``read_summary`` reads them back)."""
        return {"rate": self.value, "low": self.low, "high": self.high, "n": self.total, "successes": self.successes}

    def __str__(self) -> str:
        if not self.total:
            return "n/a (0 items)"
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.total})"


def rate(successes: int, total: int, z: float = Z_95) -> Rate:
    """successes / total with its Wilson score interval (95 % by default)."""
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return Rate(0, 0, math.nan, math.nan)
    return Rate(successes, total, *wilson(successes / total, total, z))


def wilson(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a share ``p`` observed over ``n`` items (nan for n = 0).

    ``p`` may be the mean of scores in [0, 1] rather than a count's share (a win rate with
    ties as halves): their variance is at most p (1 - p), so the interval is then conservative.
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= p <= 1:
        raise ValueError(f"need a share in [0, 1], got {p}")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact at the ends: the interval of 0/n starts at 0 and that of n/n ends at 1
    low = 0.0 if p == 0 else max(0.0, centre - half)
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return low, high


# ----------------------------------------------------------------------------- diversity


def embedding_diversity(embeddings: Sequence[Sequence[float]]) -> float:
    """1 − mean cosine similarity over all ordered pairs i ≠ j (nan for fewer than 2)."""
    n = len(embeddings)
    if n < 2:
        return math.nan
    unit = [_normalised(e) for e in embeddings]
    total = sum(sum(a * b for a, b in zip(unit[i], unit[j], strict=True)) for i in range(n) for j in range(n) if i != j)
    return 1.0 - total / (n * (n - 1))


def _normalised(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        raise ValueError("a zero embedding has no direction")
    return [v / norm for v in vector]


_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(hypothesis: str, references: Sequence[str], max_order: int = 4) -> float:
    """Sentence BLEU (0-100) of ``hypothesis`` against ``references``."""
    hyp = tokens(hypothesis)
    refs = [tokens(r) for r in references]
    if not hyp or not refs:
        return 0.0
    log_precisions, smoothing = [], 1.0
    for n in range(1, max_order + 1):
        counts = _ngrams(hyp, n)
        most = Counter[tuple[str, ...]]()
        for ref in refs:
            most |= _ngrams(ref, n)  # clip each n-gram by its largest count in any reference
        matches, possible = sum(min(c, most[g]) for g, c in counts.items()), max(len(hyp) - n + 1, 0)
        if possible == 0:
            break  # a hypothesis shorter than n: the higher orders are not counted
        if matches == 0:
            smoothing *= 2  # "exp" smoothing: 1 / 2^k for the k-th order without a match
            log_precisions.append(math.log(1 / (smoothing * possible)))
        else:
            log_precisions.append(math.log(matches / possible))
    closest = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    brevity = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
    return 100 * brevity * math.exp(sum(log_precisions) / len(log_precisions))


def self_bleu_diversity(texts: Sequence[str]) -> float:
    """1 − mean over i of BLEU(text_i, all other texts) / 100 (nan for fewer than 2)."""
    if len(texts) < 2:
        return math.nan
    scores = [bleu(t, [o for j, o in enumerate(texts) if j != i]) for i, t in enumerate(texts)]
    return 1.0 - sum(scores) / len(scores) / 100
