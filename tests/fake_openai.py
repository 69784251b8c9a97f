"""A fake OpenAI-compatible server for the tests: a real HTTP server on 127.0.0.1, in a thread,
that answers each request as a test scripts it, faults included.

A script is ``reply(n, path, body, stopping)`` -> ``(status, json_body)`` or a :class:`Raw`
answer, where ``n`` counts requests from 1 and ``stopping`` is set when the test ends (a
handler that waits should wait on it). :class:`Raw` serves what no well-behaved server would:
bytes that are not JSON, a body cut short, a bad ``Content-Encoding``, a body trickled a byte at
a time. Helpers build vLLM-shaped answers (:func:`completion`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Raw:
    """An answer given byte for byte."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    declared_length: int | None = None  # Content-Length sent (default: the body's); longer = cut short
    trickle: float = 0.0  # seconds between the body's bytes (0: all at once)


Reply = tuple[int, Any] | Raw
Script = Callable[[int, str, dict[str, Any], threading.Event], Reply]


class FakeServer:
    """What the server was asked (``requests``: (path, JSON body) in arrival order)."""

    def __init__(self, reply: Script, max_requests: int):
        self.reply, self.max_requests = reply, max_requests
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.stopping = threading.Event()  # sleeping handlers wake up when the test ends
        self.lock = threading.Lock()

    def handle(self, path: str, body: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append((path, body))
            n = len(self.requests)
        if n > self.max_requests:
            return 410, {"error": {"message": "fake server: request budget spent"}}
        return self.reply(n, path, body, self.stopping)


@contextmanager
def fake_server(reply: Script, max_requests: int = 8, lifetime: float = 60.0) -> Iterator[tuple[str, FakeServer]]:
    """``(base url, server state)`` of a loopback server that answers at most ``max_requests``
    requests (then HTTP 410) within ``lifetime`` seconds."""
    state = FakeServer(reply, max_requests)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = state.handle(self.path, json.loads(raw or b"{}"))
            if not isinstance(answer, Raw):
                status, payload = answer
                answer = Raw(json.dumps(payload).encode(), status=status)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                length = len(answer.body) if answer.declared_length is None else answer.declared_length
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if answer.trickle:
                    for i in range(len(answer.body)):
                        if state.stopping.wait(answer.trickle):
                            return
                        self.wfile.write(answer.body[i : i + 1])
                        self.wfile.flush()
                else:
                    self.wfile.write(answer.body)
            except OSError:
                self.close_connection = True  # the client gave up (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.timeout = 0.05
    deadline = time.monotonic() + lifetime

    def serve() -> None:
        while not state.stopping.is_set() and time.monotonic() < deadline:
            server.handle_request()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.stopping.set()
        thread.join(timeout=5)
        server.server_close()


def completion(
    text: str | None,
    *,
    token_ids: list[int] | None = None,
    finish: str = "stop",
    logprob: float = -0.5,
    choices: int = 1,
) -> dict[str, Any]:
    """A vLLM-shaped chat completion; vLLM lists the end-of-turn token (id 2) among the generated."""
    ids = [*(token_ids or []), *([2] if finish == "stop" else [])]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": {"content": [{"token": "t", "logprob": logprob, "top_logprobs": []} for _ in ids]},
        "finish_reason": finish,
        "stop_reason": None,
        "token_ids": ids,
    }
    return {"choices": [{**choice, "index": i} for i in range(choices)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
