"""Parsing of players' and judges' outputs. Pure functions; every failure has a name.

Failures map to the paper's outcomes: a malformed, over-long or unfaithful output is paid
``PENALTY`` (-1, below every valid score of 0-10), while a judge failure, or a slot that
has nothing to judge, is excluded (``None``) and never replaced by a guessed score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PENALTY = -1.0


class Failure(StrEnum):
    OVER_LENGTH = "over_length"  # longer than the limit, or generation stopped at the token limit
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


def clean_text(text: str) -> str:
    """Normalise line ends and drop control characters (a defined outcome, never an error)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


@dataclass(frozen=True)
class Parsed:
    """A player's output split into hidden reasoning and the public text others see."""

    public: str | None  # None when the output failed
    reasoning: str = ""
    failure: Failure | None = None


_FLAGS = re.IGNORECASE | re.DOTALL
_THINK_PROMPT = re.compile(r"^\s*<think>(.*?)</think>\s*<prompt>(.*)</prompt>\s*$", _FLAGS)
_PROMPT_ONLY = re.compile(r"^\s*<prompt>(.*)</prompt>\s*$", _FLAGS)
# The leading <think> is optional: a policy may have it as an assistant prefill.
_THINK_ANSWER = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*<answer>(.*)</answer>\s*$", _FLAGS)
_ANY_TAG = re.compile(r"</?\s*(think|prompt|answer)\s*>", re.IGNORECASE)


def _strict(match: re.Match[str] | None) -> Parsed:
    """Accept a match only if no group hides another tag and the public part is non-empty."""
    if match is None:
        return Parsed(None, failure=Failure.BAD_FORMAT)
    *hidden, public = match.groups()
    if any(_ANY_TAG.search(group) for group in match.groups()) or not public.strip():
        return Parsed(None, failure=Failure.BAD_FORMAT)
    return Parsed(public.strip(), reasoning=(hidden[0].strip() if hidden else ""))


def _check_length(text: str, max_chars: int, finish_reason: str | None) -> Failure | None:
    if finish_reason == "length" or len(text) > max_chars:
        return Failure.OVER_LENGTH
    return None


def parse_attack(text: str, think: bool, max_chars: int, finish_reason: str | None = None) -> Parsed:
    """Attacker output: ``<think>plan</think><prompt>public prompt</prompt>`` (or prompt only)."""
    if failure := _check_length(text, max_chars, finish_reason):
        return Parsed(None, failure=failure)
    return _strict((_THINK_PROMPT if think else _PROMPT_ONLY).match(clean_text(text)))


def parse_response(text: str, think: bool, max_chars: int, finish_reason: str | None = None) -> Parsed:
    """Defender output: any non-empty text, or ``<think>..</think><answer>..</answer>``."""
    if failure := _check_length(text, max_chars, finish_reason):
        return Parsed(None, failure=failure)
    text = clean_text(text)
    if think:
        return _strict(_THINK_ANSWER.match(text))
    return Parsed(text.strip()) if text.strip() else Parsed(None, failure=Failure.BAD_FORMAT)


# ----------------------------------------------------------------------------- judge output
# Only the judge's own generated text is parsed; the last well-formed tag wins, so a verdict
# quoted early in the judge's reasoning cannot override its final one.

_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?"


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text, re.IGNORECASE)
    return found[-1] if found else None


def _score(tag: str, text: str) -> float | None:
    value = _last(rf"<{tag}>{_NUMBER}</{tag}>", text)
    return None if value is None else min(10.0, max(0.0, float(value)))


def parse_pairwise_scores(judge_text: str) -> tuple[float, float] | None:
    a, b = _score("score_A", judge_text), _score("score_B", judge_text)
    return None if a is None or b is None else (a, b)


def parse_pointwise_score(judge_text: str) -> float | None:
    return _score("score", judge_text)


_YES = {"yes": True, "true": True, "no": False, "false": False}


def parse_yes_no(tag: str, judge_text: str) -> bool | None:
    value = _last(rf"<{tag}>\s*(yes|no|true|false)\s*</{tag}>", judge_text)
    return None if value is None else _YES[value.lower()]
