"""Judge replicas (agents.ReplicatedBackend): what several replicas buy, what failover and dispatch cost.

    python benchmarks/replicas.py [--requests 64] [--service 0.05] [--json FILE]

The servers are loopback stand-ins of known behaviour, not models: each answers a chat
completion after ``--service`` seconds and serves ``--slots`` requests at a time (as a vLLM
replica's batch would), so the figures isolate the client: dispatch, failover and its own
overhead. Measured side by side in one run, as ratios of wall times of the same batch:

* ``two_vs_one``: 2 live replicas / 1 (ideal 0.5);
* ``one_dead``: 2 replicas of which one refuses connections / 1 live replica alone (ideal 1.0:
  failover costs one refused connection per request sent there before it is marked dead);
  ``one_dead_default`` / ``one_dead_retrying`` the same with 1 retry per replica (the default,
  back-off 0.5 s) / with 3, one server's default;
* ``dispatch_overhead``: ReplicatedBackend over 1 replica / OpenAIBackend on it, instant answers
  (4x the requests).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common import describe_machine

from agents import OpenAIBackend, ReplicatedBackend

ANSWER = json.dumps(
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
).encode()


@contextmanager
def server(service: float, slots: int) -> Iterator[str]:
    """A loopback server that answers every chat completion "ok" after ``service`` s, ``slots`` at a time."""
    gate = threading.BoundedSemaphore(slots)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with gate:
                time.sleep(service)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(ANSWER)))
            self.end_headers()
            self.wfile.write(ANSWER)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def wall(backend: Any, requests: int) -> float:
    chats = [[{"role": "user", "content": f"judge item {i}"}] for i in range(requests)]
    start = time.perf_counter()
    out = backend.generate(chats, max_tokens=8)
    elapsed = time.perf_counter() - start
    assert [g.text for g in out] == ["ok"] * requests
    return elapsed


def best_of(repeats: int, build: Callable[[], Any], requests: int) -> float:
    times = []
    for _ in range(repeats):
        with build() as backend:
            times.append(wall(backend, requests))
    return min(times)


def measure(requests: int, service: float, slots: int, repeats: int) -> dict[str, Any]:
    options = {"max_retries": 0, "timeout": 10.0, "concurrency": slots}
    with server(service, slots) as a, server(service, slots) as b, server(0.0, slots) as instant:
        one = best_of(repeats, lambda: ReplicatedBackend([a], "m", **options), requests)
        two = best_of(repeats, lambda: ReplicatedBackend([a, b], "m", **options), requests)
        # a fresh backend each repeat: the dead replica is found (and failed over) every time
        dead = best_of(repeats, lambda: ReplicatedBackend([dead_url(), a], "m", **options), requests)
        # with ReplicatedBackend's own retries (1 per replica, back-off 0.5 s), and with one server's
        # (3): the requests first sent to the dead replica wait out its retries before they fail over
        default = best_of(1, lambda: ReplicatedBackend([dead_url(), a], "m", concurrency=slots), requests)
        retrying = {**options, "max_retries": 3, "backoff": 0.5}
        dead_retrying = best_of(1, lambda: ReplicatedBackend([dead_url(), a], "m", **retrying), requests)
        # instant answers are quick: 4x the requests and 5 repeats, for less noise on a busy machine
        plain = best_of(5, lambda: OpenAIBackend(instant, "m", **options), 4 * requests)
        wrapped = best_of(5, lambda: ReplicatedBackend([instant], "m", **options), 4 * requests)
    return {
        "machine": describe_machine(),
        "requests": requests,
        "service_s": service,
        "slots": slots,
        "one_s": one,
        "two_s": two,
        "one_dead_s": dead,
        "two_vs_one": two / one,
        "one_dead": dead / one,
        "one_dead_default_s": default,
        "one_dead_default": default / one,
        "one_dead_retrying_s": dead_retrying,
        "one_dead_retrying": dead_retrying / one,
        "plain_s": plain,
        "wrapped_s": wrapped,
        "dispatch_overhead": wrapped / plain,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--service", type=float, default=0.05, help="seconds a replica takes per request")
    parser.add_argument("--slots", type=int, default=4, help="requests a replica serves at once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.requests, args.service, args.slots, args.repeats)
    print(
        f"{args.requests} requests, {args.service * 1000:.0f} ms each, {args.slots} at a time per replica\n"
        f"  1 replica {result['one_s']:.2f} s, 2 replicas {result['two_s']:.2f} s: ratio {result['two_vs_one']:.2f}\n"
        f"  2 replicas, one refusing connections {result['one_dead_s']:.2f} s: / 1 live {result['one_dead']:.2f}\n"
        f"  the same with 1 retry per replica (the default) {result['one_dead_default_s']:.2f} s: "
        f"{result['one_dead_default']:.2f}\n"
        f"  the same with 3 retries per replica {result['one_dead_retrying_s']:.2f} s: {result['one_dead_retrying']:.2f}\n"
        f"  dispatch overhead (instant answers) {result['wrapped_s']:.3f} s / {result['plain_s']:.3f} s: "
        f"{result['dispatch_overhead']:.2f}",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
