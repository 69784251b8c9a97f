"""Backend of the generation protocol for OpenAI-compatible HTTP servers.

Works against ``vllm serve``, the llama.cpp server, OpenAI itself and others, with the
following split between what every server offers and what needs vLLM:

* ``generate`` posts one ``/v1/chat/completions`` request per chat (``concurrency`` at a time,
  results in input order), asking for per-token log-probs (``logprobs: true``) and, from vLLM,
  the generated token ids (``return_token_ids``). A server that rejects either with a 4xx
  naming the field is asked once more without it, and the backend remembers; the
  ``Generation`` then has empty ``logprobs``/``token_ids``. Log-probs are the server's own:
  vLLM reports them under the model's distribution before temperature, like the HF backend.
* A chat whose last message is the assistant's is continued (a prefill) through vLLM's
  ``continue_final_message: true, add_generation_prompt: false`` extension; other servers may
  ignore these fields (and then answer in a new turn) or reject them (a :class:`BackendError`).
* vLLM counts the end-of-turn token among the generated ones; it is dropped here, so
  ``token_ids``/``logprobs`` cover the returned text exactly, as in the HF backend.
* ``seed`` is sent as ``seed + i`` for the ``i``-th chat: a batch is reproducible while
  repeated chats in it still get different samples (one torch seed per batch in the HF backend).
* ``score`` needs vLLM's extensions (``/tokenize`` and ``prompt_logprobs``); elsewhere it
  raises ``NotImplementedError``. With ``use_completions_for_score=True`` (the default) the
  chat is rendered by the server's chat template (``/tokenize`` with ``messages``), the
  continuation is tokenised on its own (``/tokenize`` with ``prompt``, no special tokens,
  like the HF backend) and ``/v1/completions`` returns the log-prob of every prompt token of
  the concatenated ids. With ``False`` the continuation is sent as the assistant's message
  through ``/v1/chat/completions`` (``continue_final_message``), so it is tokenised together
  with the template as in a real conversation (and, like every prefill, right-stripped by the
  template machinery); it raises :class:`BackendError` when that changes the prompt's tokens.

Transport failures (connection refused, timeouts, dropped connections, a body cut short or
with a bad ``Content-Encoding``), HTTP 5xx and 429, and a 200 whose body is not a JSON object
are retried ``max_retries`` times with exponential back-off (``backoff * 2**k`` seconds, at
most ``max_backoff``, longer when a 429 says ``Retry-After``); other 4xx fail at once. Every
request has a total ``deadline`` (seconds, all its attempts and back-off sleeps included; the
per-read ``timeout`` alone lets a server that trickles bytes hold a call for ever): past it, or
when the next sleep would end past it, the request gives up. All of these end in
:class:`BackendError` naming the URL and the server's message.

Answers are checked, never taken on trust: exactly one choice; ``content`` a string, or null
(an empty answer); ``token_ids`` non-negative ints; ``logprobs`` numbers, finite (Python's JSON
parser would accept ``NaN`` and ``-Infinity``; here they are refused), one per token id. A
malformed answer is a :class:`BackendError`. ``finish_reason`` is ``"stop"``, ``"length"`` or
``"content_filter"`` (the server's filter withheld the answer; kept apart from a stop, since an
empty filtered answer is not the model's). A request holding text that is not valid Unicode (a
lone surrogate) is a :class:`BackendError` before anything is sent; an answer holding one (JSON
may escape ``"\\ud800"``) has it replaced by U+FFFD, so every text it returns can be written.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NoReturn, TypeVar

import httpx

from agents.hf import Chat, Generation, check_sampling

T = TypeVar("T")
R = TypeVar("R")

SCORING_NEEDS = "scoring needs a vLLM-compatible server with /tokenize and prompt_logprobs"
_LENGTH_REASONS = {"length", "max_tokens", "model_length"}
_FAILED_REASONS = {"abort", "error"}
CONTENT_FILTER = "content_filter"


class BackendError(RuntimeError):
    """A request to the server failed: after the retries, or at once for a refusal (4xx).

    ``status`` is the last HTTP status (``None`` when no response came back), ``server_message``
    the server's own error text. ``server_fault`` is True when the server, not the request, is at
    fault (transport failures, 5xx/429 and bad bodies after the retries, the deadline, a malformed
    or aborted answer): another replica may answer the same request (``agents.replicas``).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        server_message: str = "",
        server_fault: bool = False,
    ) -> None:
        super().__init__(message)
        self.url, self.status, self.server_message = url, status, server_message
        self.server_fault = server_fault


def _server_message(content: bytes, headers: httpx.Headers) -> str:
    """The error text of an OpenAI-style (``{"error": {"message"}}``), FastAPI or plain body."""
    try:
        body = _json(content)
    except ValueError:
        return content.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: the exponential back-off applies


def _messages(chat: Chat) -> list[dict[str, str]]:
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in chat]
    if not messages:
        raise ValueError("a chat needs at least one message")
    return messages


def _template_flags(messages: Sequence[dict[str, str]]) -> dict[str, bool]:
    """vLLM's chat-template switches: continue a final assistant message, else open a reply."""
    prefill = messages[-1]["role"] == "assistant"
    return {"add_generation_prompt": not prefill, "continue_final_message": prefill}


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name} in the answer")


def _json(content: bytes) -> object:
    """The JSON of a body; ``NaN``/``Infinity`` (which Python's parser would take) are refused,
    and so is nesting too deep for the parser (a ``ValueError`` like any other bad body)."""
    try:
        return json.loads(content, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _valid_unicode(text: str) -> str:
    """Lone surrogates replaced by U+FFFD (as ``advgame_env.parsing.valid_unicode``; agents
    imports nothing of advgame_env): a surrogate in an answer would crash whoever writes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sum_prompt_logprobs(entries: object, ids: Sequence[int], start: int, url: str) -> float:
    """Sum of vLLM's ``prompt_logprobs`` (one ``{token_id: {"logprob": ...}}`` per position) from ``start``."""
    if not isinstance(entries, list) or len(entries) != len(ids):
        raise NotImplementedError(f"{SCORING_NEEDS}: the server returned no per-position prompt log-probs")
    total = 0.0
    for position in range(start, len(ids)):
        entry = entries[position] or {}
        found = entry.get(str(ids[position])) if isinstance(entry, dict) else None
        if not isinstance(found, dict) or "logprob" not in found:
            raise NotImplementedError(f"{SCORING_NEEDS}: no log-prob for prompt token {ids[position]} at {position}")
        value = found["logprob"]
        if not _is_number(value) or not math.isfinite(value):
            raise BackendError(
                f"{url} answered a malformed or non-finite log-prob {value!r} for prompt token {position}",
                url=url,
                server_fault=True,
            )
        total += float(value)
    return total


class _DeadlineExceeded(Exception):
    pass


def ordered_map(pool: ThreadPoolExecutor, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``function`` over ``items`` on ``pool``, results in order; the first failure (in order) is
    raised and requests not yet started are cancelled."""
    futures: list[Future[R]] = [pool.submit(function, item) for item in items]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()


class OpenAIBackend:
    """Generation and scoring through an OpenAI-compatible server (see the module docstring).

    ``base_url`` is the server's root (``http://127.0.0.1:8000``); a trailing ``/v1`` is accepted
    and dropped, since vLLM's ``/tokenize`` lives beside ``/v1``, not under it. The API key is
    ``api_key``, else ``$OPENAI_API_KEY``, else ``"EMPTY"`` (what a keyless vLLM accepts).
    Use it as a context manager, or call :meth:`close`, to release connections and threads.
    """

    max_backoff = 8.0  # seconds: the cap of one back-off sleep

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        deadline: float = 600.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        use_completions_for_score: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not (timeout > 0 and deadline > 0) or max_retries < 0 or backoff < 0 or concurrency < 1:
            raise ValueError(
                f"need timeout > 0, deadline > 0, max_retries >= 0, backoff >= 0 and concurrency >= 1; got "
                f"{timeout=}, {deadline=}, {max_retries=}, {backoff=}, {concurrency=}"
            )
        root = base_url.rstrip("/")
        self.base_url = root.removesuffix("/v1")
        self.model = model
        self.max_retries, self.backoff = max_retries, backoff
        self.timeout, self.deadline = timeout, deadline
        self.use_completions_for_score = use_completions_for_score
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-backend")
        # optional request fields, switched off for good once the server refuses them
        self._ask_logprobs = True
        self._ask_token_ids = True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _post(self, path: str, body: Mapping[str, object]) -> dict[str, object]:
        """POST JSON and return the JSON answer, retrying transient failures with back-off,
        within the request's deadline."""
        url = self.base_url + path
        try:
            payload = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (UnicodeEncodeError, ValueError) as error:
            raise BackendError(
                f"POST {url} not sent: the request holds text that is not valid Unicode, or a non-finite number ({error})",
                url=url,
            ) from None
        deadline = time.monotonic() + self.deadline
        attempts = self.max_retries + 1
        last_error, last_status, last_message = "", None, ""
        wait_hint: float | None = None
        tried = 0
        for attempt in range(attempts):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                if wait_hint is not None:
                    delay = max(delay, min(wait_hint, self.max_backoff))
                if time.monotonic() + delay >= deadline:
                    last_error += f" (a retry after {delay:g} s would end past the {self.deadline:g} s deadline)"
                    break
                time.sleep(delay)
            wait_hint = None
            tried += 1
            try:
                status, headers, content = self._send(path, payload, deadline)
            except _DeadlineExceeded:
                raise BackendError(
                    f"POST {url} got no complete answer within its {self.deadline:g} s deadline "
                    f"(attempt {tried}; last error before it: {last_error or 'none'})",
                    url=url,
                    status=last_status,
                    server_message=last_message,
                    server_fault=True,
                ) from None
            except httpx.HTTPError as error:  # refused, timed out, dropped, cut short, undecodable
                last_error, last_status, last_message = f"{type(error).__name__}: {error}", None, str(error)
                continue
            if status == 429 or status >= 500:
                last_status, last_message = status, _server_message(content, headers)
                last_error = f"HTTP {status}: {last_message}"
                wait_hint = _retry_after(headers) if status == 429 else None
                continue
            if status >= 400:
                message = _server_message(content, headers)
                raise BackendError(
                    f"POST {url} was refused with HTTP {status}: {message}",
                    url=url,
                    status=status,
                    server_message=message,
                )
            try:
                answer = _json(content)
            except ValueError as error:  # garbage, cut-off JSON, bad UTF-8, NaN
                last_status, last_message = status, str(error)
                last_error = f"HTTP {status} with a body that is not valid JSON ({error}): {content[:200]!r}"
                continue
            if not isinstance(answer, dict):
                last_status, last_message = status, ""
                last_error = f"HTTP {status} with a JSON {type(answer).__name__}, not an object"
                continue
            return answer
        raise BackendError(
            f"POST {url} failed after {tried} attempt{'s' * (tried > 1)}; last error: {last_error}",
            url=url,
            status=last_status,
            server_message=last_message,
            server_fault=True,
        )

    def _send(self, path: str, payload: bytes, deadline: float) -> tuple[int, httpx.Headers, bytes]:
        """One attempt: (status, headers, the decoded body), read in chunks so that a body
        trickled in byte by byte still ends at the deadline (each read waits at most the
        time left)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _DeadlineExceeded
        timeout = httpx.Timeout(min(self.timeout, left))
        headers = {"Content-Type": "application/json"}
        try:
            with self._client.stream("POST", path, content=payload, headers=headers, timeout=timeout) as response:
                chunks = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() >= deadline:
                        raise _DeadlineExceeded
                return response.status_code, response.headers, b"".join(chunks)
        except httpx.TimeoutException:
            if time.monotonic() >= deadline - 0.01:
                raise _DeadlineExceeded from None
            raise

    def _map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return ordered_map(self._pool, function, items)

    # ------------------------------------------------------------------ generation protocol

    def generate(
        self,
        chats: Sequence[Chat],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[Generation]:
        check_sampling(max_tokens, temperature, top_p)
        requests, contents = [], []
        for i, chat in enumerate(chats):
            messages = _messages(chat)
            contents += [m["content"] for m in messages]
            body: dict[str, object] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "top_p": top_p,
            }
            if seed is not None:
                body["seed"] = seed + i
            if messages[-1]["role"] == "assistant":
                body.update(_template_flags(messages))
            requests.append(body)
        self._check_unicode(contents, "/v1/chat/completions")
        return self._map(self._generate_one, requests)

    def _check_unicode(self, texts: Iterable[str], path: str) -> None:
        """Every text of a call is sendable (UTF-8), checked before the call's first request."""
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                url = self.base_url + path
                raise BackendError(
                    f"POST {url} not sent: the request holds text that is not valid Unicode "
                    f"({error.reason} at {error.start}: {text[max(0, error.start - 20) : error.start + 1]!r})",
                    url=url,
                ) from None

    def _generate_one(self, body: Mapping[str, object]) -> Generation:
        while True:
            request = dict(body)
            if self._ask_logprobs:
                request.update(logprobs=True, top_logprobs=0)
            if self._ask_token_ids:
                request["return_token_ids"] = True
            try:
                answer = self._post("/v1/chat/completions", request)
            except BackendError as error:
                if not self._drop_refused_field(error):
                    raise
                continue
            return self._parse_generation(answer)

    def _drop_refused_field(self, error: BackendError) -> bool:
        """After a 4xx naming an optional field, stop asking for it; whether to ask again."""
        if error.status is None or not 400 <= error.status < 500:
            return False
        message = error.server_message.lower()
        if self._ask_token_ids and "return_token_ids" in message:
            self._ask_token_ids = False
            return True
        if self._ask_logprobs and "logprobs" in message:
            self._ask_logprobs = False
            return True
        return False

    def _parse_generation(self, answer: Mapping[str, object]) -> Generation:
        url = self.base_url + "/v1/chat/completions"

        def malformed(what: str) -> BackendError:
            return BackendError(f"{url} answered with {what}: {str(answer)[:300]}", url=url, server_fault=True)

        choices = answer.get("choices")
        if not isinstance(choices, list):
            raise malformed("no list of choices")
        if len(choices) != 1:
            raise malformed(f"{len(choices)} choices, not 1")
        choice = choices[0]
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            raise malformed("a choice without a message")
        content = choice["message"].get("content")
        if content is not None and not isinstance(content, str):
            raise malformed(f"non-string content ({type(content).__name__})")
        text = _valid_unicode(content or "")  # null content: an empty answer (what it means is the caller's call)
        reason = choice.get("finish_reason")
        if reason in _FAILED_REASONS:
            raise BackendError(f"{url} ended the generation with finish_reason={reason!r}", url=url, server_fault=True)
        finish_reason = (
            "length" if reason in _LENGTH_REASONS else CONTENT_FILTER if reason == CONTENT_FILTER else "stop"
        )
        raw_ids = choice.get("token_ids")
        if raw_ids is None:
            raw_ids = []
        if not isinstance(raw_ids, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in raw_ids
        ):
            raise malformed("malformed token_ids")
        token_ids = list(raw_ids)
        raw_logprobs = choice.get("logprobs")
        entries = [] if raw_logprobs is None else raw_logprobs.get("content") if isinstance(raw_logprobs, dict) else "?"
        if entries is None:
            entries = []
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and _is_number(e.get("logprob")) for e in entries
        ):
            raise malformed("malformed logprobs")
        logprobs = [float(e["logprob"]) for e in entries]
        if not all(math.isfinite(v) for v in logprobs):
            raise malformed("non-finite logprobs")
        if token_ids and logprobs and len(token_ids) != len(logprobs):
            raise malformed(f"{len(token_ids)} token ids but {len(logprobs)} log-probs")
        # vLLM (recognised by its ``stop_reason`` field) includes the end-of-turn token that
        # stopped generation; a stop *string* (``stop_reason`` a str) is cut from tokens already.
        stop_token_id = None
        if finish_reason == "stop" and "stop_reason" in choice and not isinstance(choice["stop_reason"], str):
            stop_token_id = token_ids[-1] if token_ids else None  # what a trainer appends (batches.continuation)
            token_ids, logprobs = token_ids[:-1], logprobs[:-1]
        return Generation(
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish_reason,
            stop_token_id=stop_token_id,
        )

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        if len(chats) != len(continuations):
            raise ValueError(f"{len(chats)} chats but {len(continuations)} continuations")
        pairs = [(_messages(c), str(t)) for c, t in zip(chats, continuations, strict=True)]
        self._check_unicode(
            [m["content"] for messages, text in pairs for m in messages] + [t for _, t in pairs], "/tokenize"
        )
        one = self._score_completions if self.use_completions_for_score else self._score_chat
        return self._map(one, pairs)

    def _scoring_post(self, path: str, body: Mapping[str, object]) -> dict[str, object]:
        try:
            return self._post(path, body)
        except BackendError as error:
            # an unknown route is 404/405 (501 on some servers); an unknown model is a 404 naming it
            if error.status in (404, 405, 501) and "model" not in error.server_message.lower():
                raise NotImplementedError(f"{SCORING_NEEDS} ({error})") from error
            raise

    def _tokenize(self, body: Mapping[str, object]) -> list[int]:
        answer = self._scoring_post("/tokenize", {"model": self.model, **body})
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise NotImplementedError(f"{SCORING_NEEDS}: /tokenize answered without token ids")
        return tokens

    def _score_completions(self, pair: tuple[list[dict[str, str]], str]) -> float:
        messages, continuation = pair
        prompt = self._tokenize({"messages": messages, **_template_flags(messages)})
        if not continuation:
            return 0.0
        tail = self._tokenize({"prompt": continuation, "add_special_tokens": False})
        ids = prompt + tail
        answer = self._scoring_post(
            "/v1/completions",
            {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0},
        )
        choices = answer.get("choices")
        first = choices[0] if isinstance(choices, list) and len(choices) == 1 else None
        if not isinstance(first, dict):
            url = self.base_url + "/v1/completions"
            raise BackendError(f"{url} answered with no single choice: {str(answer)[:300]}", url=url, server_fault=True)
        return _sum_prompt_logprobs(first.get("prompt_logprobs"), ids, len(prompt), self.base_url + "/v1/completions")

    def _score_chat(self, pair: tuple[list[dict[str, str]], str]) -> float:
        messages, continuation = pair
        prompt = self._tokenize({"messages": messages, **_template_flags(messages)})
        if not continuation:
            return 0.0
        if messages[-1]["role"] == "assistant":
            last = messages[-1]
            full = [*messages[:-1], {"role": "assistant", "content": last["content"] + continuation}]
        else:
            full = [*messages, {"role": "assistant", "content": continuation}]
        answer = self._scoring_post(
            "/v1/chat/completions",
            {
                "model": self.model,
                "messages": full,
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": 0,
                "return_token_ids": True,
                **_template_flags(full),
            },
        )
        ids = answer.get("prompt_token_ids")
        if not isinstance(ids, list):
            raise NotImplementedError(f"{SCORING_NEEDS}: the chat completion returned no prompt token ids")
        if ids[: len(prompt)] != prompt or len(ids) == len(prompt):
            raise BackendError(
                "rendered together with the chat, the continuation changed the prompt's tokens "
                "(or vanished); score with use_completions_for_score=True",
                url=self.base_url + "/v1/chat/completions",
            )
        return _sum_prompt_logprobs(
            answer.get("prompt_logprobs"), ids, len(prompt), self.base_url + "/v1/chat/completions"
        )
