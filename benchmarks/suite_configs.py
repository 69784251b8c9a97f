"""What `tests/test_selfplay.py::test_every_cpu_config_trains_end_to_end` costs per config before
and after it moved to the tiny chat model (docs/testing.md): the test's own command, run both
ways back to back, timed as the subprocess's CPU seconds (user + system, from ``wait4``) beside
its wall seconds. CPU seconds are what to compare on a shared machine: wall time there depends
on the other work; CPU seconds much less (cache and memory contention remain).

    python benchmarks/suite_configs.py cpu_dpo cpu_grpo [--json FILE]

Not part of run.py (it trains each config twice: minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import describe_machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(command: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:] if process.stderr else ''}"
        )
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "wall_s": round(wall, 1)}


def main() -> None:
    from advgame_env import bundled_seeds
    from agents.testing import tiny_chat_model
    from algorithms.config import load_config
    from tests.test_selfplay import SHRINK, TINY_LLM_JUDGE_KEYS, TINY_MODEL_KEYS

    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="+", help="config names under configs/, e.g. cpu_dpo")
    parser.add_argument("--json")
    args = parser.parse_args()
    tiny = tiny_chat_model([s.prompt for s in bundled_seeds("all")])
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.configs:
        path = ROOT / "configs" / f"{name}.yaml"
        keys = TINY_MODEL_KEYS + (TINY_LLM_JUDGE_KEYS if load_config(path).judge.kind == "llm" else ())
        with tempfile.TemporaryDirectory() as scratch:
            base = [sys.executable, "-m", "algorithms.cli", "train", "--config", str(path)]
            # the test before: 2 steps of 2 seeds a split on the config's own (bundled) model
            shrink = [f"{k}={v}" for k, v in SHRINK.items()]
            before = [*base, f"run.out_dir={scratch}/before", *shrink]
            after = [*base, f"run.out_dir={scratch}/after", *shrink, *(f"{k}={tiny}" for k in keys)]
            results[name] = {"before": timed(before), "after": timed(after)}
        row = results[name]
        ratio = row["before"]["cpu_s"] / row["after"]["cpu_s"]
        print(f"{name}: before {row['before']} after {row['after']}  cpu ratio {ratio:.1f}x", flush=True)
    print(describe_machine())
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe_machine(), "configs": results}, indent=1))


if __name__ == "__main__":
    main()
