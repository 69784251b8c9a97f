"""Instruction following: the bundled IFEval-format suite, its scoring by IFEval's checkers, a real run."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("if_verifiable", reason="the `utility` extra (if-verifiable) is not installed")

from advgame_env import (
    InstructionPrompt,
    SeedFormatError,
    bundled_instruction_prompts,
    bundled_seeds,
    load_instruction_prompts,
)
from advgame_env.metrics import rate
from agents import HFBackend, load_model
from agents.policy import Policy
from agents.testing import ScriptedBackend
from algorithms.evaluation.utility import (
    NEEDS_PUNKT,
    FollowedItem,
    check_prompts,
    instruction_following,
    score_response,
    score_responses,
    summarise,
)

ROOT = Path(__file__).resolve().parent.parent
MIN_PER_TYPE = 14  # each type is the main instruction of 14 prompts (scripts/make_instruction_suite.py)

# (instruction id, its arguments, a hand-made answer that follows it, one that does not)
CASES = [
    (
        "keywords:existence",
        {"keywords": ["water", "sunlight"]},
        "Give it water and plenty of sunlight.",
        "Give it water.",
    ),
    (
        "keywords:frequency",
        {"keyword": "pot", "frequency": 3, "relation": "at least"},
        "A pot, a bigger pot, a clay pot.",
        "One pot is enough.",
    ),
    (
        "keywords:frequency",
        {"keyword": "pot", "frequency": 2, "relation": "less than"},
        "Use one pot.",
        "A pot and a pot.",
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["water", "sun"]},
        "Keep the soil moist and warm.",
        "Water it every day.",
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 3, "let_relation": "less than"},
        "A lazy day.",
        "Zany zebras zigzag.",
    ),
    (
        "keywords:letter_frequency",
        {"letter": "e", "let_frequency": 5, "let_relation": "at least"},
        "Three green trees here.",
        "A dog ran.",
    ),
    (
        "language:response_language",
        {"language": "fr"},
        "Le basilic aime beaucoup la lumière du soleil et un arrosage régulier, mais il ne supporte pas l'eau stagnante.",
        "Basil loves plenty of sunlight and regular watering, but it cannot stand water left in the pot.",
    ),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n***\nTwo.\n***\nThree.", "One.\n***\nTwo."),
    (
        "length_constraints:number_words",
        {"num_words": 10, "relation": "less than"},
        "A short answer here.",
        "This answer has far more than ten words in it, which is too many.",
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "Water the basil every morning.",
        "Water it.",
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"},
        "Basil likes sun.\n\nHowever, it hates the cold.",
        "Basil likes sun.\n\nIt hates the cold.",
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], see you on [date].",
        "Dear [name], see you soon.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "See you there.\nP.S. Bring snacks.",
        "See you there.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "See you.\nP.P.S. Bring a chair.",
        "See you.\nP.S. Bring a chair.",
    ),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* tent\n* boots\n* map", "* tent\n* boots"),
    ("detectable_format:constrained_response", {}, "My answer is no.", "No, I do not think so."),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "Use *fresh* beans and *hot* water.",
        "Use *fresh* beans.",
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Part", "num_sections": 2},
        "Part 1\nPrepare.\nPart 2\nBrew.",
        "Prepare, then brew.",
    ),
    ("detectable_format:json_format", {}, '```json\n{"tip": "water weekly"}\n```', "tip: water weekly"),
    ("detectable_format:title", {}, "<<Basil Basics>>\nWater it often.", "Basil Basics\nWater it often."),
    (
        "combination:two_responses",
        {},
        "Take the tram.\n******\nWalk by the river.",
        "Take the tram.\n******\nTake the tram.",
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Describe how bees make honey."},
        "Describe how bees make honey. Bees gather nectar.",
        "Bees gather nectar.",
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Hope this helps!"},
        "Water it weekly. Hope this helps!",
        "Hope this helps! Water it weekly.",
    ),
    ("startend:quotation", {}, '"Water it weekly."', "Water it weekly."),
    (
        "change_case:english_capital",
        {},
        "WATER THE BASIL EVERY MORNING AND KEEP IT ON A SUNNY WINDOWSILL.",
        "Water the basil every morning and keep it on a sunny windowsill.",
    ),
    (
        "change_case:english_lowercase",
        {},
        "water the basil every morning and keep it on a sunny windowsill.",
        "Water the basil every morning and keep it on a sunny windowsill.",
    ),
    ("punctuation:no_comma", {}, "Water it daily and keep it warm.", "Water it daily, and keep it warm."),
]


def one(instruction, kwargs, prompt="Tell me about basil."):
    return InstructionPrompt("k", prompt, (instruction,), (kwargs,))


@pytest.mark.parametrize(
    ("instruction", "kwargs", "good", "bad"), CASES, ids=[f"{c[0]}-{n}" for n, c in enumerate(CASES)]
)
def test_each_instruction_type_scores_a_following_and_a_breaking_answer(instruction, kwargs, good, bad):
    prompt = one(instruction, kwargs)
    check_prompts([prompt])
    followed, broken = score_response(prompt, good), score_response(prompt, bad)
    assert followed.strict == (True,) and followed.loose == (True,)
    assert broken.strict == (False,) and broken.loose == (False,)


def test_every_type_of_the_suite_has_hand_made_cases():
    suite_types = {i for p in bundled_instruction_prompts() for i in p.instruction_ids}
    assert suite_types == {c[0] for c in CASES}


def test_the_suite_loads_with_enough_prompts_of_every_type():
    prompts = bundled_instruction_prompts()
    assert len(prompts) >= 300
    assert len({p.key for p in prompts}) == len(prompts) and len({p.prompt for p in prompts}) == len(prompts)
    counts = Counter(i for p in prompts for i in p.instruction_ids)
    assert len(counts) == 23 and min(counts.values()) >= MIN_PER_TYPE, counts
    main = Counter(p.instruction_ids[0] for p in prompts)
    assert set(main.values()) == {MIN_PER_TYPE}  # stratified: every type is the main instruction equally often
    assert not set(NEEDS_PUNKT) & set(counts)  # checkers that would download NLTK data at run time
    assert all(len(set(p.instruction_ids)) == len(p.instruction_ids) for p in prompts)
    check_prompts(prompts)  # every id known to the checkers, every argument given


def test_the_suite_is_held_apart_from_the_seeds():
    seeds = {s.prompt.strip().lower() for s in bundled_seeds("all")}
    for p in bundled_instruction_prompts():
        text = p.prompt.strip().lower()
        assert text not in seeds and not any(seed in text for seed in seeds), p.key


def test_the_bundled_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "make_instruction_suite", ROOT / "scripts" / "make_instruction_suite.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0


def test_loose_scoring_forgives_a_first_line_and_markdown_but_strict_does_not():
    prompt = one("detectable_format:json_format", {})
    item = score_response(prompt, 'Here is the JSON you asked for:\n{"tip": "water weekly"}')
    assert item.strict == (False,) and item.loose == (True,)
    bold = score_response(one("startend:end_checker", {"end_phrase": "Enjoy!"}), "Water it. **Enjoy!**")
    assert bold.strict == (False,) and bold.loose == (True,)


def test_an_empty_or_all_thinking_answer_follows_nothing():
    prompt = InstructionPrompt(
        "k", "p", ("punctuation:no_comma", "keywords:forbidden_words"), ({}, {"forbidden_words": ["x"]})
    )
    for answer in ("", "   ", "<think>no commas here"):
        item = score_response(prompt, answer)
        assert item.strict == (False, False) and item.loose == (False, False)
    # a closed thinking block is removed before scoring: its comma does not count
    assert score_response(prompt, "<think>a, b</think>Fine then.").strict == (True, True)


def test_accuracies_follow_ifevals_definitions():
    ids = ("punctuation:no_comma", "startend:quotation")
    items = [
        FollowedItem("a", "p", "r", "stop", ids, (True, True), (True, True)),
        FollowedItem("b", "p", "r", "stop", ids, (True, False), (True, True)),
        FollowedItem("c", "p", "r", "stop", ids[:1], (False,), (False,)),
    ]
    result = summarise(items)
    assert result.prompt_strict == rate(1, 3) and result.prompt_loose == rate(2, 3)
    assert result.instruction_strict == rate(3, 5) and result.instruction_loose == rate(4, 5)
    assert result.by_instruction["punctuation:no_comma"] == {"strict": rate(2, 3), "loose": rate(2, 3)}
    assert result.by_instruction["startend:quotation"] == {"strict": rate(1, 2), "loose": rate(2, 2)}
    assert list(result.summary()) == [
        "instruction following (prompt, strict)",
        "instruction following (prompt, loose)",
        "instruction following (instruction, strict)",
        "instruction following (instruction, loose)",
    ]
    data = json.loads(json.dumps(result.as_dict()))
    assert data["prompt_loose"]["successes"] == 2 and data["items"][1]["loose"] == [True, True]


def test_scores_are_deterministic_for_language_detection():
    prompt = one("language:response_language", {"language": "es"})
    answers = ["Hola, el basilico necesita sol y agua.", "ok"] * 3
    runs = [score_responses([prompt] * len(answers), answers).items for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_bad_prompts_are_refused_before_scoring():
    with pytest.raises(ValueError, match="unknown instruction id"):
        check_prompts([one("keywords:telepathy", {})])
    # a missing argument would be drawn at random by the checker
    with pytest.raises(ValueError, match=r"takes arguments \['frequency', 'keyword', 'relation'\]"):
        check_prompts([one("keywords:frequency", {"keyword": "pot"})])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_responses([one("startend:quotation", {})] * 2, ["x"])


def test_ifeval_format_files_load_and_malformed_ones_name_the_line(tmp_path):
    good = tmp_path / "ifeval.jsonl"
    record = {
        "key": 7,
        "prompt": "Write a haiku about tea.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{"num_words": None}, {"num_words": 20, "relation": "less than", "keyword": None}],
    }
    good.write_text(json.dumps(record) + "\n\n")
    (prompt,) = load_instruction_prompts(good)
    assert prompt.key == "7" and prompt.kwargs == ({}, {"num_words": 20, "relation": "less than"})
    assert prompt.as_record()["instruction_id_list"] == record["instruction_id_list"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record) + "\n" + json.dumps({**record, "kwargs": [{}]}) + "\n")
    with pytest.raises(SeedFormatError, match=r"bad\.jsonl, line 2: field 'kwargs'"):
        load_instruction_prompts(bad)
    with pytest.raises(FileNotFoundError):
        load_instruction_prompts(tmp_path / "missing.jsonl")


def Scripted(answers):  # a backend that answers from a table: {prompt: answer}
    return ScriptedBackend(lambda chat: answers[chat[-1]["content"]])


def sampled(backend):
    """(chats, max_tokens, temperature) of each call."""
    return [(len(c.chats), c.max_tokens, c.temperature) for c in backend.calls]


def test_answers_are_generated_greedily_in_batches_from_a_backend_or_a_policy():
    prompts = [p for p in bundled_instruction_prompts() if p.instruction_ids == ("startend:quotation",)][:3]
    backend = Scripted({p.prompt: '"Done."' for p in prompts})
    result = instruction_following(backend, prompts, max_tokens=32, batch=2)
    assert sampled(backend) == [(2, 32, 0.0), (1, 32, 0.0)]
    assert result.prompt_strict == rate(3, 3) and [i.key for i in result.items] == [p.key for p in prompts]
    policy = Policy(backend, temperature=0.9, max_tokens=7)
    instruction_following(policy, prompts[:1], max_tokens=16)
    assert sampled(backend)[-1] == (1, 16, 0.0)


def test_prompts_can_come_from_a_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"]}) + "\n")
    result = instruction_following(Scripted({"Say hi.": "Hi there"}), path)
    assert result.instruction_strict == rate(1, 1) and result.items[0].key == "1"


def test_a_real_model_answers_a_handful_of_suite_prompts(tiny_chat):
    model, tokenizer = load_model(tiny_chat)
    prompts = bundled_instruction_prompts()[:6]
    result = instruction_following(HFBackend(model, tokenizer), prompts, max_tokens=24, batch=4)
    assert [i.key for i in result.items] == [p.key for p in prompts]
    assert all(i.finish_reason in ("stop", "length") and isinstance(i.response, str) for i in result.items)
    n_instructions = sum(len(p.instruction_ids) for p in prompts)
    assert result.prompt_strict.total == result.prompt_loose.total == 6
    assert result.instruction_strict.total == result.instruction_loose.total == n_instructions
    for r in (result.prompt_strict, result.prompt_loose, result.instruction_strict, result.instruction_loose):
        assert 0 <= r.low <= r.value <= r.high <= 1
    assert result.prompt_strict.successes <= result.prompt_loose.successes
    assert sum(r["strict"].total for r in result.by_instruction.values()) == n_instructions


def test_echoing_a_prompt_follows_only_the_instructions_that_name_their_answer():
    prompts = bundled_instruction_prompts()
    echo = score_responses(prompts, [p.prompt for p in prompts])
    # IFEval's loophole, kept: the yes/no phrases, the postscript marker and the keywords are in the prompt
    named = {"detectable_format:constrained_response", "detectable_content:postscript", "keywords:existence"}
    # counts and punctuation an echo can meet by chance
    chance = {
        "keywords:frequency",
        "keywords:letter_frequency",
        "length_constraints:number_words",
        "punctuation:no_comma",
    }
    followed = {name for name, rates in echo.by_instruction.items() if rates["loose"].successes}
    assert followed <= named | chance
    assert echo.prompt_strict.value < 0.2
