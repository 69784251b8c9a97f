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

Transport failures (connection refused, timeouts, dropped connections), HTTP 5xx and 429 are
retried ``max_retries`` times with exponential back-off (``backoff * 2**k`` seconds, at most
``max_backoff``, longer when a 429 says ``Retry-After``); other 4xx fail at once. Both end
in :class:`BackendError` naming the URL and the server's message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from agents.hf import Chat, Generation, check_sampling

T = TypeVar("T")
R = TypeVar("R")

SCORING_NEEDS = "scoring needs a vLLM-compatible server with /tokenize and prompt_logprobs"
_LENGTH_REASONS = {"length", "max_tokens", "model_length"}
_FAILED_REASONS = {"abort", "error"}


class BackendError(RuntimeError):
    """A request to the server failed: after the retries, or at once for a refusal (4xx).

    ``status`` is the last HTTP status (``None`` when no response came back), ``server_message``
    the server's own error text.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None, server_message: str = "") -> None:
        super().__init__(message)
        self.url, self.status, self.server_message = url, status, server_message


def _server_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style (``{"error": {"message"}}``), FastAPI or plain body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
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


def _sum_prompt_logprobs(entries: Any, ids: Sequence[int], start: int) -> float:
    """Sum of vLLM's ``prompt_logprobs`` (one ``{token_id: {"logprob": ...}}`` per position) from ``start``."""
    if not isinstance(entries, list) or len(entries) != len(ids):
        raise NotImplementedError(f"{SCORING_NEEDS}: the server returned no per-position prompt log-probs")
    total = 0.0
    for position in range(start, len(ids)):
        entry = entries[position] or {}
        found = entry.get(str(ids[position]))
        if not isinstance(found, dict) or "logprob" not in found:
            raise NotImplementedError(f"{SCORING_NEEDS}: no log-prob for prompt token {ids[position]} at {position}")
        total += float(found["logprob"])
    return total


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
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        use_completions_for_score: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or concurrency < 1:
            raise ValueError(
                f"need timeout > 0, max_retries >= 0, backoff >= 0 and concurrency >= 1; got "
                f"{timeout=}, {max_retries=}, {backoff=}, {concurrency=}"
            )
        root = base_url.rstrip("/")
        self.base_url = root.removesuffix("/v1")
        self.model = model
        self.max_retries, self.backoff = max_retries, backoff
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

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON and return the JSON answer, retrying transient failures with back-off."""
        url = self.base_url + path
        attempts = self.max_retries + 1
        last_error, last_status, last_message = "", None, ""
        wait_hint: float | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                if wait_hint is not None:
                    delay = max(delay, min(wait_hint, self.max_backoff))
                time.sleep(delay)
            wait_hint = None
            try:
                response = self._client.post(path, json=body)
            except httpx.TransportError as error:  # refused, timed out, connection dropped
                last_error, last_status, last_message = f"{type(error).__name__}: {error}", None, str(error)
                continue
            status = response.status_code
            if status == 429 or status >= 500:
                last_status, last_message = status, _server_message(response)
                last_error = f"HTTP {status}: {last_message}"
                wait_hint = _retry_after(response) if status == 429 else None
                continue
            if status >= 400:
                message = _server_message(response)
                raise BackendError(
                    f"POST {url} was refused with HTTP {status}: {message}",
                    url=url,
                    status=status,
                    server_message=message,
                )
            try:
                answer = response.json()
            except ValueError as error:
                raise BackendError(f"POST {url} answered HTTP {status} with a non-JSON body", url=url) from error
            if not isinstance(answer, dict):
                raise BackendError(f"POST {url} answered with a JSON {type(answer).__name__}, not an object", url=url)
            return answer
        raise BackendError(
            f"POST {url} failed after {attempts} attempt{'s' * (attempts > 1)}; last error: {last_error}",
            url=url,
            status=last_status,
            server_message=last_message,
        )

    def _map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``function`` over ``items`` on the thread pool, results in order; the first failure
        (in order) is raised and requests not yet started are cancelled."""
        futures: list[Future[R]] = [self._pool.submit(function, item) for item in items]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()

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
        requests = []
        for i, chat in enumerate(chats):
            messages = _messages(chat)
            body: dict[str, Any] = {
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
        return self._map(self._generate_one, requests)

    def _generate_one(self, body: dict[str, Any]) -> Generation:
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

    def _parse_generation(self, answer: dict[str, Any]) -> Generation:
        url = self.base_url + "/v1/chat/completions"
        try:
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            raise BackendError(f"{url} answered without a message: {str(answer)[:300]}", url=url) from error
        reason = choice.get("finish_reason")
        if reason in _FAILED_REASONS:
            raise BackendError(f"{url} ended the generation with finish_reason={reason!r}", url=url)
        finish_reason = "length" if reason in _LENGTH_REASONS else "stop"
        token_ids = [int(t) for t in choice.get("token_ids") or []]
        logprobs = [float(e["logprob"]) for e in (choice.get("logprobs") or {}).get("content") or []]
        # vLLM (recognised by its ``stop_reason`` field) includes the end-of-turn token that
        # stopped generation; a stop *string* (``stop_reason`` a str) is cut from tokens already.
        if finish_reason == "stop" and "stop_reason" in choice and not isinstance(choice["stop_reason"], str):
            token_ids, logprobs = token_ids[:-1], logprobs[:-1]
        return Generation(text=text, token_ids=token_ids, logprobs=logprobs, finish_reason=finish_reason)

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        if len(chats) != len(continuations):
            raise ValueError(f"{len(chats)} chats but {len(continuations)} continuations")
        pairs = [(_messages(c), str(t)) for c, t in zip(chats, continuations, strict=True)]
        one = self._score_completions if self.use_completions_for_score else self._score_chat
        return self._map(one, pairs)

    def _scoring_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._post(path, body)
        except BackendError as error:
            # an unknown route is 404/405 (501 on some servers); an unknown model is a 404 naming it
            if error.status in (404, 405, 501) and "model" not in error.server_message.lower():
                raise NotImplementedError(f"{SCORING_NEEDS} ({error})") from error
            raise

    def _tokenize(self, body: dict[str, Any]) -> list[int]:
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
        choices = answer.get("choices") or [{}]
        return _sum_prompt_logprobs(choices[0].get("prompt_logprobs"), ids, start=len(prompt))

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
        return _sum_prompt_logprobs(answer.get("prompt_logprobs"), ids, start=len(prompt))
