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


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[str]:
    pytest.importorskip("vllm")
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    from agents.vllm_server import launch, wait_ready

    handle, name = tempfile.mkstemp(prefix="advgame-vllm-serve-", suffix=".log")
    os.close(handle)  # launch() writes the log through its own handle
    log = Path(name)
    flags = [
        *("--served-model-name", "smollm2", "--max-model-len", "2048", "--seed", "0"),
        # measured here (2 busy cores): healthy after ~45 s eager, ~165-210 s with torch.compile,
        # whose cache vLLM 0.32 CPU fails to reload ("no attribute 'finalize_loading'")
        "--enforce-eager",
        # what tests/test_vllm_server.py's training runs push (LoRA adapters, full weights through
        # our file transport, which launch() configures), so that they share this server: one
        # server less at once (~5 GiB)
        *("--enable-lora", "--max-lora-rank", "8", "--max-loras", "4"),
    ]
    process = launch("smollm2-135m-instruct", port, log, *flags, new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        try:
            wait_ready(url, process, log, seconds=SERVER_START_TIMEOUT)
        except RuntimeError as error:  # the server died or was late; the message ends with its log
            pytest.fail(str(error))
        print(f"\nvllm serve healthy after {time.monotonic() - start:.1f} s")
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and the engine process it started
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.unlink()
