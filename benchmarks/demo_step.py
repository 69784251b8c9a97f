"""The CPU demo's training step: float32 against bfloat16 sampling, and bfloat16 sampling and
updates, side by side (issue 35); or this tree against an earlier commit (``--against``).

    python benchmarks/demo_step.py [--json FILE] [--steps 2] [--rounds 1] [--against COMMIT]

Each variant is ``advgame train --config configs/cpu_demo.yaml run.steps=N`` in its own process
at this machine's thread policy (``ADVGAME_THREADS``, default one thread), the variants in turns
(A B C A B C ...), so that a change of load on a shared machine hits each. Per variant: the
median over its steps of each phase's seconds (play, update, step; the trainer's ``time/*``
figures). The recipe is the demo's; only the two dtypes differ:

* ``float32``: ``rollout.hf_dtype=float32``, ``model.precision=fp32`` (the demo before 2026-12-07);
* ``bf16_sampling``: ``rollout.hf_dtype=bfloat16``, updates in float32 (the demo until its updates went bf16);
* ``bf16_sampling_updates``: also ``model.precision=bf16`` (autocast in the updates: the demo's
  ``native`` on a CPU with AVX512-BF16).

bfloat16 here only makes sense where the CPU multiplies it in hardware; elsewhere the row says so.

``--against COMMIT`` runs the demo's recipe as shipped from this tree and from a git worktree of
``COMMIT`` (with this Python), in turns, and reports this tree's phases over the commit's: a
change's effect on the step, measured side by side. The two runs play different samples when the
change moves the random streams (as playing both splits in one call did), so use several steps
and rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import describe_machine

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "float32": ["rollout.hf_dtype=float32", "model.precision=fp32"],
    "bf16_sampling": ["rollout.hf_dtype=bfloat16", "model.precision=fp32"],
    "bf16_sampling_updates": ["rollout.hf_dtype=bfloat16", "model.precision=bf16"],
}
PHASES = ("play", "update", "step")


def train(overrides: list[str], steps: int, folder: Path, tree: Path = ROOT) -> list[dict[str, float]]:
    """The ``time/*`` figures of each step of one short run of the demo's recipe, from ``tree``."""
    command = [
        sys.executable,
        "-m",
        "algorithms.cli",
        "train",
        "--config",
        "configs/cpu_demo.yaml",
        f"run.steps={steps}",
        f"run.out_dir={folder}",
        "run.validate_every=0",
        f"run.checkpoint_every={steps + 1}",
        "run.progress=false",
        *overrides,
    ]
    subprocess.run(command, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    steps = [{k[5:-2]: v for k, v in json.loads(line).items() if k.startswith("time/")} for line in lines]
    return [s for s in steps if s]  # a validation line has no times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--steps", type=int, default=2, help="steps of each run")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant, in turns")
    parser.add_argument("--against", help="a git commit: this tree's demo step against that commit's")
    args = parser.parse_args()
    if args.against:
        result = against(args.against, args.steps, args.rounds)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return
    sys.path.insert(0, str(ROOT))
    from agents.hf import native_bfloat16
    from agents.threads import thread_count

    result: dict[str, Any] = {"machine": describe_machine(), "threads": thread_count(), "steps": args.steps}
    if not native_bfloat16():
        result["skipped"] = "this machine emulates bfloat16 (no AVX512-BF16 or AMX): nothing to compare"
    else:
        seen: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, overrides in VARIANTS.items():
                with tempfile.TemporaryDirectory() as folder:
                    seen[name] += train(overrides, args.steps, Path(folder) / "run")
                print(name, json.dumps(seen[name][-args.steps :]), file=sys.stderr, flush=True)
        for name, steps in seen.items():
            result[name] = {phase: statistics.median(s[phase] for s in steps) for phase in PHASES}
        for name in ("bf16_sampling", "bf16_sampling_updates"):
            result[f"{name}_over_float32"] = {phase: result[name][phase] / result["float32"][phase] for phase in PHASES}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def against(commit: str, steps: int, rounds: int) -> dict[str, Any]:
    """This tree's demo step and ``commit``'s, in turns; the phases' medians and their ratios."""
    sys.path.insert(0, str(ROOT))
    from agents.threads import thread_count

    result: dict[str, Any] = {
        "machine": describe_machine(),
        "threads": thread_count(),
        "steps": steps,
        "rounds": rounds,
    }
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "against"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), commit], cwd=ROOT, check=True)
        try:
            result["against_commit"] = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=worktree, check=True, capture_output=True, text=True
            ).stdout.strip()
            trees = {"this_tree": ROOT, "against": worktree}
            seen: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for k in range(rounds):
                for name, tree in trees.items():
                    seen[name] += train([], steps, Path(scratch) / f"{name}-{k}", tree)
                    print(name, json.dumps(seen[name][-steps:]), file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=True)
    for name, per_step in seen.items():
        result[name] = {phase: statistics.median(s[phase] for s in per_step) for phase in PHASES}
    result["this_tree_over_against"] = {p: result["this_tree"][p] / result["against"][p] for p in PHASES}
    return result


if __name__ == "__main__":
    main()
