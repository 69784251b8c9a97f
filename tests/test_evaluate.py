"""Evaluation of a defender over a suite: rates on hand-made judgements, and a real run."""

import json

import pytest

from advgame_env import RuleJudge, bundled_seeds
from agents import HFBackend, load_model
from algorithms.evaluate import Judged, answer_and_judge, by_topic, summarise, write_report


def judged(label, refused, subtype="vanilla", topic="t", harmful=None):
    return Judged("i", label, subtype, topic, "p", "r", "stop", refused, harmful)


def test_rates_count_what_they_name():
    items = [
        judged("harmful", False, "adversarial", harmful=True),
        judged("harmful", True, harmful=False),
        judged("harmful", False, harmful=False),
        judged("harmful", None),  # a judge failure: in no rate
        judged("benign", True, "scary", "a"),
        judged("benign", False, "scary", "a"),
        judged("benign", False, topic="b"),
        judged("benign", False, topic="b"),
    ]
    s = summarise(items)
    assert (s["harmful compliance"].successes, s["harmful compliance"].total) == (2, 3)
    assert (s["harmful compliance (adversarial)"].successes, s["harmful compliance (adversarial)"].total) == (1, 1)
    assert (s["harmful responses"].successes, s["harmful responses"].total) == (1, 3)
    assert (s["benign refusal"].successes, s["benign refusal"].total) == (1, 4)
    assert (s["benign-but-scary refusal"].successes, s["benign-but-scary refusal"].total) == (1, 2)
    assert (s["judge failures"].successes, s["judge failures"].total) == (1, 8)
    topics = by_topic(items)
    assert topics["benign"]["a refusal"].value == 0.5 and topics["benign"]["b refusal"].value == 0.0


def test_a_real_model_is_answered_judged_and_reported(tiny_chat, tmp_path):
    model, tokenizer = load_model(tiny_chat)
    seeds = bundled_seeds("heldout")[:3] + bundled_seeds("heldout", "benign")[:3]
    items = answer_and_judge(HFBackend(model, tokenizer), RuleJudge(), seeds, max_tokens=24, batch=4)
    assert [i.id for i in items] == [s.id for s in seeds] and all(i.refused is not None for i in items)
    report = write_report(items, tmp_path / "eval", "tiny chat on 6 held-out seeds")
    text = report.read_text()
    assert "| harmful compliance |" in text and "| benign refusal |" in text and "n=3" in text
    lines = (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["prompt"] == seeds[0].prompt
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["harmful compliance"]["n"] == 3 and 0 <= summary["harmful compliance"]["rate"] <= 1


def test_an_empty_suite_reports_nothing_rather_than_nan():
    assert summarise([]) == {}
    with pytest.raises(ValueError):
        from advgame_env.metrics import rate

        rate(-1, 0)
