"""Several replicas of an OpenAI-compatible server behind one backend (agents.replicas): dispatch,
failover, cool-downs, the judge's failure path and the config.

The servers of the fast tests are test doubles of known answers and faults: real HTTP servers on
loopback (``tests/fake_openai.py``) that echo the question, answer HTTP 500, stall past the
deadline, hold requests until a batch has arrived, or a port where nothing listens. The slow test
runs a real ``vllm serve`` of the bundled model beside a dead URL.
"""

from __future__ import annotations

import copy
import threading

import pytest

from advgame_env import Game, JudgeError, LLMJudge, Phase, Round, RuleJudge
from agents import OpenAIBackend, ReplicatedBackend, build_backend
from agents.openai_backend import BackendError
from agents.replicas import split_urls
from tests.fake_openai import completion, fake_server, free_port
from tests.test_game import COMPLY, DEFLECT, FAITHFUL_H, HARMFUL, REFUSE

CHATS = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
ANSWERS = [f"re: question {i}" for i in range(6)]


def echo(n, path, body, stopping):
    """A healthy replica: answers each question with a known text."""
    return 200, completion("re: " + body["messages"][-1]["content"])


def broken(n, path, body, stopping):
    return 500, {"error": {"message": "replica broken"}}


def stalled(n, path, body, stopping):
    stopping.wait(30.0)  # past any deadline of these tests; wakes when the test ends
    return 200, completion("too late")


def refused_request(n, path, body, stopping):
    return 400, {"error": {"message": "This model's maximum context length is 2048 tokens"}}


def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused


class Clock:
    """The cool-downs' time, moved by the test (no sleeping, no timing in the assertions)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replicated(urls, model="m", **kw) -> ReplicatedBackend:
    options = {"max_retries": 0, "backoff": 0.01, "timeout": 5.0, "deadline": 10.0, **kw}
    return ReplicatedBackend(urls, model, **options)


def texts(generations) -> list[str]:
    return [g.text for g in generations]


# ---------------------------------------------------------------------------------------------
# dispatch


def test_a_batch_spreads_evenly_over_live_replicas_by_requests_in_flight():
    """Each replica holds its requests until the whole batch of 8 has arrived, so every dispatch
    happens while nothing has finished: least-loaded by in-flight count gives 4 and 4 (a
    dispatcher that sent everything to one replica would stall at its 4 connections)."""
    arrived, everyone = [0], threading.Condition()

    def held(n, path, body, stopping):
        with everyone:
            arrived[0] += 1
            everyone.notify_all()
            everyone.wait_for(lambda: arrived[0] >= 8 or stopping.is_set(), timeout=10.0)
        return echo(n, path, body, stopping)

    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(8)]
    with (
        fake_server(held, max_requests=8) as (a, server_a),
        fake_server(held, max_requests=8) as (b, server_b),
        replicated([a, b], concurrency=4) as backend,
    ):
        out = backend.generate(chats, max_tokens=4, seed=10)
        sent = [r.sent for r in backend.replicas()]
    assert texts(out) == [f"re: question {i}" for i in range(8)]
    assert len(server_a.requests) == len(server_b.requests) == 4 and sent == [4, 4]
    # seeds as one OpenAIBackend call sends them: seed + the chat's place in the batch
    seeds = {body["messages"][0]["content"]: body["seed"] for _, body in server_a.requests + server_b.requests}
    assert seeds == {f"question {i}": 10 + i for i in range(8)}


def test_one_chat_at_a_time_still_takes_the_replicas_in_turn():
    with fake_server(echo) as (a, server_a), fake_server(echo) as (b, server_b), replicated([a, b]) as backend:
        for chat, answer in zip(CHATS[:4], ANSWERS[:4], strict=True):
            assert texts(backend.generate([chat], max_tokens=4)) == [answer]
    assert len(server_a.requests) == len(server_b.requests) == 2


# ---------------------------------------------------------------------------------------------
# failover


def test_dead_replicas_fail_over_and_the_batch_completes_in_order():
    down = nowhere()
    with (
        fake_server(broken) as (bad, server_bad),
        fake_server(echo, max_requests=20) as (good, server_good),
        replicated([down, bad, good]) as backend,
    ):
        assert texts(backend.generate(CHATS, max_tokens=4)) == ANSWERS
        state = backend.replicas()
        assert [r.dead_until is not None for r in state] == [True, True, False]
        assert "ConnectError" in state[0].last_error and "HTTP 500: replica broken" in state[1].last_error
        assert len(server_good.requests) == 6 and len(server_bad.requests) >= 1  # each chat answered once
        tried_bad = len(server_bad.requests)
        # within the cool-down the dead replicas get nothing
        assert texts(backend.generate(CHATS, max_tokens=4)) == ANSWERS
        assert len(server_bad.requests) == tried_bad and len(server_good.requests) == 12


def test_a_replica_that_stalls_past_its_deadline_fails_over():
    with (
        fake_server(stalled) as (slow, server_slow),
        fake_server(echo) as (good, _),
        replicated([slow, good], deadline=0.5) as backend,
    ):
        assert texts(backend.generate(CHATS[:1], max_tokens=4)) == ANSWERS[:1]
        slow_state = backend.replicas()[0]
    assert len(server_slow.requests) == 1  # the chat went there first (its turn), then on
    assert slow_state.dead_until is not None and "deadline" in slow_state.last_error


def test_a_request_the_server_refuses_is_not_failed_over_and_kills_no_replica():
    """A 4xx that is the request's fault (too long, bad field) would be refused by every replica;
    failing over would only take healthy replicas out of service."""
    with (
        fake_server(refused_request) as (a, _),
        fake_server(echo) as (b, server_b),
        replicated([a, b]) as backend,
        pytest.raises(BackendError, match=r"HTTP 400.*maximum context length"),
    ):
        backend.generate(CHATS[:1], max_tokens=4)
        assert all(r.dead_until is None for r in backend.replicas()) and server_b.requests == []
        # refused before anything is sent: text that is not Unicode, an empty chat, bad sampling
        with pytest.raises(BackendError, match="not valid Unicode"):
            backend.generate([*CHATS[:2], [{"role": "user", "content": "bad \ud800"}]], max_tokens=4)
        with pytest.raises(ValueError, match="at least one message"):
            backend.generate([[]], max_tokens=4)
        with pytest.raises(ValueError):
            backend.generate(CHATS, max_tokens=0)
    assert server_b.requests == []


def test_every_replica_dead_is_a_backend_error_naming_each_one():
    down = nowhere()
    with (
        fake_server(broken) as (bad, server_bad),
        fake_server(stalled) as (slow, _),
        replicated([down, bad, slow], deadline=0.5, clock=Clock()) as backend,
    ):
        with pytest.raises(BackendError, match=r"no replica answered \(tried 3 of 3") as caught:
            backend.generate(CHATS[:1], max_tokens=4)
        message = str(caught.value)
        for url, error in ((down, "ConnectError"), (bad, "HTTP 500"), (slow, "deadline")):
            assert f"{url.removesuffix('/v1')}: failed: " in message and error in message
        assert caught.value.server_fault and caught.value.status is None
        # every replica in its cool-down: with nowhere else to go, a call made again (the trainer's
        # judge.retries) tries them anyway rather than failing unsent
        with pytest.raises(BackendError, match=r"no replica answered \(tried 3 of 3"):
            backend.generate(CHATS[:1], max_tokens=4)
        assert len(server_bad.requests) == 2


def test_dead_replicas_are_tried_as_a_last_resort_and_an_answer_revives_them():
    clock, healthy = Clock(), threading.Event()

    def flaky(n, path, body, stopping):
        return echo(n, path, body, stopping) if healthy.is_set() else broken(n, path, body, stopping)

    with (
        fake_server(flaky, max_requests=20) as (a, _),
        fake_server(broken, max_requests=20) as (b, server_b),
        replicated([a, b], clock=clock) as backend,
    ):
        with pytest.raises(BackendError, match="tried 2 of 2"):
            backend.generate(CHATS[:1], max_tokens=4)
        healthy.set()  # a is back, both still in their cool-down: the next call finds it anyway
        assert texts(backend.generate(CHATS[:1], max_tokens=4)) == ANSWERS[:1]
        assert backend.replicas()[0].dead_until is None and backend.replicas()[1].dead_until is not None
        assert len(server_b.requests) == 1  # a went first (same cool-down end, listed first) and answered
        assert texts(backend.generate(CHATS, max_tokens=4)) == ANSWERS and len(server_b.requests) == 1


def test_the_retry_budget_bounds_the_replicas_one_request_tries():
    with (
        fake_server(broken) as (a, sa),
        fake_server(broken) as (b, sb),
        fake_server(broken) as (c, sc),
        replicated([a, b, c], max_tries=2) as backend,
        pytest.raises(BackendError, match=r"tried 2 of 3, max_tries=2.*live, not tried") as caught,
    ):
        backend.generate(CHATS[:1], max_tokens=4)
    assert [len(s.requests) for s in (sa, sb, sc)] == [1, 1, 0]
    assert f"{c}: live, not tried" in str(caught.value)


def test_a_dead_replica_is_probed_after_its_cooldown_and_used_again():
    clock, healthy = Clock(), threading.Event()

    def flaky(n, path, body, stopping):
        return echo(n, path, body, stopping) if healthy.is_set() else broken(n, path, body, stopping)

    with (
        fake_server(flaky, max_requests=20) as (a, server_a),
        fake_server(echo, max_requests=20) as (b, _),
        replicated([a, b], cooldown=30.0, clock=clock) as backend,
    ):
        assert texts(backend.generate(CHATS[:1], max_tokens=4)) == ANSWERS[:1]  # a failed, b answered
        assert len(server_a.requests) == 1 and backend.replicas()[0].dead_until == clock.now + 30.0
        healthy.set()
        clock.now += 29.0  # still cooling down: a is left alone
        assert texts(backend.generate(CHATS, max_tokens=4)) == ANSWERS and len(server_a.requests) == 1
        clock.now += 1.0  # cool-down over: the next request probes a, which answers, and it is live again
        assert texts(backend.generate(CHATS[:2], max_tokens=4)) == ANSWERS[:2]
        assert len(server_a.requests) >= 2 and backend.replicas()[0].dead_until is None
        before = len(server_a.requests)
        assert texts(backend.generate(CHATS, max_tokens=4)) == ANSWERS
        assert len(server_a.requests) > before
        # a probe that fails starts a new cool-down (two chats: one of them goes to a)
        healthy.clear()
        clock.now += 100.0
        assert texts(backend.generate(CHATS[:2], max_tokens=4)) == ANSWERS[:2]
        assert backend.replicas()[0].dead_until == clock.now + 30.0


def test_after_its_cooldown_a_replica_takes_one_probe_at_a_time():
    """The probe is held until the other replica has answered the rest of the batch: a replica
    fresh out of its cool-down gets one request, not a share of the batch."""
    clock, probe_may_answer = Clock(), threading.Event()

    def recovering(n, path, body, stopping):
        if n == 1:
            return broken(n, path, body, stopping)
        probe_may_answer.wait(10.0)
        return echo(n, path, body, stopping)

    def healthy(n, path, body, stopping):
        if n == 6:  # 1 chat of the first call + 5 of the batch
            probe_may_answer.set()
        return echo(n, path, body, stopping)

    with (
        fake_server(recovering, max_requests=20) as (a, server_a),
        fake_server(healthy, max_requests=20) as (b, server_b),
        replicated([a, b], cooldown=30.0, clock=clock) as backend,
    ):
        assert texts(backend.generate(CHATS[:1], max_tokens=4)) == ANSWERS[:1]  # a failed: dead
        clock.now += 30.0
        assert texts(backend.generate(CHATS, max_tokens=4)) == ANSWERS
        assert (len(server_a.requests), len(server_b.requests)) == (2, 6)
        assert backend.replicas()[0].dead_until is None  # the probe answered: live again


def test_scoring_fails_over_too():
    def vllm_like(n, path, body, stopping):
        if path == "/tokenize":
            return 200, {"tokens": [1, 2, 3] if "messages" in body else [40, 41]}
        entries = [None] + [{str(t): {"logprob": -t / 100}} for t in body["prompt"][1:]]
        return 200, {"choices": [{"text": "", "prompt_logprobs": entries}]}

    with fake_server(vllm_like) as (good, _), replicated([nowhere(), good]) as backend:
        assert backend.score(CHATS[:2], ["A pear.", ""]) == [pytest.approx(-0.81), 0.0]
        with pytest.raises(ValueError, match="2 chats but 1"):
            backend.score(CHATS[:2], ["x"])


# ---------------------------------------------------------------------------------------------
# through a real judge: a dead judge is a JudgeError, never a verdict


def test_a_judge_whose_replicas_are_all_dead_fails_its_call_and_the_round_is_unchanged():
    def judge_like(n, path, body, stopping):
        return 200, completion("<score_A>8</score_A><score_B>3</score_B>")

    clock = Clock()
    with fake_server(broken) as (bad, _), fake_server(judge_like, max_requests=20) as (later, _):
        game_round = Round(HARMFUL)
        Game(RuleJudge()).attack([game_round], [(FAITHFUL_H, FAITHFUL_H)])
        answers = [((REFUSE, DEFLECT), (COMPLY, REFUSE))]
        before = copy.deepcopy(game_round)
        with (
            replicated([nowhere(), bad], clock=clock) as dead,
            pytest.raises(JudgeError, match=r"defender judge failed.*no replica answered"),
        ):
            Game(LLMJudge(dead)).respond([game_round], answers)
        assert game_round == before and game_round.phase is Phase.RESPOND  # no score, no reward
        # the same round, judged once a replica answers: the judge's own verdicts, (8, 3) each
        with replicated([nowhere(), later]) as alive:
            Game(LLMJudge(alive)).respond([game_round], answers)
        assert game_round.phase is Phase.DONE
        assert [[r.score for r in row] for row in game_round.responses] == [[8.0, 3.0], [8.0, 3.0]]


# ---------------------------------------------------------------------------------------------
# building it: build_backend, the run config, the command line


def test_build_backend_serves_several_urls_as_replicas_and_one_as_before():
    one = build_backend("openai", "m", "http://127.0.0.1:9/v1")
    assert isinstance(one, OpenAIBackend)
    one.close()
    urls = "http://127.0.0.1:9/v1, http://127.0.0.1:10/v1"
    for given in (urls, split_urls(urls)):
        many = build_backend("openai", "m", given, deadline=5.0, cooldown=2.0)
        assert isinstance(many, ReplicatedBackend) and many.cooldown == 2.0
        assert many.urls == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
        many.close()
    for bad, says in (
        ("", "needs the server's URL"),
        ("http://a/v1,ftp://b", "http://"),
        ("http://a,http://a/v1", "twice"),
    ):
        with pytest.raises(ValueError, match=says):
            build_backend("openai", "m", bad)
    for bad_options in ({"cooldown": -1.0}, {"max_tries": 0}, {"deadline": 0.0}):
        with pytest.raises(ValueError, match=r"cooldown >= 0|deadline > 0"):
            ReplicatedBackend(["http://127.0.0.1:9", "http://127.0.0.1:10"], "m", **bad_options)


def test_the_run_config_takes_judge_urls_and_builds_a_replicated_judge():
    from algorithms.config import load_config
    from algorithms.training.run_setup import build_judge

    llm = ["judge.kind=llm", "judge.backend=openai"]
    cfg = load_config(None, [*llm, "judge.urls=[http://127.0.0.1:9/v1, http://127.0.0.1:10/v1]"])
    assert cfg.judge.endpoints == ("http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1")
    judge = build_judge(cfg)
    assert isinstance(judge, LLMJudge) and isinstance(judge.backend, ReplicatedBackend)
    assert judge.backend.cooldown == cfg.judge.replica_cooldown == 30.0
    judge.backend.close()
    single = load_config(None, [*llm, "judge.url=http://127.0.0.1:9/v1"])  # backward compatible
    assert single.judge.endpoints == ("http://127.0.0.1:9/v1",)
    judge = build_judge(single)
    assert isinstance(judge, LLMJudge) and isinstance(judge.backend, OpenAIBackend)
    judge.backend.close()


@pytest.mark.parametrize(
    "overrides, says",
    [
        (
            ["judge.url=http://a/v1", "judge.urls=[http://b/v1]"],
            r"judge\.urls: set judge\.url .* or judge\.urls .*not both",
        ),
        (["judge.urls=[]"], r"judge\.urls: an empty list"),
        (["judge.urls=[http://a/v1, http://a]"], r"judge\.urls: 'http://a' is listed twice"),
        (["judge.urls=[a.example:8000]"], r"judge\.urls: 'a\.example:8000' must start with http://"),
        (["judge.urls=http://a/v1"], r"judge\.urls: expected a list"),
        (["judge.urls=[1, 2]"], r"judge\.urls\[0\]: expected str"),
        (["judge.backend=hf", "judge.urls=[http://a/v1, http://b/v1]"], r"judge replicas need .*judge\.backend openai"),
        (["judge.urls=[http://a/v1, http://b/v1]", "judge.replica_cooldown=-1"], r"replica_cooldown.*>= 0"),
        ([], r"judge\.backend openai needs judge\.url .* or judge\.urls"),
    ],
)
def test_bad_judge_urls_are_config_errors_that_say_what_to_do(overrides, says):
    from algorithms.config import ConfigError, load_config

    base = ["judge.kind=llm", "judge.backend=openai"]
    with pytest.raises(ConfigError, match=says):
        load_config(None, [*base, *overrides])


def test_the_command_line_takes_several_judge_urls_joined_by_commas():
    from algorithms.cli.main import JudgeOptions, UsageError

    options = JudgeOptions(judge="m", judge_backend="openai", judge_url="http://127.0.0.1:9/v1,http://127.0.0.1:10/v1")
    options.check()
    judge = options.build()
    assert isinstance(judge, LLMJudge) and isinstance(judge.backend, ReplicatedBackend)
    judge.backend.close()
    with pytest.raises(UsageError, match=r"--judge-url: .*listed twice"):
        JudgeOptions(judge="m", judge_backend="openai", judge_url="http://a/v1,http://a").build()


# ---------------------------------------------------------------------------------------------
# slow: a real `vllm serve` of the bundled model (the vllm_server fixture, conftest.py) beside a dead URL


@pytest.mark.slow
def test_a_served_model_answers_through_the_replicas_as_it_does_alone(vllm_server):
    chats = [
        [{"role": "user", "content": q}] for q in ("Name a colour.", "Say hi.", "Count to three.", "Name a fruit.")
    ]
    with OpenAIBackend(vllm_server, "smollm2", timeout=120) as alone:
        expected = alone.generate(chats, max_tokens=12, temperature=0)
        expected_scores = alone.score(chats[:2], [g.text for g in expected[:2]])
    with replicated([nowhere(), vllm_server], "smollm2", timeout=120, deadline=300) as backend:
        got = backend.generate(chats, max_tokens=12, temperature=0)
        assert [g.token_ids for g in got] == [g.token_ids for g in expected] and texts(got) == texts(expected)
        assert backend.score(chats[:2], [g.text for g in expected[:2]]) == pytest.approx(expected_scores, abs=1e-3)
        dead, live = backend.replicas()
    assert dead.dead_until is not None and "ConnectError" in dead.last_error and live.dead_until is None
