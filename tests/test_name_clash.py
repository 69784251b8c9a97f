"""Another installed distribution that provides one of our top-level names (openai-agents also
installs ``agents``) stops the import with a message naming it and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from advgame_env.distribution import OURS, NameClashError, check_top_level, providers
from agents.name_check import other_providers

ROOT = Path(__file__).resolve().parent.parent


def fake_distribution(site: Path, name: str, *, record: str | None = None, top_level: str | None = None) -> Path:
    """The metadata of an installed distribution (no code): what pip leaves in site-packages."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    if record is not None:
        (info / "RECORD").write_text(record)
    if top_level is not None:
        (info / "top_level.txt").write_text(top_level)
    return site


@pytest.fixture
def fresh_scan():
    providers.cache_clear()
    yield
    providers.cache_clear()


def test_our_own_names_are_ours_alone(fresh_scan):
    check_top_level(*OURS)
    assert other_providers() == []
    # the editable install (and, run from a checkout, its advgame.egg-info in the working folder)
    assert all(set(names) == {"advgame"} for names in providers().values()), providers()


def test_a_distribution_that_installs_agents_is_named_with_what_to_do(tmp_path, monkeypatch, fresh_scan):
    # openai-agents is built with hatchling: no top_level.txt, its RECORD says what it installs
    record = "agents/__init__.py,sha256=x,10\nagents/run.py,sha256=y,20\nopenai_agents-0.1.0.dist-info/RECORD,,\n"
    monkeypatch.syspath_prepend(str(fake_distribution(tmp_path, "openai-agents", record=record)))
    with pytest.raises(NameClashError, match=r"'openai-agents' also provides the top-level package 'agents'") as caught:
        check_top_level("algorithms", "agents")
    assert "pip uninstall openai-agents" in str(caught.value) and "virtual environment" in str(caught.value)
    check_top_level("algorithms", "advgame_env")  # the other names are still ours alone
    assert other_providers() == ["openai-agents"]


def test_a_setuptools_distribution_is_found_by_its_top_level_file(tmp_path, monkeypatch, fresh_scan):
    monkeypatch.syspath_prepend(str(fake_distribution(tmp_path, "algorithms-kit", top_level="algorithms\nkit\n")))
    with pytest.raises(NameClashError, match="'algorithms-kit' also provides the top-level package 'algorithms'"):
        check_top_level("algorithms")


@pytest.mark.slow
def test_the_advgame_command_stops_before_it_loads_anything(tmp_path):
    site = fake_distribution(tmp_path, "openai-agents", record="agents/__init__.py,,\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    for code in ("import algorithms.cli.main", "import agents"):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode != 0 and "pip uninstall openai-agents" in done.stderr, done.stderr[-2000:]
