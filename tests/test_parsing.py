import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advgame_env import parsing
from advgame_env.parsing import (
    PENALTY,
    Failure,
    clean_text,
    failure_reward,
    parse_attack,
    parse_pairwise_scores,
    parse_pointwise_score,
    parse_response,
    parse_yes_no,
)
from tests.guards import hang_guard

LIMIT = 1000


@pytest.mark.parametrize(
    "text, public, reasoning",
    [
        ("<think>plan</think><prompt>Tell me X</prompt>", "Tell me X", "plan"),
        ("  <THINK> a\nb </THINK>\n\n<Prompt>\n multi\nline \n</Prompt>  \n", "multi\nline", "a\nb"),
        ("<think></think><prompt>empty plan is fine</prompt>", "empty plan is fine", ""),
    ],
)
def test_attack_with_thinking_accepts_the_strict_format(text, public, reasoning):
    parsed = parse_attack(text, think=True, max_chars=LIMIT)
    assert (parsed.public, parsed.reasoning, parsed.failure) == (public, reasoning, None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "just a prompt",
        "<prompt>no plan</prompt>",  # thinking required
        "<think>plan</think>",  # no prompt
        "<think>plan</think><prompt>x</prompt> trailing words",
        "preamble <think>plan</think><prompt>x</prompt>",
        "<think>plan</think><prompt>   </prompt>",  # empty public prompt
        "<think>a<think>b</think><prompt>x</prompt>",  # nested tag
        "<think>plan</think><prompt>x</prompt><prompt>y</prompt>",
        "<think>plan</think><prompt>x <think>leak</think></prompt>",
    ],
)
def test_attack_format_violations_are_bad_format(text):
    parsed = parse_attack(text, think=True, max_chars=LIMIT)
    assert parsed.public is None and parsed.failure is Failure.BAD_FORMAT


def test_attack_without_thinking_needs_prompt_tags_only():
    assert parse_attack("<prompt>hi</prompt>", think=False, max_chars=LIMIT).public == "hi"
    assert (
        parse_attack("<think>p</think><prompt>hi</prompt>", think=False, max_chars=LIMIT).failure is Failure.BAD_FORMAT
    )


def test_length_limit_and_token_limit_are_over_length():
    long = "<think>p</think><prompt>" + "x" * LIMIT + "</prompt>"
    assert parse_attack(long, think=True, max_chars=LIMIT).failure is Failure.OVER_LENGTH
    ok = "<think>p</think><prompt>x</prompt>"
    assert parse_attack(ok, think=True, max_chars=LIMIT, finish_reason="length").failure is Failure.OVER_LENGTH
    assert parse_response("fine", think=False, max_chars=3).failure is Failure.OVER_LENGTH


def test_a_megabyte_is_over_length_without_scanning_it():
    assert parse_response("a" * 1_000_000, think=False, max_chars=LIMIT).failure is Failure.OVER_LENGTH


def test_responses_plain_and_with_hidden_reasoning():
    assert parse_response("  Hello  ", think=False, max_chars=LIMIT).public == "Hello"
    assert parse_response(" \n\t ", think=False, max_chars=LIMIT).failure is Failure.BAD_FORMAT
    # the opening <think> may be an assistant prefill, so it is optional
    parsed = parse_response("reasoning</think> <answer>Hi</answer>", think=True, max_chars=LIMIT)
    assert (parsed.public, parsed.reasoning) == ("Hi", "reasoning")
    assert parse_response("no tags", think=True, max_chars=LIMIT).failure is Failure.BAD_FORMAT


def test_control_characters_are_dropped_and_line_ends_normalised():
    assert clean_text("a\x00b\x07c\r\nd\re\tf\x85") == "ab" + "c\nd\ne\tf"
    parsed = parse_attack("<think>p</think><prompt>he\x00llo\x1b</prompt>", think=True, max_chars=LIMIT)
    assert parsed.public == "hello"


def test_failures_map_to_the_papers_outcomes():
    assert [failure_reward(f) for f in Failure] == [PENALTY, PENALTY, PENALTY, None, None, None]
    assert PENALTY == -1.0


def test_judge_scores_last_match_wins_and_are_clipped():
    text = "I might say <score_A>1</score_A> but finally <score_A> 7.5 </score_A> <score_B>12/10</score_B>"
    assert parse_pairwise_scores(text) == (7.5, 10.0)
    assert parse_pairwise_scores("<score_A>3</score_A> only one") is None
    assert parse_pairwise_scores("<score_A>high</score_A><score_B>low</score_B>") is None
    assert parse_pointwise_score("<think>x</think><score>4</score>") == 4.0
    assert parse_pointwise_score("no verdict") is None


def test_yes_no_verdicts():
    assert parse_yes_no("answer", "<answer> Yes </answer>") is True
    assert parse_yes_no("answer", "<answer>yes</answer> then <answer>FALSE</answer>") is False
    assert parse_yes_no("answer", "<answer>maybe</answer>") is None


# ----------------------------------------------------------------------------- linear parsers

# The format as it was first written: regular expressions (correct, but quadratic on blanks).
# The linear parsers must accept exactly what these accept, with the same parts.
_F = re.IGNORECASE | re.DOTALL
_REGEX = {
    ("attack", True): re.compile(r"^\s*<think>(.*?)</think>\s*<prompt>(.*)</prompt>\s*$", _F),
    ("attack", False): re.compile(r"^\s*<prompt>(.*)</prompt>\s*$", _F),
    ("response", True): re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*<answer>(.*)</answer>\s*$", _F),
}
_TAG = re.compile(r"</?\s*(think|prompt|answer)\s*>", re.IGNORECASE)


def regex_parse(kind: str, think: bool, text: str) -> tuple[str | None, str]:
    match = _REGEX[kind, think].match(clean_text(text))
    if match is None:
        return None, ""
    *hidden, public = match.groups()
    if any(_TAG.search(g) for g in match.groups()) or not public.strip():
        return None, ""
    return public.strip(), hidden[0].strip() if hidden else ""


FRAGMENTS = ["<think>", "</think>", "<prompt>", "</prompt>", "<answer>", "</answer>", "< think >", "</ PROMPT>"]
FRAGMENTS += ["<Think>", "</ANSWER>", " ", "\n", "\t", "x", "yz", "<", ">", "/", "<b>", "\x00", "\r\n", "\u3000"]
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(texts)
def test_the_linear_parsers_accept_exactly_what_the_regex_definition_accepts(text):
    for kind, think in _REGEX:
        parse = parse_attack if kind == "attack" else parse_response
        parsed = parse(text, think=think, max_chars=LIMIT)
        assert (parsed.public, parsed.reasoning if parsed.public else "") == regex_parse(kind, think, text)
        assert (parsed.failure is None) == (parsed.public is not None)
        assert parsed.failure in (None, Failure.BAD_FORMAT)
        assert parsed.public is not None or isinstance(parsed.fallback, str)


def _steps(call, *args) -> int:
    """Python line events inside parsing.py during one call: a deterministic work count."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename == parsing.__file__:
            if event == "line":
                count += 1
            return trace
        return None

    sys.settrace(trace)
    try:
        call(*args)
    finally:
        sys.settrace(None)
    return count


# Inputs that made the regex definition quadratic (blanks before a missing tag) and inputs
# dense in tags (the linear parsers do work per tag).
HOSTILE = [
    lambda n: " " * n,
    lambda n: " " * n + "x",
    lambda n: "<think>" + " " * n,
    lambda n: "</think>" * (n // 8),
    lambda n: "<think></think><prompt>" * (n // 23),
    lambda n: "<answer>" + "</think> " * (n // 9) + "</answer>",
    lambda n: "<score_A>" + "<score_A> 1 " * (n // 12) + "</score_A>" * (n // 10),
    lambda n: ("<score_A> " + " " * 10) * (n // 20),
]
PARSERS = [
    lambda t: parse_attack(t, think=True, max_chars=10**8),
    lambda t: parse_attack(t, think=False, max_chars=10**8),
    lambda t: parse_response(t, think=True, max_chars=10**8),
    lambda t: parse_response(t, think=False, max_chars=10**8),
    parse_pairwise_scores,
    parse_pointwise_score,
    lambda t: parse_yes_no("answer", t),
]


@pytest.mark.parametrize("make", HOSTILE)
@pytest.mark.parametrize("parse", PARSERS)
def test_parser_work_grows_linearly_with_the_input(make, parse):
    small, large = _steps(parse, make(1_000)), _steps(parse, make(10_000))
    assert large <= 10 * small + 50  # 10x the input: at most 10x the steps (plus a constant)


def _outcome(result: object, text: str) -> object:
    """A parse's outcome independent of the input's size: the failure and whether the public
    text is the whole cleaned input; a judge parser's value as it is."""
    if isinstance(result, parsing.Parsed):
        return result.failure, None if result.public is None else result.public == clean_text(text).strip()
    return result


@pytest.mark.parametrize("make", HOSTILE)
def test_a_megabyte_of_hostile_text_parses_to_what_a_kilobyte_of_it_does(make):
    # The regex definition needed hours on a megabyte of blanks before a missing tag: the guard
    # fails such a parser instead of hanging the suite (the linear ones take well under a second).
    big, small = make(1_000_000), make(1_000)
    for parse in PARSERS:
        with hang_guard(60, "a parser on a megabyte of hostile text"):
            outcome = _outcome(parse(big), big)
        assert outcome == _outcome(parse(small), small)


@pytest.mark.parametrize(
    "text, fallback",
    [
        ("no tags at all ", "no tags at all"),  # the whole text, reasoning and all
        ("<think>plan</think><prompt> x </prompt> and more", "x"),  # the first pair's text
        ("<think>plan <prompt>a</prompt><prompt>b</prompt>", "a"),
        ("<think>plan</think><prompt>cut off here", "<think>plan</think><prompt>cut off here"),
        ("", ""),
    ],
)
def test_a_failed_output_keeps_what_it_would_show(text, fallback):
    parsed = parse_attack(text, think=True, max_chars=LIMIT)
    assert parsed.failure is Failure.BAD_FORMAT and parsed.public is None and parsed.fallback == fallback


def test_over_length_means_the_token_limit_and_the_size_guard_shows_nothing():
    long = "<think>p</think><prompt>" + "x" * 20_000 + "</prompt>"
    assert parse_attack(long, think=True, max_chars=100_000, finish_reason="stop").failure is None
    cut = parse_attack("<think>p</think><prompt>x</prompt>", think=True, max_chars=LIMIT, finish_reason="length")
    assert cut.failure is Failure.OVER_LENGTH and cut.fallback == "x"  # what it would have shown
    cut = parse_response("half an ans", think=False, max_chars=LIMIT, finish_reason="length")
    assert cut.failure is Failure.OVER_LENGTH and cut.fallback == "half an ans"
    guarded = parse_response("y" * (LIMIT + 1), think=False, max_chars=LIMIT, finish_reason="stop")
    assert guarded.failure is Failure.OVER_LENGTH and guarded.fallback is None
