"""The OpenAI-compatible HTTP backend: retries, errors and faults against a fake server on
loopback (``tests/fake_openai.py``: a real HTTP server serving scripted faults; fast), and
generation and scoring against a real ``vllm serve`` (slow)."""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Iterator

import pytest

from agents import Generation, OpenAIBackend
from agents.openai_backend import BackendError
from tests.fake_openai import Raw, completion, fake_server, free_port
from tests.helpers import assert_same_generations

CHAT = [{"role": "user", "content": "Name a fruit."}]

# ---------------------------------------------------------------------------------------------
# fast tests


def test_a_server_that_is_down_fails_after_bounded_retries_with_exponential_back_off(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the back-off the backend asked for, not waited
    backend = OpenAIBackend(url, "m", max_retries=2, backoff=0.01, timeout=2)
    with backend, pytest.raises(BackendError, match="after 3 attempts") as caught:
        backend.generate([CHAT], max_tokens=4)
    assert url + "/v1/chat/completions" in str(caught.value) and "ConnectError" in str(caught.value)
    assert caught.value.status is None and "deadline" not in str(caught.value)  # the retries ended it
    assert slept == [0.01, 0.02]  # two retries, the second waiting twice as long


def test_a_slow_server_times_out_then_fails():
    def slow(n, path, body, stopping):
        stopping.wait(3.0)  # longer than the client's timeout, bounded
        return 200, completion("late")

    with fake_server(slow, max_requests=4) as (url, server):
        backend = OpenAIBackend(url, "m", timeout=0.3, max_retries=1, backoff=0.01)
        # a ReadTimeout on both attempts: the client cut each one off at its own timeout (had it
        # waited for the server, the late answer would have been returned)
        with backend, pytest.raises(BackendError, match=r"after 2 attempts.*ReadTimeout"):
            backend.generate([CHAT], max_tokens=4)
        assert len(server.requests) == 2


def test_a_server_error_is_retried_and_the_second_answer_used():
    def flaky(n, path, body, stopping):
        return (500, {"error": {"message": "boom"}}) if n == 1 else (200, completion("A pear.", token_ids=[7, 8, 9]))

    with fake_server(flaky) as (url, server), OpenAIBackend(url + "/v1/", "m", max_retries=2, backoff=0.01) as backend:
        (g,) = backend.generate([CHAT], max_tokens=4, temperature=0)
    # the end-of-turn token vLLM reports is dropped: ids and log-probs cover the text only, and
    # the token it stopped on is kept apart, for the trainer to append
    assert g == Generation("A pear.", [7, 8, 9], [-0.5] * 3, "stop", stop_token_id=2)
    assert [path for path, _ in server.requests] == ["/v1/chat/completions"] * 2
    body = server.requests[0][1]
    assert body["logprobs"] is True and body["top_logprobs"] == 0 and body["temperature"] == 0
    assert "continue_final_message" not in body and "seed" not in body


def test_rate_limits_are_retried_but_other_refusals_are_not():
    def limited(n, path, body, stopping):
        return (429, {"error": {"message": "slow down"}}) if n == 1 else (200, completion("ok", finish="length"))

    with fake_server(limited) as (url, server), OpenAIBackend(url, "m", backoff=0.01) as backend:
        (g,) = backend.generate([CHAT], max_tokens=1)
        assert g.finish_reason == "length" and g.token_ids == [] and len(server.requests) == 2

    def refusing(n, path, body, stopping):
        return 400, {"error": {"message": "max_tokens is too large", "code": 400}}

    with fake_server(refusing) as (url, server), OpenAIBackend(url, "m", backoff=0.01) as backend:
        with pytest.raises(BackendError, match="HTTP 400: max_tokens is too large") as caught:
            backend.generate([CHAT], max_tokens=4)
        assert caught.value.status == 400 and len(server.requests) == 1


def test_a_server_without_logprobs_is_asked_once_more_and_remembered():
    def plain(n, path, body, stopping):
        if "logprobs" in body:
            return 400, {"error": {"message": "logprobs are not supported"}}
        if "return_token_ids" in body:
            return 400, {"error": {"message": "Unrecognized request argument supplied: return_token_ids"}}
        return 200, {"choices": [{"message": {"content": "Plum."}, "finish_reason": "stop"}]}

    with fake_server(plain) as (url, server), OpenAIBackend(url, "m") as backend:
        first = backend.generate([CHAT], max_tokens=4)
        assert len(server.requests) == 3
        again = backend.generate([CHAT], max_tokens=4)
        assert len(server.requests) == 4
    assert first == again == [Generation("Plum.", [], [], "stop")]


def test_batches_keep_their_order_and_prefills_and_seeds_are_sent():
    def echo(n, path, body, stopping):
        content = body["messages"][-1]["content"]
        stopping.wait(0.02 * (len(content) % 4))  # answers arrive out of order
        return 200, completion(content.upper())

    chats = [[{"role": "user", "content": f"chat {i}" + "!" * i}] for i in range(6)]
    prefill = [*CHAT, {"role": "assistant", "content": "My answer is"}]
    with fake_server(echo) as (url, server), OpenAIBackend(url, "m", concurrency=3) as backend:
        out = backend.generate([*chats, prefill], max_tokens=4, seed=10)
    assert [g.text for g in out] == [c[0]["content"].upper() for c in chats] + ["MY ANSWER IS"]
    bodies = {b["messages"][-1]["content"]: b for _, b in server.requests}
    assert sorted(b["seed"] for b in bodies.values()) == list(range(10, 17))
    assert bodies["My answer is"]["continue_final_message"] is True
    assert bodies["My answer is"]["add_generation_prompt"] is False


def test_bad_input_fails_before_any_request():
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}", "m", max_retries=0)
    assert backend.generate([], max_tokens=4) == [] and backend.score([], []) == []
    for bad in ({"max_tokens": 0}, {"max_tokens": 4, "temperature": -1}, {"max_tokens": 4, "top_p": 0}):
        with pytest.raises(ValueError):  # a request would raise BackendError instead
            backend.generate([CHAT], **bad)
    with pytest.raises(ValueError, match="at least one message"):
        backend.generate([[]], max_tokens=4)
    with pytest.raises(ValueError, match="2 chats but 1 continuations"):
        backend.score([CHAT, CHAT], ["x"])
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("127.0.0.1:8000", "m")
    backend.close()


def test_scoring_needs_vllm_endpoints():
    def openai_like(n, path, body, stopping):
        return 404, {"detail": "Not Found"}

    with fake_server(openai_like) as (url, server), OpenAIBackend(url, "m") as backend:
        with pytest.raises(NotImplementedError, match="/tokenize and prompt_logprobs"):
            backend.score([CHAT], ["A pear."])
        assert [path for path, _ in server.requests] == ["/tokenize"]


def test_scoring_sums_the_continuations_prompt_logprobs():
    def vllm_like(n, path, body, stopping):
        if path == "/tokenize":
            return 200, {"tokens": [1, 2, 3] if "messages" in body else [40, 41]}
        ids = body["prompt"]
        entries = [None] + [{str(t): {"logprob": -t / 100, "rank": 1}} for t in ids[1:]]
        return 200, {"choices": [{"text": "", "prompt_logprobs": entries}]}

    with fake_server(vllm_like) as (url, server), OpenAIBackend(url, "m") as backend:
        assert backend.score([CHAT, CHAT], ["A pear.", ""]) == [pytest.approx(-0.81), 0.0]
    completions = [b for path, b in server.requests if path == "/v1/completions"]
    assert completions == [
        {"model": "m", "prompt": [1, 2, 3, 40, 41], "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
    ]


# ---------------------------------------------------------------------------------------------
# faults: each one a fake server serves, and the backend's defined outcome for it


def quick(url: str, **kw) -> OpenAIBackend:
    return OpenAIBackend(url, "m", **{"backoff": 0.01, "max_retries": 1, "deadline": 10.0, **kw})


def always(answer):
    return lambda n, path, body, stopping: answer


def test_a_trickling_server_is_cut_off_at_the_deadline():
    body = json.dumps(completion("x" * 200)).encode()
    with fake_server(always(Raw(body, trickle=0.2)), max_requests=4) as (url, server):
        # every byte comes well within the read timeout: only the total deadline ends the call
        backend = quick(url, timeout=5, deadline=1.0, max_retries=3)
        with backend, pytest.raises(BackendError, match="deadline") as caught:
            backend.generate([CHAT], max_tokens=4)
    assert caught.value.url == url + "/v1/chat/completions" and url in str(caught.value)
    assert len(server.requests) == 1  # no retry starts after the deadline


def test_a_retry_after_past_the_deadline_gives_up_at_once():
    limited = (429, {"error": {"message": "slow down"}})

    def reply(n, path, body, stopping):
        return Raw(json.dumps(limited[1]).encode(), status=429, headers={"Retry-After": "30"})

    with (
        fake_server(reply) as (url, server),
        quick(url, deadline=2.0, max_retries=5) as backend,
        pytest.raises(BackendError, match=r"HTTP 429: slow down") as caught,
    ):
        backend.generate([CHAT], max_tokens=4)
    assert caught.value.status == 429 and len(server.requests) == 1


def test_a_retry_after_within_the_deadline_is_waited_for_and_the_answer_used():
    def reply(n, path, body, stopping):
        if n == 1:
            return Raw(b'{"error": {"message": "busy"}}', status=429, headers={"Retry-After": "0"})
        return 200, completion("Fig.")

    with fake_server(reply) as (url, server), quick(url) as backend:
        assert backend.generate([CHAT], max_tokens=4)[0].text == "Fig." and len(server.requests) == 2


def test_server_errors_every_time_end_in_a_backend_error_after_the_retries():
    with (
        fake_server(always((503, {"error": {"message": "overloaded"}}))) as (url, server),
        quick(url) as backend,
        pytest.raises(BackendError, match=r"after 2 attempts; last error: HTTP 503: overloaded") as caught,
    ):
        backend.generate([CHAT], max_tokens=4)
    assert caught.value.status == 503 and len(server.requests) == 2


@pytest.mark.parametrize(
    "answer, says",
    [
        (Raw(b"<html>Bad gateway</html>"), "not valid JSON"),
        (Raw(b'{"choices": [{"message": {"content": "cut'), "not valid JSON"),  # complete, but cut JSON
        (Raw(b'{"choices": []}', declared_length=400), "RemoteProtocolError"),  # the connection drops mid-body
        (Raw(b"\xff\xfe not utf-8"), "not valid JSON"),
        (
            Raw(b"not gzip at all", headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}),
            "DecodingError",
        ),
        (Raw(b"[1, 2]"), "JSON list, not an object"),
        (Raw(b"[" * 100_000), "nested too deeply"),
    ],
)
def test_garbage_and_cut_short_answers_are_backend_errors(answer, says):
    with (
        fake_server(always(answer)) as (url, server),
        quick(url) as backend,
        pytest.raises(BackendError, match=says) as caught,
    ):
        backend.generate([CHAT], max_tokens=4)
    assert url in str(caught.value) and len(server.requests) == 2  # retried once: it may be a hiccup


def test_a_gzipped_answer_is_read():
    body = gzip.compress(json.dumps(completion("Kiwi.")).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with fake_server(always(Raw(body, headers=headers))) as (url, _), quick(url) as backend:
        assert backend.generate([CHAT], max_tokens=4)[0].text == "Kiwi."


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_log_probs_are_backend_errors_never_values(value):
    with fake_server(always((200, completion("Pear.", token_ids=[5], logprob=value)))) as (url, _), quick(url) as b:
        with pytest.raises(BackendError, match="non-finite") as caught:
            b.generate([CHAT], max_tokens=4)
        assert url in str(caught.value)

    def vllm_like(n, path, body, stopping):
        if path == "/tokenize":
            return 200, {"tokens": [1, 2] if "messages" in body else [40]}
        return 200, {
            "choices": [{"text": "", "prompt_logprobs": [None, {"2": {"logprob": -1}}, {"40": {"logprob": value}}]}]
        }

    with (
        fake_server(vllm_like, max_requests=20) as (url, _),
        quick(url) as backend,
        pytest.raises(BackendError, match="non-finite"),
    ):
        backend.score([CHAT], ["A pear."])


def test_an_overflowing_log_prob_is_refused_too():
    # "1e999" is valid JSON that Python reads as inf, past the NaN/Infinity literal check
    body = json.dumps(completion("Pear.", token_ids=[5], logprob=-0.5)).replace("-0.5", "-1e999").encode()
    with (
        fake_server(always(Raw(body))) as (url, _),
        quick(url) as backend,
        pytest.raises(BackendError, match="non-finite logprobs"),
    ):
        backend.generate([CHAT], max_tokens=4)


def test_null_and_filtered_content_are_empty_answers_and_the_filter_is_kept():
    def reply(n, path, body, stopping):
        content = body["messages"][-1]["content"]
        if content == "filtered":
            return 200, completion(None, finish="content_filter")
        return 200, completion(None)

    chats = [[{"role": "user", "content": "filtered"}], CHAT]
    with fake_server(reply) as (url, _), quick(url) as backend:
        filtered, null = backend.generate(chats, max_tokens=4)
    assert (filtered.text, filtered.finish_reason) == ("", "content_filter")
    assert (null.text, null.finish_reason) == ("", "stop")


@pytest.mark.parametrize(
    "change, says",
    [
        (lambda c: c.update(choices=[]), "0 choices"),
        (lambda c: c.update(choices=c["choices"] * 2), "2 choices"),
        (lambda c: c.update(choices="all of them"), "choices"),
        (lambda c: c["choices"][0]["message"].update(content=42), "non-string content"),
        (lambda c: c["choices"][0]["message"].update(content=[{"type": "text", "text": "hi"}]), "non-string content"),
        (lambda c: c["choices"][0].update(message="hi"), "without a message"),
        (lambda c: c["choices"][0].update(logprobs={"content": "lots"}), "malformed logprobs"),
        (lambda c: c["choices"][0].update(logprobs={"content": [{"token": "t"}] * 3}), "malformed logprobs"),
        (lambda c: c["choices"][0].update(logprobs={"content": [{"logprob": "-0.5"}] * 3}), "malformed logprobs"),
        (lambda c: c["choices"][0].update(logprobs={"content": [{"logprob": True}] * 3}), "malformed logprobs"),
        (lambda c: c["choices"][0].update(token_ids=["7", "8", "2"]), "malformed token_ids"),
        (lambda c: c["choices"][0].update(token_ids=[7, -8, 2]), "malformed token_ids"),
        (lambda c: c["choices"][0].update(token_ids=7), "malformed token_ids"),
        (lambda c: c["choices"][0].update(token_ids=[7, 2]), "2 token ids but 3 log-probs"),
    ],
)
def test_malformed_answers_are_backend_errors_never_accepted(change, says):
    answer = completion("Plum.", token_ids=[7, 8])
    change(answer)
    with (
        fake_server(always((200, answer))) as (url, _),
        quick(url) as backend,
        pytest.raises(BackendError, match=says) as caught,
    ):
        backend.generate([CHAT], max_tokens=4)
    assert caught.value.url == url + "/v1/chat/completions"


def test_a_lone_surrogate_in_the_request_is_a_backend_error_before_anything_is_sent():
    with fake_server(always((200, completion("x")))) as (url, server), quick(url) as backend:
        with pytest.raises(BackendError, match="not valid Unicode") as caught:
            backend.generate([[{"role": "user", "content": "half a pair: \ud800"}]], max_tokens=4)
        assert url in str(caught.value) and server.requests == []
        with pytest.raises(BackendError, match="not valid Unicode"):
            backend.score([CHAT], ["\udfff"])
        assert server.requests == []


def test_the_deadline_must_be_positive():
    with pytest.raises(ValueError, match="deadline"):
        OpenAIBackend("http://127.0.0.1:1", "m", deadline=0)


# ---------------------------------------------------------------------------------------------
# slow tests: a real `vllm serve` of the bundled model on loopback (the vllm_server fixture, conftest.py)


@pytest.fixture
def served(vllm_server: str) -> Iterator[OpenAIBackend]:
    with OpenAIBackend(vllm_server, "smollm2", timeout=120, concurrency=4) as backend:
        yield backend


@pytest.mark.slow
def test_served_greedy_generation_returns_text_and_logprobs(served):
    (g,) = served.generate([CHAT], max_tokens=16, temperature=0)
    assert g.text.strip() and g.finish_reason in ("stop", "length")
    assert len(g.logprobs) == len(g.token_ids) > 0 and all(lp <= 0 for lp in g.logprobs)
    assert_same_generations(served.generate([CHAT], max_tokens=16, temperature=0), [g])


@pytest.mark.slow
def test_served_batches_run_concurrently_in_order(served):
    chats = [
        [{"role": "user", "content": q}] for q in ("Name a colour.", "Say hi.", "Count to three.", "Name a fruit.")
    ]
    batch = served.generate(chats, max_tokens=12, temperature=0)
    alone = [served.generate([c], max_tokens=12, temperature=0)[0] for c in chats]
    assert [g.token_ids for g in batch] == [g.token_ids for g in alone]
    sampled = served.generate(chats, max_tokens=8, temperature=1.0, seed=3)
    again = served.generate(chats, max_tokens=8, temperature=1.0, seed=3)
    assert_same_generations(again, sampled)


@pytest.mark.slow
def test_served_score_matches_the_generation_logprobs(served, vllm_server):
    chats = [CHAT, [{"role": "user", "content": "Say something kind."}]]
    generations = served.generate(chats, max_tokens=16, temperature=0)
    expected = [sum(g.logprobs) for g in generations]
    scores = served.score(chats, [g.text for g in generations])
    # measured: identical to the last digit in float32 (|difference| 0.0); 1e-3 leaves room for
    # other builds and dtypes
    assert scores == pytest.approx(expected, abs=1e-3)
    with OpenAIBackend(vllm_server, "smollm2", use_completions_for_score=False) as by_chat:
        assert by_chat.score(chats, [g.text for g in generations]) == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_served_assistant_prefill_is_continued(served):
    prefill = [*CHAT, {"role": "assistant", "content": "My favourite fruit is"}]
    (g,) = served.generate([prefill], max_tokens=12, temperature=0)
    assert g.text and not g.text.startswith("My favourite") and len(g.logprobs) == len(g.token_ids) > 0
    (score,) = served.score([prefill], [g.text])
    assert score == pytest.approx(sum(g.logprobs), abs=1e-3)


@pytest.mark.slow
def test_served_errors_are_clear(served, vllm_server, monkeypatch):
    calls = []
    monkeypatch.setattr(served._client, "post", lambda *a, **k: calls.append(a))
    for bad in ({"max_tokens": 0}, {"max_tokens": 4, "temperature": -0.5}, {"max_tokens": 4, "top_p": 1.5}):
        with pytest.raises(ValueError):
            served.generate([CHAT], **bad)
    assert calls == []
    monkeypatch.undo()
    with OpenAIBackend(vllm_server, "no-such-model") as wrong:
        with pytest.raises(BackendError, match=r"HTTP 404.*does not exist"):
            wrong.generate([CHAT], max_tokens=4)
        with pytest.raises(BackendError, match="HTTP 404"):
            wrong.score([CHAT], ["x"])
