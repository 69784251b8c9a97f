import pytest

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
