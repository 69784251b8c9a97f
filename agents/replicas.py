"""One generation backend over several replicas of an OpenAI-compatible server (e.g. judge replicas).

    with ReplicatedBackend(["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"], "judge") as backend:
        backend.generate(chats, max_tokens=512)

It speaks the generation protocol of :class:`~agents.openai_backend.OpenAIBackend` (``generate``,
``score``, ``close``, a context manager) and holds one ``OpenAIBackend`` per URL, which keeps
doing the HTTP work: retries with back-off, the per-request deadline, checking the answers.

Dispatch. Each chat of a batch is one request, sent to the live replica with the fewest requests
in flight (ties taken in turn, so a light load still spreads); results come back in input order.
Failover. A request that fails because of its server (``BackendError.server_fault``: refused or
dropped connections, 5xx/429 and bad bodies after that replica's own retries, its deadline, a
malformed or aborted answer) marks that replica dead for ``cooldown`` seconds and is sent to
another live replica it has not tried yet, ``max_tries`` replicas at most. A dead replica gets no
requests while a live one is left, until its cool-down ends; then it takes one request at a time,
the probe: an answer makes it live again, a failure starts a new cool-down. A request that finds
no live replica left to try is sent to the dead ones anyway (the soonest out of its cool-down
first): with nowhere else to go, a cool-down must not fail a request unsent, so a call made again
(the trainer's ``judge.retries``) really tries again. When every replica it may try has failed
it, the call raises :class:`BackendError` naming every replica and its last error; an
``LLMJudge`` over this backend then fails its call (a ``JudgeError`` in the game), so a dead
judge never becomes a score. Each replica retries a failed request ``max_retries`` times itself
(1 here, against 3 for one server: failing over is the better retry when there are replicas).
A refusal of the request itself (another 4xx, text that is not Unicode, an empty chat) is raised
at once and marks nothing dead: every replica would refuse it alike, and routing around it would
take healthy replicas out of service.

Why written here: httpx does the transport and ``OpenAIBackend`` the protocol; what is left is a
few lines of bookkeeping (in-flight counts and cool-downs under one lock) that no library we
use offers for plain HTTP clients (vLLM's own router is a separate server to deploy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from agents.hf import Chat, Generation, check_sampling
from agents.openai_backend import BackendError, OpenAIBackend, ordered_map

T = TypeVar("T")
R = TypeVar("R")


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """The URLs of a comma-separated string (``--judge-url http://a/v1,http://b/v1``) or of a list."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    return [str(u).strip() for u in parts if str(u).strip()]


def check_urls(urls: Sequence[str]) -> list[str]:
    """``urls`` as server roots, refused (ValueError saying what to fix) when empty, not http(s) or repeated."""
    if not urls:
        raise ValueError("no server URL given (e.g. http://127.0.0.1:8000/v1)")
    roots: list[str] = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"server URL {url!r} must start with http:// or https://")
        root = url.rstrip("/").removesuffix("/v1")
        if root in roots:
            raise ValueError(f"server URL {url!r} is listed twice: each replica once")
        roots.append(root)
    return roots


@dataclass
class Replica:
    """One server and what the dispatcher knows of it (read it through :meth:`ReplicatedBackend.replicas`)."""

    url: str
    backend: OpenAIBackend
    in_flight: int = 0
    sent: int = 0  # requests dispatched to it
    failed: int = 0  # of them, failed through its fault
    dead_until: float | None = None  # clock time its cool-down ends; None: live
    died_at: float = float("-inf")  # when it was last marked dead
    last_error: str = ""

    def live(self, now: float) -> bool:
        return self.dead_until is None or now >= self.dead_until

    def takes(self, now: float) -> bool:
        """Whether it takes a request now: live, and, once its cool-down is over, one probe at a time."""
        return self.dead_until is None or (now >= self.dead_until and self.in_flight == 0)


class ReplicatedBackend:
    """Generation and scoring over several replicas of one model (see the module docstring).

    ``cooldown``: seconds a failed replica is left alone. ``max_tries``: replicas one request may
    try (default: all). ``concurrency``: requests in flight per replica. The other keywords are
    each replica's :class:`OpenAIBackend`'s (``max_retries`` 1 here, not 3: the other replicas are
    the better retry); its ``deadline`` bounds one try, so one request takes
    at most ``max_tries * deadline``. ``clock`` is the time source of the cool-downs (tests pass
    their own).
    """

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        *,
        cooldown: float = 30.0,
        max_tries: int | None = None,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
        api_key: str | None = None,
        timeout: float = 60.0,
        deadline: float = 600.0,
        max_retries: int = 1,
        backoff: float = 0.5,
        use_completions_for_score: bool = True,
    ) -> None:
        roots = check_urls(list(urls))
        if cooldown < 0 or (max_tries is not None and max_tries < 1) or concurrency < 1:
            raise ValueError(
                f"need cooldown >= 0, max_tries >= 1 and concurrency >= 1; got {cooldown=}, {max_tries=}, {concurrency=}"
            )
        self.model, self.cooldown, self.clock = model, cooldown, clock
        self.max_tries = len(roots) if max_tries is None else min(max_tries, len(roots))
        self._replicas: list[Replica] = []
        try:
            for root in roots:
                backend = OpenAIBackend(
                    root,
                    model,
                    api_key=api_key,
                    timeout=timeout,
                    deadline=deadline,
                    max_retries=max_retries,
                    backoff=backoff,
                    concurrency=concurrency,
                    use_completions_for_score=use_completions_for_score,
                )
                self._replicas.append(Replica(root, backend))
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._turn = 0  # where the next tie-break starts
        self._pool = ThreadPoolExecutor(max_workers=concurrency * len(roots), thread_name_prefix="replicas")

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self._replicas]

    def replicas(self) -> list[Replica]:
        """A snapshot of each replica's state (copies: changing them changes nothing)."""
        with self._lock:
            return [Replica(**vars(r)) for r in self._replicas]

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for replica in self._replicas:
            replica.backend.close()

    def __enter__(self) -> ReplicatedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ dispatch

    def _acquire(self, tried: set[int]) -> tuple[int, float] | None:
        """The least-loaded live replica not in ``tried`` (its index and the dispatch time), counted in flight."""
        with self._lock:
            now = self.clock()
            n = len(self._replicas)
            untried = [i for i in range(n) if i not in tried]
            if not untried:
                return None
            candidates = [i for i in untried if self._replicas[i].takes(now)]
            if candidates:
                best = min(candidates, key=lambda i: (self._replicas[i].in_flight, (i - self._turn) % n))
            else:  # no live replica left: the dead ones anyway, the soonest out of its cool-down first
                best = min(untried, key=lambda i: (self._replicas[i].dead_until or now, i))
            self._turn = (best + 1) % n
            replica = self._replicas[best]
            replica.in_flight += 1
            replica.sent += 1
            return best, now

    def _release(self, index: int, started: float, error: BackendError | None) -> None:
        with self._lock:
            replica = self._replicas[index]
            replica.in_flight -= 1
            now = self.clock()
            if error is not None:
                replica.failed += 1
                replica.dead_until, replica.died_at = now + self.cooldown, now
                replica.last_error = str(error)
            elif started >= replica.died_at:  # an answer to a request sent before it died proves nothing
                replica.dead_until = None

    def _call(self, request: Callable[[OpenAIBackend], R]) -> R:
        """``request`` on one replica after another until one answers (see the module docstring)."""
        tried: set[int] = set()
        errors: dict[int, str] = {}
        while len(tried) < self.max_tries:
            picked = self._acquire(tried)
            if picked is None:
                break
            index, started = picked
            tried.add(index)
            try:
                result = request(self._replicas[index].backend)
            except BackendError as error:
                if not error.server_fault:  # the request's own fault: every replica would refuse it
                    self._release(index, started, None)
                    raise
                self._release(index, started, error)
                errors[index] = str(error)
                continue
            except BaseException:
                self._release(index, started, None)
                raise
            self._release(index, started, None)
            return result
        raise self._exhausted(tried, errors)

    def _exhausted(self, tried: set[int], errors: dict[int, str]) -> BackendError:
        now = self.clock()
        lines = []
        with self._lock:
            for i, r in enumerate(self._replicas):
                if i in errors:
                    state = f"failed: {errors[i]}"
                elif r.dead_until is not None and r.live(now):
                    state = f"being probed after its cool-down; last error: {r.last_error}"
                elif r.live(now):
                    state = "live, not tried (the retry budget was spent)"
                else:
                    left = (r.dead_until or now) - now
                    state = f"dead, probed again in {left:.0f} s; last error: {r.last_error}"
                lines.append(f"{r.url}: {state}")
        return BackendError(
            f"no replica answered (tried {len(tried)} of {len(self._replicas)}, max_tries={self.max_tries}): "
            + "; ".join(lines),
            url=", ".join(self.urls),
            server_fault=True,
        )

    def _map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``function`` over ``items`` on the pool, results in order; the first failure (in order)
        is raised and requests not yet started are cancelled (as ``OpenAIBackend`` does)."""
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
        _check_chats(chats, self.urls)

        def one(item: tuple[int, Chat]) -> Generation:
            i, chat = item
            # seed + i, as one OpenAIBackend call would send it for the i-th chat
            chat_seed = None if seed is None else seed + i
            return self._call(
                lambda b: b.generate(
                    [chat], max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=chat_seed
                )[0]
            )

        return self._map(one, list(enumerate(chats)))

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        if len(chats) != len(continuations):
            raise ValueError(f"{len(chats)} chats but {len(continuations)} continuations")
        _check_chats(chats, self.urls, [str(c) for c in continuations])

        def one(pair: tuple[Chat, str]) -> float:
            chat, continuation = pair
            return self._call(lambda b: b.score([chat], [continuation])[0])

        return self._map(one, list(zip(chats, [str(c) for c in continuations], strict=True)))


def _check_chats(chats: Sequence[Chat], urls: Sequence[str], extra: Sequence[str] = ()) -> None:
    """What every replica would refuse, refused before any request of the call is sent."""
    texts = list(extra)
    for chat in chats:
        if not list(chat):
            raise ValueError("a chat needs at least one message")
        texts += [str(m["content"]) for m in chat]
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BackendError(
                f"not sent to {', '.join(urls)}: the request holds text that is not valid Unicode "
                f"({error.reason} at {error.start}: {text[max(0, error.start - 20) : error.start + 1]!r})",
                url=", ".join(urls),
            ) from None
