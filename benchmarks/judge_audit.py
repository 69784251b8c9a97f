"""The cost of ``judge.audit``: a short CPU run with the audit on / the same run without it.

    python benchmarks/judge_audit.py [--config cpu_demo.yaml] [--steps 3] [--fraction 0.005] [--rounds 2] [--json FILE]

Both runs are ``--config`` (the CPU demo's configs/cpu_demo.yaml: the rule judge trains, bundled 135M
players; or configs/cpu_smoke.yaml), same seed, no validation, in turns in this process (plain,
audited, ``--rounds`` times; the medians are compared), at this machine's thread policy
(``ADVGAME_THREADS``); the audited one re-scores ``--fraction`` of each step's
verdicts with the bundled model as a log-prob LLM judge and mixes 2 master-key canaries into every
judge call. Two ratios: wall time of the audited run / the plain run (both runs' load included),
and inside the audited run, the re-scoring's seconds / the steps' seconds (immune to a neighbour's
load between the runs). Also the run's last agreement and canary figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import describe_machine

from agents.threads import apply_thread_policy
from algorithms.config import load_config
from algorithms.training.runlog import read_metrics
from algorithms.training.trainer import train


def run(config: str, folder: Path, steps: int, audit: list[str]) -> tuple[float, list[dict[str, float]]]:
    cfg = load_config(
        config,
        [f"run.out_dir={folder}", f"run.steps={steps}", "run.validate_every=0", "run.progress=false", *audit],
    )
    started = time.perf_counter()
    train(cfg)
    return time.perf_counter() - started, read_metrics(folder)


def measure(config: str, steps: int, fraction: float, rounds: int) -> dict[str, Any]:
    audit = [
        f"judge.audit.fraction={fraction}",
        "judge.audit.canaries=2",
        f"judge.audit.window={steps}",
        "judge.audit.judge.kind=llm",
        "judge.audit.judge.mode=logprob",
    ]
    plain: list[float] = []
    audited: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            plain.append(run(config, Path(tmp) / f"plain{k}", steps, [])[0])
            seconds, lines = run(config, Path(tmp) / f"audited{k}", steps, audit)
            audited.append(seconds)
    plain_s, audited_s = statistics.median(plain), statistics.median(audited)
    step_s = sum(line["time/step_s"] for line in lines)
    audit_s = sum(line["time/audit_s"] for line in lines)
    last = lines[-1]
    return {
        "config": config,
        "rounds": rounds,
        "plain_runs_s": plain,
        "audited_runs_s": audited,
        "steps": steps,
        "fraction": fraction,
        "plain_s": plain_s,
        "audited_s": audited_s,
        "wall_ratio": audited_s / plain_s,
        "audit_s": audit_s,
        "step_s": step_s,
        "in_run_ratio": (step_s + audit_s) / step_s,
        "rescored": sum(line["audit/rescored"] for line in lines),
        "rescored_fraction": sum(line["audit/rescored_fraction"] for line in lines) / len(lines),
        "last_step": {k: v for k, v in last.items() if k.startswith("audit/")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu_demo.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.005)  # the audited demo run's
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    threads = apply_thread_policy()  # as advgame train: ADVGAME_THREADS, else one thread
    result = (
        {"threads": threads}
        | measure(args.config, args.steps, args.fraction, args.rounds)
        | {"machine": describe_machine()}
    )
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
