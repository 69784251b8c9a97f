"""What running the suite on parallel workers (pytest-xdist, ``make test``) relies on: the tiny
chat model's on-disk cache is built safely by two workers at once, and the tests that start a
vLLM engine or ``vllm serve`` all run on one worker (``tests/xdist_groups.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xdist_groups
from xdist_groups import VLLM_GROUP, group_of

from agents import testing


def test_a_tiny_chat_model_another_worker_finished_first_is_kept(tmp_path: Path) -> None:
    """Two workers that both found no cached model both build it; the one that finishes second
    drops its copy instead of failing (or writing into the other's scratch folder)."""
    folder = tmp_path / "tiny-chat"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # the other worker's finished model
    testing._train_tiny_chat(folder, ["How do I pick a lock?"], ["I can't help with that."], steps=1)
    assert [p.name for p in folder.iterdir()] == ["config.json"] and (folder / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-chat"]  # no scratch folder left behind


def test_every_test_that_asks_for_the_session_server_is_in_the_vllm_group() -> None:
    """Collect the whole suite as ``make test`` does: a test that uses ``vllm_server`` (directly or
    through another fixture) outside the ``vllm`` group would let a second worker start a second
    ``vllm serve``; so would a slow test with ``vllm`` in its id."""
    collected = Collected()
    code = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", str(Path(__file__).parent)], plugins=[collected]
    )
    assert code == pytest.ExitCode.OK and collected.items
    users = [i for i in collected.items if "vllm_server" in i.fixturenames]
    assert users, "no test asks for vllm_server: the check would check nothing"
    outside = [i.nodeid for i in collected.items if xdist_groups.needs_vllm(i) and group_of(i) != VLLM_GROUP]
    unmarked = [i.nodeid for i in users if group_of(i) != VLLM_GROUP]
    assert not outside and not unmarked, f"vLLM tests outside the {VLLM_GROUP!r} group: {outside + unmarked}"
    # and the mark selects exactly the group (-m vllm)
    marked = {i.nodeid for i in collected.items if i.get_closest_marker("vllm")}
    assert marked == {i.nodeid for i in collected.items if group_of(i) == VLLM_GROUP}


class Collected:
    """A pytest plugin that keeps the collected items, after every hook has marked them."""

    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


GROUPED_SUITE = """
import os
from pathlib import Path
import pytest
from xdist_groups import pytest_collection_modifyitems, pytest_itemcollected

STARTS = Path(os.environ["STARTS"])

@pytest.fixture(scope="session")
def vllm_server():
    with STARTS.open("a") as f:  # one line per start, as the real fixture starts one vllm serve
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
    return "http://127.0.0.1:1"

@pytest.fixture
def served(vllm_server):
    return vllm_server
"""

GROUPED_TESTS = """
import pytest

@pytest.mark.slow
@pytest.mark.parametrize("i", range(4))
def test_asks_for_the_server(vllm_server, i):
    pass

@pytest.mark.slow
@pytest.mark.parametrize("i", range(2))
def test_asks_through_another_fixture(served, i):
    pass

@pytest.mark.slow
@pytest.mark.parametrize("i", range(2))
def test_a_vllm_engine(i):
    pass

@pytest.mark.parametrize("i", range(8))
def test_other(i):
    pass
"""


@pytest.mark.slow  # starts two pytest-xdist worker processes
def test_two_workers_run_the_vllm_group_on_one_worker_and_start_the_server_once(tmp_path: Path) -> None:
    """The suite's grouping under ``-n 2 --dist loadgroup`` with the installed pytest and
    pytest-xdist: every test of the group (by the server fixture, through another fixture, or by
    its id) runs on one worker, the session server starts once, and the other tests still use
    both workers."""
    (tmp_path / "conftest.py").write_text(GROUPED_SUITE)
    (tmp_path / "test_grouped.py").write_text(GROUPED_TESTS)
    starts = tmp_path / "starts.txt"
    env = {
        **os.environ,
        "STARTS": str(starts),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(tmp_path)]),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    ran = {name: worker for worker, name in re.findall(r"\[(gw\d)\] .*?PASSED (\S+)", run.stdout)}
    assert len(ran) == 16, run.stdout
    grouped = {w for n, w in ran.items() if "test_other" not in n}
    assert len(grouped) == 1 and all(n.endswith(f"@{VLLM_GROUP}") for n in ran if "test_other" not in n), run.stdout
    assert set(ran.values()) == {"gw0", "gw1"}, run.stdout
    assert starts.read_text().split() == list(grouped)
    # -m vllm selects the group's 8 tests, -m "not vllm" the other 8
    for selection, want in (("vllm", "test_a_vllm_engine test_asks"), ("not vllm", "test_other")):
        listed = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", selection, "--collect-only", "-q", "-p", "no:cacheprovider"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        names = re.findall(r"::(\w+)\[", listed)
        assert len(names) == 8 and all(n.startswith(tuple(want.split())) for n in names), listed


# answers /health as a healthy `vllm serve` does (the session server's revival test below)
HEALTHY = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_a_session_server_that_runs_but_no_longer_answers_is_stopped_and_started_anew(monkeypatch) -> None:
    """A ``vllm serve`` whose engine died closes its port before its process exits: the session
    fixture (``tests/conftest.py``) must not hand that server to the next test because its process
    still runs. Its stand-ins: a process that holds no port, then one that answers ``/health``."""
    import conftest
    import httpx

    monkeypatch.setattr(conftest, "HEALTH_WAIT", 2.0)
    started: list[subprocess.Popen[bytes]] = []

    def start(self: conftest.SessionServer) -> None:
        code = ("-c", "import time; time.sleep(600)") if not started else ("-c", HEALTHY, str(self.port))
        self.process = subprocess.Popen([sys.executable, *code], start_new_session=True)
        started.append(self.process)
        for _ in range(300):  # the real start() returns once /health answers, or fails
            try:
                if len(started) == 1 or httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("the stand-in server never answered")

    monkeypatch.setattr(conftest.SessionServer, "start", start)
    server = conftest.SessionServer()
    try:
        with pytest.warns(UserWarning, match=r"did not answer /health for 2 s, so it was stopped.* exited with -15"):
            server.revive()
        assert started[0].poll() == -15 and server.restarts == 1 and len(started) == 2
        server.revive()  # the new one answers: kept as it is
        assert len(started) == 2 and server.restarts == 1 and started[1].poll() is None
    finally:
        server.stop()
        for log in server.log.parent.glob(f"{server.log.stem}*"):
            log.unlink()
