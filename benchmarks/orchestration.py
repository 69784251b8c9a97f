"""Orchestration overhead of collecting rounds, and how collection time grows with the batch.

    python benchmarks/orchestration.py [--rounds 256] [--json FILE] [--profile]

A batch of rounds is collected exactly as the trainer does it (``Trainer.play_splits``: both
splits' seeds, attacker and defender sampling in one batched call per phase, parsing, the
game's rules, the judge, rewards; then ``algorithm.examples``: the preference pairs). The overhead ratio is the wall
time of that divided by the time spent inside the backend's ``generate`` calls.

The players are the tiny test model (``agents.testing.tiny_chat_model`` on the bundled prompts: its answers
end by themselves), whose generation is far cheaper than a real model's, so the ratio here is an
upper bound: with the bundled 135M model the same bookkeeping is a smaller share still.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import describe_machine, exponent

from advgame_env import bundled_seeds
from agents.hf import HFBackend
from agents.testing import tiny_chat_model
from algorithms.config import load_config
from algorithms.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


class BackendClock:
    """Adds up the seconds spent inside ``HFBackend.generate`` while installed."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0
        self._original = HFBackend.generate

    def __enter__(self) -> BackendClock:
        clock, original = self, self._original

        def timed(backend: HFBackend, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(backend, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - start
                clock.calls += 1

        HFBackend.generate = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        HFBackend.generate = self._original  # type: ignore[method-assign]


def trainer(rounds: int, folder: str) -> Trainer:
    """The CPU demo recipe on the tiny model; ``rounds`` seeds per step over both splits."""
    overrides = [
        f"model.name={tiny_chat_model([s.prompt for s in bundled_seeds('all')])}",
        f"data.batch_size={rounds // 2}",
        # shorter than the demo's budgets, so 256 rounds take a few minutes on 2 cores
        "game.num_responses=4",
        "roles.attacker.max_tokens=32",
        "roles.defender.max_tokens=16",
        "run.validate_every=0",
        "run.tensorboard=false",
        "run.progress=false",
        f"run.out_dir={folder}/run",
    ]
    return Trainer(load_config(ROOT / "configs/cpu_demo.yaml", overrides))


def collect(t: Trainer) -> int:
    """Play one batch of both splits and build its training examples; the number of examples."""
    tokenizer = t.players["defender"].tokenizer
    return sum(len(t.algorithm.examples(rounds, t.game, tokenizer, t.prefills)) for rounds in t.play_splits().values())


def overhead(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        collect(trainer(8, folder + "/warm-up"))  # first calls allocate and pick kernels
        t = trainer(rounds, folder)
        with BackendClock() as clock:
            start = time.perf_counter()
            examples = collect(t)
            wall = time.perf_counter() - start
    return {
        "rounds": rounds,
        "examples": examples,
        "wall_s": wall,
        "backend_s": clock.seconds,
        "backend_calls": clock.calls,
        "ratio": wall / clock.seconds,
        "overhead_ms_per_round": 1000 * (wall - clock.seconds) / rounds,
    }


def scaling(largest: dict[str, Any], sizes: tuple[int, ...] = (16, 64)) -> dict[str, Any]:
    rows = [*(overhead(n) for n in sizes), largest]
    return {
        "rows": rows,
        "exponent": exponent([r["rounds"] for r in rows], [r["wall_s"] for r in rows]),
        "overhead_exponent": exponent([r["rounds"] for r in rows], [r["wall_s"] - r["backend_s"] for r in rows]),
    }


def profile(rounds: int, top: int = 25) -> None:
    with tempfile.TemporaryDirectory() as folder:
        collect(trainer(8, folder + "/warm-up"))
        t = trainer(rounds, folder)
        profiler = cProfile.Profile()
        profiler.runcall(collect, t)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=256)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", action="store_true", help="print where collection spends its time, and stop")
    args = parser.parse_args()
    if args.profile:
        profile(args.rounds)
        return
    largest = overhead(args.rounds)
    result = {"machine": describe_machine(), "overhead": largest, "scaling": scaling(largest)}
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
