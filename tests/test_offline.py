"""Nothing reaches the network unless the user opts in (ADVGAME_HUB=1): a missing folder shaped like
a hub id is a one-line error, exit 2, and every hub client is in its offline mode."""

import os
import socket

import pytest

from agents import hub
from agents.models import check_model, resolve_model
from algorithms.cli.main import main


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt is recorded and refused."""
    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return tried


@pytest.mark.parametrize("model", ["models/no-such", "no-such-org/no-such-model", "./models/no-such", "/no/such"])
def test_eval_of_a_missing_model_is_one_line_and_exit_2_without_the_network(model, no_network, monkeypatch, capsys):
    monkeypatch.delenv(hub.OPT_IN, raising=False)
    assert main(["eval", "--model", model, "--suite", "bundled"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"advgame eval: {model!r} is neither a bundled model")
    assert no_network == []


def test_the_error_says_how_to_opt_in_to_the_hub_for_an_org_name(monkeypatch):
    monkeypatch.delenv(hub.OPT_IN, raising=False)
    with pytest.raises(FileNotFoundError, match="ADVGAME_HUB=1"):
        resolve_model("no-such-org/no-such-model")


def test_a_hub_id_is_tried_only_on_opt_in_and_never_for_a_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(hub.OPT_IN, "1")
    assert resolve_model("some-org/some-model") == "some-org/some-model"  # opted in: the hub's to load
    (tmp_path / "models").mkdir()
    with pytest.raises(FileNotFoundError, match=r"a local folder, nor a hub id$"):  # beside a models/ folder: a path
        check_model("models/my-llama")
    with pytest.raises(FileNotFoundError):
        check_model("./some-org/some-model")


def test_hub_clients_are_offline_by_default_and_a_users_choice_stands(monkeypatch):
    import huggingface_hub.constants

    for name in hub.OFFLINE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(hub.OPT_IN, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.offline_by_default()
    assert all(os.environ[name] == "1" for name in hub.OFFLINE)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's own setting
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.offline_by_default()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_opting_in_leaves_the_hub_online(monkeypatch):
    import huggingface_hub.constants

    for name in hub.OFFLINE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(hub.OPT_IN, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.offline_by_default()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.slow
def test_a_missing_model_fails_before_torch_or_the_hub_client_loads(tmp_path):
    """The issue's "exits 2 in under 5 s": the error comes before the imports that take seconds on
    a busy machine (torch, transformers; the hub client's cache lookup is light), checked in a
    fresh process, not timed."""
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys\n"
        "from algorithms.cli.main import main\n"
        "code = main(['eval', '--model', 'models/no-such', '--suite', 'bundled'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != hub.OPT_IN}
    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "2 []", done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0 and "models/no-such" in done.stderr
