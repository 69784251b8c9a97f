"""Shared fixtures: a tiny chat model that answers in short, varied sentences, and a real
``vllm serve`` of the bundled model on loopback (``vllm_server``, one per session).

The tiny chat model is built by ``agents.testing.tiny_chat_model`` (its docstring says why) on the
bundled seeds' prompts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from xdist_groups import pytest_collection_modifyitems, pytest_itemcollected  # noqa: F401 (hooks)


@pytest.fixture(scope="session")
def tiny_chat() -> Path:
    """Folder of the tiny chat model (built once, ~30 s, then cached beside the bundled model)."""
    from advgame_env import bundled_seeds
    from agents.testing import tiny_chat_model

    return tiny_chat_model([s.prompt for s in bundled_seeds("all")])


# a real `vllm serve` of the bundled model on loopback, shared by every test module that asks for it
SERVER_START_TIMEOUT = 240.0
SERVER_FLAGS = (
    *("--served-model-name", "smollm2", "--max-model-len", "2048", "--seed", "0"),
    # measured here (2 busy cores): healthy after ~45 s eager, ~165-210 s with torch.compile,
    # whose cache vLLM 0.32 CPU fails to reload ("no attribute 'finalize_loading'")
    "--enforce-eager",
    # what tests/test_vllm_server.py's training runs push (LoRA adapters, full weights through
    # our file transport, which launch() configures), so that they share this server: one
    # server less at once (~5 GiB)
    *("--enable-lora", "--max-lora-rank", "8", "--max-loras", "4"),
)
# Five times in ~25 runs of the whole suite (2 workers on 2 cores), the session's server was gone
# during or between tests that pass alone (seen: "EngineDeadError", its engine core dead after a
# worker's RPC raised, while the other worker loaded both cores); never with the vLLM tests alone,
# loaded or not, nor in 6 red-team runs killed mid-request. Until the cause is known, a dead server
# is reported (its exit status, the engine's first traceback and the log's end, as a pytest warning;
# its whole log is kept) and started anew on the same port, this many times; the test it died
# under runs once more (tests/xdist_groups.py).
SERVER_RESTARTS = 2
# A server whose engine died closes its port some seconds before its process exits (CI once failed
# a test twice on "Connection refused" from such a server, which a check of the process alone
# found running): a server that does not answer /health within this long counts as dead.
HEALTH_WAIT = 60.0


class SessionServer:
    """The session's ``vllm serve`` process, its URL and its log."""

    def __init__(self) -> None:
        with socket.socket() as s:  # a free port on loopback
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        handle, name = tempfile.mkstemp(prefix="advgame-vllm-serve-", suffix=".log")
        os.close(handle)  # launch() writes the log through its own handle
        self.log = Path(name)
        self.restarts = 0
        self.start()

    def start(self) -> None:
        from agents.vllm_server import launch, wait_ready

        begun = time.monotonic()
        self.process = launch("smollm2-135m-instruct", self.port, self.log, *SERVER_FLAGS, new_session=True)
        try:
            wait_ready(self.url, self.process, self.log, seconds=SERVER_START_TIMEOUT)
        except RuntimeError as error:  # the server died or was late; the message ends with its log
            self.stop()
            pytest.fail(str(error))
        print(f"\nvllm serve healthy after {time.monotonic() - begun:.1f} s")

    def answers(self) -> bool:
        """Whether the server answers ``/health`` within ``HEALTH_WAIT`` s while its process runs."""
        from agents.vllm_server import wait_ready

        try:
            wait_ready(self.url, self.process, self.log, seconds=HEALTH_WAIT)
        except RuntimeError:  # it exited, or did not answer in time
            return False
        return True

    def died(self) -> str | None:
        """None while the server runs; else its exit status (a negative status is the signal that
        ended it: -9 from the kernel's out-of-memory killer, or a kill), the log's first traceback
        and the log's end."""
        if self.process.poll() is None:
            return None
        text = self.log.read_text(errors="replace")
        first = text.find("Traceback")  # the root cause, which the engine's later errors only point to
        cause = f"its first traceback:\n{text[first : first + 6000]}\n" if first >= 0 else ""
        kept = self.log.with_name(f"{self.log.stem}-death{self.restarts + 1}.log")
        kept.write_text(text)
        return (
            f"the session's vllm serve ({self.url}) exited with {self.process.returncode}; {cause}"
            f"its whole log is kept in {kept}; it ends:\n{text[-4000:]}"
        )

    def revive(self) -> None:
        """Report a dead server and start it anew (``SERVER_RESTARTS`` times at most); a server
        that runs but no longer answers is stopped first (``HEALTH_WAIT``)."""
        silent = self.process.poll() is None and not self.answers()
        if silent:
            self.stop()
        death = self.died()
        if death is None:
            return
        if silent:
            death = f"(it ran but did not answer /health for {HEALTH_WAIT:g} s, so it was stopped) {death}"
        if self.restarts == SERVER_RESTARTS:
            pytest.fail(f"{death}\n(it had been restarted {SERVER_RESTARTS} times already)")
        warnings.warn(f"{death}\n-- starting it anew", stacklevel=1)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and the engine process it started
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def vllm_session_server() -> Iterator[SessionServer]:
    pytest.importorskip("vllm")
    server = SessionServer()
    try:
        yield server
    finally:
        death = server.died()
        server.stop()
        server.log.unlink()
    if death is not None:  # it died after its last test: report it rather than lose its log
        warnings.warn(death, stacklevel=1)


@pytest.fixture
def vllm_server(vllm_session_server: SessionServer) -> str:
    """The URL of the session's ``vllm serve``, running when the test starts; if it dies during
    the test, the test's own requests fail, and the warning of the next revival says why."""
    vllm_session_server.revive()
    return vllm_session_server.url
