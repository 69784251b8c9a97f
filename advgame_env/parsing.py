"""Parsing of players' and judges' outputs. Pure functions; every failure has a name.

Failures map to the paper's outcomes: a malformed, over-long or unfaithful output is paid
``PENALTY`` (-1, below every valid score of 0-10), while a judge failure, or a slot that
has nothing to judge, is excluded (``None``) and never replaced by a guessed score.

Every parser here is a linear scan of its input: one pass of a tag pattern that cannot
backtrack across tags (each match starts at a ``<`` and stops at the first character that
cannot continue it), then work per tag found. No pattern has two unbounded repeats that can
match the same characters, so the cost of a parse is O(len(text)) whatever the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from itertools import islice

PENALTY = -1.0


class Failure(StrEnum):
    OVER_LENGTH = "over_length"  # generation stopped at its token limit, or text over the size guard
    BAD_FORMAT = "bad_format"  # required tags missing, nested or followed by text; empty answer
    UNFAITHFUL = "unfaithful"  # the faithfulness judge says the rewrite asks for something else
    JUDGE_FAILURE = "judge_failure"  # a judge call failed or its output had no verdict
    PROMPT_INVALID = "prompt_invalid"  # a defender slot whose attack failed: nothing was asked
    NO_VALID_RESPONSE = "no_valid_response"  # every defender response to this attack failed

    @property
    def penalised(self) -> bool:
        """The player caused it (paid PENALTY); otherwise the sample is excluded."""
        return self in (Failure.OVER_LENGTH, Failure.BAD_FORMAT, Failure.UNFAITHFUL)


def failure_reward(failure: Failure) -> float | None:
    return PENALTY if failure.penalised else None


# C0/C1 control characters except tab and newline; they carry no meaning in a chat turn.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def valid_unicode(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that it encodes as UTF-8.

    A JSON answer may carry ``"\\ud800"``, which Python decodes to a lone surrogate: the string
    is then unwritable (``UTF-8 codec can't encode``) in a report, a prompt or a tokenizer. A
    pair split over two code units is joined (UTF-16 round trip), not replaced.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def clean_text(text: str) -> str:
    """Lone surrogates replaced (``valid_unicode``), line ends normalised, control characters
    dropped (a defined outcome, never an error)."""
    return _CONTROL.sub("", valid_unicode(text).replace("\r\n", "\n").replace("\r", "\n"))


@dataclass(frozen=True)
class Parsed:
    """A player's output split into hidden reasoning and the public text others see.

    ``fallback``: for a failed output, what an opponent is shown when the reward rule shows
    failed outputs (Self-RedTeam): the text inside the first pair of public tags if there is
    one, else the whole cleaned output, hidden reasoning included (as the reference code
    does). None for a text over the size guard, which nobody is shown.
    """

    public: str | None  # None when the output failed
    reasoning: str = ""
    failure: Failure | None = None
    fallback: str | None = None


# A player tag: <think>, </prompt>, < answer >, ... (any case, blanks inside the brackets).
# Each match starts at a "<" and its blanks stop at the first other character: linear.
_ANY_TAG = re.compile(r"<(/?)\s*(think|prompt|answer)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class _Tag:
    name: str  # lower case
    closing: bool
    start: int
    end: int
    exact: bool  # written <name> or </name>, no blanks inside


def _tags(text: str, start: int = 0) -> Iterator[_Tag]:
    """The player tags of ``text`` from ``start`` on, in order (lazily: one pass at most)."""
    for m in _ANY_TAG.finditer(text, start):
        name, closing = m.group(2).lower(), bool(m.group(1))
        yield _Tag(name, closing, m.start(), m.end(), m.end() - m.start() == len(name) + 2 + closing)


def _is(tag: _Tag, name: str, closing: bool) -> bool:
    return tag.exact and tag.name == name and tag.closing == closing


def _fallback(text: str, public: str) -> str:
    """The text of the first ``<public>..</public>`` pair, else the whole text (see Parsed)."""
    tags = (t for t in _tags(text) if t.name == public)
    opening = next((t for t in tags if not t.closing), None)
    closing = None if opening is None else next((t for t in tags if t.closing), None)
    if opening is None or closing is None:
        return text.strip()
    return text[opening.end : closing.start].strip()


def _strict(text: str, public: str, think: bool, prefilled: bool = False, strict: bool = False) -> Parsed:
    """The strict format, checked on the list of tags (linear in the text).

    With ``think``: ``<think>R</think> <public>P</public>``; without: ``<public>P</public>``.
    Blanks may surround the whole and separate ``</think>`` from ``<public>``; no other player
    tag may appear anywhere (in R or P: a nested or leaked tag); P must not be blank.
    ``prefilled``: the opening ``<think>`` may be missing (an assistant prefill wrote it).
    ``strict`` (Self-RedTeam's check): R must not be blank and nothing, not even a blank, may
    follow ``</public>``.
    """
    tags = list(islice(_tags(text), 5))  # a valid output has at most 4: stop at the 5th
    failed = Parsed(None, failure=Failure.BAD_FORMAT, fallback=_fallback(text, public))
    lead, finish = len(text) - len(text.lstrip()), len(text.rstrip())
    opening = tags[0] if think and tags and _is(tags[0], "think", False) and tags[0].start == lead else None
    rest = tags[1:] if opening else tags
    shape = [("think", True), (public, False), (public, True)] if think else [(public, False), (public, True)]
    if think and opening is None and not prefilled:
        return failed
    if len(rest) != len(shape) or not all(_is(t, n, c) for t, (n, c) in zip(rest, shape, strict=True)):
        return failed
    first, last = rest[-2], rest[-1]
    if last.end != (len(text) if strict else finish):
        return failed  # text after </public>
    reasoning = ""
    if think:
        close = rest[0]
        if text[close.end : first.start].strip():
            return failed  # text between </think> and <public>
        reasoning = text[(opening.end if opening else lead) : close.start].strip()
        if strict and not reasoning:
            return failed  # empty reasoning
    elif first.start != lead:
        return failed  # text before <public>
    body = text[first.end : last.start].strip()
    return Parsed(body, reasoning=reasoning) if body else failed


def _cut(parsed: Parsed, finish_reason: str | None) -> Parsed:
    """A generation stopped by its token limit is over-length whatever it parsed as; it
    keeps what it would have shown as its fallback."""
    if finish_reason != "length":
        return parsed
    shown = parsed.public if parsed.public is not None else parsed.fallback
    return Parsed(None, failure=Failure.OVER_LENGTH, fallback=shown)


def _after_lead_in(text: str, lead_in: str) -> str:
    """The output without the text a prefill wrote before its ``<think>`` (Self-RedTeam's
    "Let's think step by step."): the format is checked on what follows, as the reference does."""
    return text[len(lead_in) :] if lead_in and text.startswith(lead_in) else text


def parse_attack(
    text: str,
    think: bool,
    max_chars: int,
    finish_reason: str | None = None,
    *,
    tag: str = "prompt",
    strict: bool = False,
    lead_in: str = "",
) -> Parsed:
    """Attacker output: ``<think>plan</think><prompt>public prompt</prompt>`` (or prompt only).

    ``tag``: the public tag ("answer" for Self-RedTeam); "" without ``think``: the whole
    output is the prompt (Self-RedTeam's no-CoT attacker), only a blank one fails.
    ``strict`` and ``lead_in``: see ``_strict`` and ``_after_lead_in``.

    Over-length (see ``GameConfig``): a generation stopped by its token limit (finish reason
    "length"), or any text over ``max_chars``, a size guard that is not even scanned.
    """
    if len(text) > max_chars:
        return Parsed(None, failure=Failure.OVER_LENGTH)
    text = _after_lead_in(clean_text(text), lead_in)
    if not tag:
        if think:
            raise ValueError("an attacker format with hidden reasoning needs a public tag")
        body = text.strip()
        parsed = Parsed(body) if body else Parsed(None, failure=Failure.BAD_FORMAT, fallback="")
        return _cut(parsed, finish_reason)
    return _cut(_strict(text, tag, think, prefilled=bool(lead_in), strict=strict), finish_reason)


def parse_response(
    text: str,
    think: bool,
    max_chars: int,
    finish_reason: str | None = None,
    *,
    strict: bool = False,
    lead_in: str = "",
    accept_empty: bool = False,
) -> Parsed:
    """Defender output: any non-empty text, or ``<think>..</think><answer>..</answer>`` (the
    leading ``<think>`` optional: a policy may have it as an assistant prefill). Over-length as
    in ``parse_attack``. ``accept_empty``: a blank plain answer is an answer (AdvGame's regex
    accepts any text), not a format failure."""
    if len(text) > max_chars:
        return Parsed(None, failure=Failure.OVER_LENGTH)
    text = _after_lead_in(clean_text(text), lead_in)
    if think:
        parsed = _strict(text, "answer", True, prefilled=True, strict=strict)
    elif text.strip() or accept_empty:
        parsed = Parsed(text.strip())
    else:
        parsed = Parsed(None, failure=Failure.BAD_FORMAT, fallback="")
    return _cut(parsed, finish_reason)


# ----------------------------------------------------------------------------- judge output
# Only the judge's own generated text is parsed; the last well-formed tag wins, so a verdict
# quoted early in the judge's reasoning cannot override its final one.

_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?", re.IGNORECASE)
_YES_NO = re.compile(r"\s*(yes|no|true|false)\s*", re.IGNORECASE)


@cache
def _judge_tag(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<(/?){re.escape(tag)}>", re.IGNORECASE)


def _last(tag: str, value: re.Pattern[str], text: str) -> str | None:
    """The value of the last ``<tag>value</tag>`` whose whole inside matches ``value``.

    One pass over the tags; each closing tag is paired with the last opening tag before it
    (and after the previous closing one), so the insides looked at are disjoint: linear.
    """
    found, start = None, None
    for m in _judge_tag(tag).finditer(text):
        if not m.group(1):
            start = m.end()
        elif start is not None:
            inside = value.fullmatch(text, start, m.start())
            if inside:
                found = inside.group(1)
            start = None
    return found


def _score(tag: str, text: str) -> float | None:
    value = _last(tag, _NUMBER, text)
    return None if value is None else min(10.0, max(0.0, float(value)))


def parse_pairwise_scores(judge_text: str) -> tuple[float, float] | None:
    a, b = _score("score_A", judge_text), _score("score_B", judge_text)
    return None if a is None or b is None else (a, b)


def parse_pointwise_score(judge_text: str) -> float | None:
    return _score("score", judge_text)


_YES = {"yes": True, "true": True, "no": False, "false": False}


def parse_yes_no(tag: str, judge_text: str) -> bool | None:
    value = _last(tag, _YES_NO, judge_text)
    return None if value is None else _YES[value.lower()]
