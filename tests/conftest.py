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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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
    log = tempfile.NamedTemporaryFile(prefix="advgame-vllm-serve-", suffix=".log", delete=False)  # noqa: SIM115
    command = [
        *(sys.executable, "-m", "agents.vllm_serve", "smollm2-135m-instruct"),
        *("--host", "127.0.0.1", "--port", str(port), "--served-model-name", "smollm2"),
        *("--dtype", "float32", "--max-model-len", "2048", "--seed", "0"),
        # measured here (2 busy cores): healthy after ~45 s eager, ~165-210 s with torch.compile,
        # whose cache vLLM 0.32 CPU fails to reload ("no attribute 'finalize_loading'")
        "--enforce-eager",
        # what tests/test_vllm_server.py's training runs push (LoRA adapters, full weights through
        # our file transport), so that they share this server: one server less at once (~5 GiB)
        *("--enable-lora", "--max-lora-rank", "8", "--max-loras", "4"),
        *("--weight-transfer-config", '{"backend": "advgame_file"}'),
    ]
    root = str(Path(__file__).resolve().parents[1])  # its processes import our agents (the transport)
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        with open(log.name, errors="replace") as f:
            return "".join(f.readlines()[-40:])

    try:
        start = time.monotonic()
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}; its log ends:\n{tail()}")
            if time.monotonic() - start > SERVER_START_TIMEOUT:
                pytest.fail(f"vllm serve was not healthy after {SERVER_START_TIMEOUT:.0f} s; its log ends:\n{tail()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
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
        log.close()
        os.unlink(log.name)
