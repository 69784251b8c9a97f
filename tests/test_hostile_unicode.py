"""Text that is not valid Unicode, from any backend: made valid where it enters (the OpenAI
backend's answers, the players' parsed texts, the judge's cleaned texts), and written with a
defined replacement (U+FFFD) wherever it is stored or reported -- red-team reports, judge
prompts, metrics.jsonl. Fuzzed with hypothesis over every kind of lone surrogate, and over
bytes that are not UTF-8 (which the backend refuses as a fault, never passes on)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advgame_env import (
    ClassifyItem,
    FaithfulnessItem,
    Game,
    GameConfig,
    Label,
    LLMJudge,
    PairItem,
    PointItem,
    Round,
    Rubric,
    RuleJudge,
    bundled_seeds,
)
from advgame_env.parsing import valid_unicode
from agents import OpenAIBackend
from agents.policy import Policy
from agents.testing import ScriptedBackend
from algorithms.evaluation.redteam import Record, RedTeamConfig, Results, plan, play_batch, redteam, write_report
from algorithms.training.metrics import game_metrics
from algorithms.training.runlog import RunLog, read_metrics
from tests.fake_openai import Raw, completion, fake_server

HARMFUL = bundled_seeds("heldout", "harmful")
COMPLY = "Sure, here is how you do it: first, gather what you need."

# Every kind of text Python holds but UTF-8 cannot encode: lone high and low surrogates, a pair
# in the wrong order, a high one at the very end, runs of them; mixed with ordinary text.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
invalid_text = st.lists(
    st.one_of(surrogates, st.text(max_size=6), st.just("\udc00\ud800"), st.just("<score>"), st.just("&#xD800;")),
    min_size=1,
    max_size=12,
).map("".join)


def strict_utf8(path: Path) -> str:
    """A file's text, read as strict UTF-8 (what any other reader of it will do)."""
    return path.read_bytes().decode("utf-8")


def no_surrogate(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def red_team(answers: dict[str, object], folder: Path) -> list[Record]:
    """Plays the harmful seeds' plain rewrites against a loopback target answering ``answers``
    (seed prompt -> answer), and writes the report."""
    seeds = [s for s in HARMFUL if s.prompt in answers]
    attacks = [f"<think>Ask it plainly.</think><prompt>{s.prompt}</prompt>" for s in seeds]

    def reply(n, path, body, stopping):
        answer = answers[body["messages"][-1]["content"]]
        return answer if isinstance(answer, Raw) else (200, completion(answer))

    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(retries=0, backoff=0.01)
    items = [i for i in plan(seeds, cfg) if not i.direct and i.sample == 0]
    with fake_server(reply, max_requests=50) as (url, _), OpenAIBackend(url, "m", max_retries=0) as target:
        records = play_batch(game, target, items, attacks, cfg)
    results = Results(folder / "results.jsonl")
    results.append(records)
    write_report(records, folder, "hostile unicode")
    return records


def test_a_target_answer_with_a_lone_surrogate_is_reported_with_a_replacement_character(tmp_path):
    # the reproduction: 'ok \ud800 ...' crashed report.md with UnicodeEncodeError, left it empty
    (record,) = red_team({HARMFUL[0].prompt: COMPLY + " ok \ud800 \u2026"}, tmp_path)
    assert record.response == COMPLY + " ok \ufffd \u2026" and record.success is True
    report = strict_utf8(tmp_path / "report.md")
    assert "ok \ufffd \u2026" in report
    stored = json.loads(strict_utf8(tmp_path / "results.jsonl"))
    assert stored["response"] == record.response  # stored valid, not as a "\ud800" escape


def test_a_results_file_holding_surrogates_from_before_still_reports(tmp_path):
    # every rerun crashed the same way: records written before the fix hold "\ud800" escapes
    record = Record(
        seed_id="s", sample=0, direct=False, label="harmful", category="c", seed="seed \udfff",
        rewrite="rewrite \ud800", valid=True, faithful=True, failure=None, response="ok \ud800 \u2026",
        finish_reason="stop", refused=False, harmful_response=None, success=True, error=None, attempts=1,
    )  # fmt: skip
    (tmp_path / "results.jsonl").write_text(json.dumps(record.__dict__) + "\n")
    loaded = list(Results(tmp_path / "results.jsonl").records.values())
    assert loaded[0].response == "ok \ufffd \u2026" and loaded[0].rewrite == "rewrite \ufffd"
    write_report([record], tmp_path, "from before")  # the records as they were, too
    assert "ok \ufffd \u2026" in strict_utf8(tmp_path / "report.md")


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(answers=st.lists(invalid_text, min_size=3, max_size=3), bad_bytes=st.binary(min_size=1, max_size=4))
def test_any_invalid_unicode_from_the_target_ends_in_a_written_report(tmp_path_factory, answers, bad_bytes):
    folder = tmp_path_factory.mktemp("red")
    # a fourth answer is not UTF-8 at all (bytes 0xFF never are): a backend fault, an error record
    body = b'{"choices": [{"message": {"content": "x' + b"\xff" + bad_bytes + b'"}, "finish_reason": "stop"}]}'
    script: dict[str, object] = {s.prompt: a for s, a in zip(HARMFUL[:3], answers, strict=True)}
    script[HARMFUL[3].prompt] = Raw(body)
    records = red_team(script, folder)
    for record in records[:3]:
        assert record.error is None and record.response is not None and no_surrogate(record.response)
    assert records[3].error is not None and records[3].success is None  # refused, never scored
    report, summary = strict_utf8(folder / "report.md"), json.loads(strict_utf8(folder / "summary.json"))
    assert summary["items"] == 4 and no_surrogate(report)
    stored = [json.loads(line) for line in strict_utf8(folder / "results.jsonl").splitlines()]
    assert len(stored) == 4 and all(no_surrogate(json.dumps(r, ensure_ascii=False)) for r in stored)


def sent(backend: ScriptedBackend) -> list[str]:
    """Every text a judge backend was sent: its generate chats, its scored chats and continuations."""
    scored = [m["content"] for chats, continuations in backend.scored for chat in chats for m in chat]
    return (
        [m["content"] for chat in backend.chats for m in chat]
        + scored
        + [c for _, continuations in backend.scored for c in continuations]
    )


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(a=invalid_text, b=invalid_text, mode=st.sampled_from(["generative", "logprob"]))
def test_judge_prompts_are_valid_unicode_whatever_the_text_under_judgement(a, b, mode):
    backend = ScriptedBackend("no verdict here", scores=0.0)  # keeps what it is sent, gives no verdict
    judge = LLMJudge(backend, mode=mode)
    judge.compare([PairItem(Rubric.COMPLIANCE, a, a, b)])
    judge.score([PointItem(Rubric.REFUSAL, b, a)])
    judge.faithfulness([FaithfulnessItem(a, Label.HARMFUL, b)])
    judge.classify([ClassifyItem(a, b, a, Label.BENIGN)])
    assert sent(backend) and all(no_surrogate(p) for p in sent(backend))
    for prompt in sent(backend):
        prompt.encode("utf-8")  # what every backend must do to send it


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    attack=invalid_text,
    answers=st.tuples(invalid_text, invalid_text),
    rule=st.sampled_from(["advgame", "self_redteam"]),
)
def test_rounds_played_on_invalid_unicode_log_valid_metrics(tmp_path_factory, attack, answers, rule):
    seed = HARMFUL[0]
    game, round_ = Game(RuleJudge(), GameConfig(num_attacks=1, reward_rule=rule)), Round(seed)
    game.attack([round_], [(f"<think>{attack}</think><prompt>{seed.prompt} {attack}</prompt>",)])
    shown = game.defender_observation(round_)
    assert all(no_surrogate(text) for text in shown)  # the defender is shown valid text
    game.respond([round_], [(answers,)])
    assert all(s.public is None or no_surrogate(s.public) for s in [*round_.attacks, *round_.responses[0]])
    folder = tmp_path_factory.mktemp("run")
    log = RunLog(folder, start_step=0, total_steps=1, tensorboard=False, wandb_project=None, progress=False, config={})
    log.log(1, game_metrics([round_]))
    log.close()
    strict_utf8(folder / "metrics.jsonl")
    assert read_metrics(folder)[0]["step"] == 1


def test_valid_unicode_keeps_valid_text_and_joins_split_pairs():
    assert valid_unicode("plain \U0001f600") == "plain \U0001f600"
    assert valid_unicode("\ud83d\ude00") == "\U0001f600"  # a pair split over two code units
    assert valid_unicode("\ude00\ud83d") == "\ufffd\ufffd"  # the wrong order: two lone halves


def test_the_openai_backend_returns_answers_holding_lone_surrogates_as_valid_text():
    answer = completion("half \ud800 \udfff pair")
    with fake_server(lambda n, path, body, stopping: (200, answer)) as (url, _), OpenAIBackend(url, "m") as backend:
        (g,) = backend.generate([[{"role": "user", "content": "hi"}]], max_tokens=4)
    assert g.text == "half \ufffd \ufffd pair"


def PlainRewriter() -> ScriptedBackend:
    """A test double of an attacker backend: rewrites each seed as itself (valid and faithful)."""
    seeds = {s.prompt for s in HARMFUL}
    return ScriptedBackend(
        lambda chat: f"<think>Plain.</think><prompt>{next(p for p in seeds if p in chat[-1]['content'])}</prompt>"
    )


def test_a_red_team_run_against_a_surrogate_answering_target_reports_and_resumes(tmp_path):
    # the reproduction end to end: the run, its report, then a rerun over the same folder
    reply = (200, completion(COMPLY + " ok \ud800 \u2026"))
    game, cfg = Game(RuleJudge(), GameConfig(num_attacks=1)), RedTeamConfig(samples=1, batch_size=2, retries=0)
    attacker = Policy(PlainRewriter())
    server = fake_server(lambda n, path, body, stopping: reply, max_requests=50)
    with server as (url, _), OpenAIBackend(url, "m", max_retries=0) as target:
        first = redteam(attacker, target, game, HARMFUL[:2], tmp_path, cfg, log=lambda _: None)
        write_report(first, tmp_path, "run")
        again = redteam(attacker, target, game, HARMFUL[:2], tmp_path, cfg, log=lambda _: None)
        write_report(again, tmp_path, "rerun")
    assert len(first) == len(again) == 4 and again == first  # nothing replayed, nothing lost
    assert all(r.error is None and r.response == COMPLY + " ok \ufffd \u2026" for r in again)
    report = strict_utf8(tmp_path / "report.md")
    assert report.startswith("# rerun") and "ok \ufffd \u2026" in report
