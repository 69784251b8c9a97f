"""Helpers shared by several test modules (fixtures live in conftest.py): how generations that
should repeat are compared, and the configs of the short runs on the tiny chat model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agents import Generation
from algorithms.config import TrainConfig, load_config

if TYPE_CHECKING:
    import psutil


def assert_same_generations(got: list[Generation], expected: list[Generation], *, abs: float = 1e-4) -> None:
    """Text, tokens and finish reason exactly, log-probs only to a tolerance, because CPU matrix
    kernels may sum in a different order from one call to the next (a clean-clone CI run
    differed at 5e-6)."""
    assert [(g.text, g.token_ids, g.finish_reason) for g in got] == [
        (g.text, g.token_ids, g.finish_reason) for g in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=abs)


def _engine_processes() -> list[psutil.Process]:
    import psutil  # a vLLM dependency

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if title.startswith("VLLM::"):  # vLLM titles its engine core and worker processes so
            found.append(child)
    return found


@contextmanager
def engine_processes_stop(timeout: float = 60.0) -> Iterator[None]:
    """Every vLLM engine process started inside the block has exited within ``timeout`` seconds
    of its end: an engine left running holds ~5 GiB until the interpreter exits, and a few of them
    in one test process were enough to get CI's pytest killed for memory."""
    import psutil

    before = {p.pid for p in _engine_processes()}
    yield
    started = [p for p in _engine_processes() if p.pid not in before]
    _, alive = psutil.wait_procs(started, timeout=timeout)
    assert not alive, f"engine processes still running after close: {[p.pid for p in alive]}"


def tiny_run(model: Path, out: Path, *overrides: str) -> TrainConfig:
    """A two-step run on ``model`` writing to ``out``: no progress bar, TensorBoard or validation,
    two seeds a split; every other key keeps the default unless an override names it."""
    return load_config(
        None,
        [
            f"model.name={model}",
            f"run.out_dir={out}",
            "run.progress=false",
            "run.tensorboard=false",
            "run.validate_every=0",
            "run.steps=2",
            "data.batch_size=2",
            "game.direct_fraction=0.5",
            *overrides,
        ],
    )


def config(model: Path, out: Path, *overrides: str) -> TrainConfig:
    """The trainer tests' run: answers long enough to differ, full-temperature sampling, a learning
    rate that moves the tiny model in a step."""
    return tiny_run(
        model,
        out,
        "data.validation_size=4",
        "roles.attacker.max_tokens=12",
        "roles.defender.max_tokens=24",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "optim.lr=1e-3",
        *overrides,
    )


def srt_config(model: Path, out: Path, *extra: str) -> TrainConfig:
    """``config`` with Self-RedTeam: one shared policy, the general-sum reward rule."""
    return config(
        model,
        out,
        "algorithm.name=self_redteam",
        "algorithm.reward_kl_beta=0.01",
        "algorithm.minibatches=2",
        "game.reward_rule=self_redteam",
        "game.defender_think=false",  # the tiny model answers plainly; its rewards then differ
        "optim.lr=1e-2",
        *extra,
    )


# Short sampled rounds that every judged outcome can occur in: tiny budgets, temperature 1,
# cut-off answers judged (not failed), and a learning rate that moves the tiny model in 2 steps.
SHORT_ROUNDS = (
    "roles.attacker.max_tokens=8",
    "roles.defender.max_tokens=12",
    "rollout.temperature=1.0",
    "game.judge_truncated_responses=true",
    "optim.lr=1e-3",
)
