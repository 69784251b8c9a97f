"""Compare game algorithms, picked by name from the registry, over seeds: a thin call of
``advgame compare`` (algorithms/evaluation/compare.py), which trains, evaluates and tabulates.

    python examples/compare_algorithms.py                 # bundled model, 3 steps, 2 seeds each
    python examples/compare_algorithms.py --steps 10 --run-seeds 3 --model path/to/model
    python examples/compare_algorithms.py --algorithms dpo grpo hinge --plugin examples/custom_algorithm.py

An entry is an algorithm's registered name (built-in, from ``--plugin``, or an installed
package's ``advgame.algorithms`` entry point), optionally with a schedule: ``NAME@alternate``
trains it as a sequential baseline (``train.schedule: alternate``, one step per turn), likewise
``@attacker`` / ``@defender``. The default compares AdvGame-DPO-MD, Self-RedTeam and the
sequential DPO-MD baseline. Each entry becomes one compared config: its CPU recipe
(``configs/cpu_<name>.yaml`` where one is shipped, else ``configs/cpu_smoke.yaml``) with the
entry's algorithm and schedule as overrides; every config is trained from the same start under
the same run seeds for the same number of steps, then its final pair is measured alike (held-out
harmful compliance and benign refusal, the attacker against the initial defender, best-response
exploitability, cross-play ratings). The table (mean and 95 % t-interval over seeds) is
``OUT/comparison.md``; the same command line:

    advgame compare --config cpu_smoke.yaml --config cpu_self_redteam.yaml --run-seeds 2 --steps 3
"""

from __future__ import annotations

import argparse
import sys

from algorithms.evaluation.compare import CompareConfig, Entry, compare
from algorithms.training.algorithm import load_plugin, names

# the shipped CPU recipe of an algorithm, where its knobs or game differ from the smoke run's
RECIPES = {
    "self_redteam": "cpu_self_redteam.yaml",
    "grpo": "cpu_grpo.yaml",
    "dpo": "cpu_dpo.yaml",
    "advgame_ipo_md": "cpu_ipo_md.yaml",
}
DEFAULT = ["advgame_dpo_md", "self_redteam", "advgame_dpo_md@alternate"]


def entry(text: str) -> Entry:
    """The compared config of ``NAME`` or ``NAME@SCHEDULE``: its recipe, label and overrides."""
    name, _, schedule = text.partition("@")
    known = names()
    if name not in known:
        sys.exit(f"compare_algorithms: no algorithm {name!r}; known: {', '.join(known)} (or give --plugin)")
    overrides = [f"algorithm.name={name}"]
    label = name
    if schedule:
        overrides += [f"train.schedule={schedule}", "train.period=1"]
        label = f"{name}_sequential" if schedule == "alternate" else f"{name}_{schedule}_only"
    return Entry(RECIPES.get(name, "cpu_smoke.yaml"), label, tuple(overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--run-seeds", type=int, default=2)  # as advgame compare's: training seeds 0 .. N-1
    parser.add_argument("--exploit-budget", type=int, default=1)  # 0: no exploitability
    # as advgame compare's: budgets in held-out requests (prompts), not seeds
    parser.add_argument("--eval-prompts", type=int, default=24)
    parser.add_argument("--attack-prompts", type=int, default=8)  # 0: no attacker column
    parser.add_argument("--exploit-prompts", type=int, default=8)
    parser.add_argument("--crossplay-prompts", type=int, default=16)  # 0: no cross-play
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--algorithms", nargs="+", default=DEFAULT, metavar="NAME[@SCHEDULE]")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE")
    args = parser.parse_args()
    for plugin in args.plugin:
        load_plugin(plugin)
    result = compare(
        CompareConfig(
            configs=tuple(entry(e) for e in args.algorithms),
            seeds=args.run_seeds,
            steps=args.steps,
            exploit_budget=args.exploit_budget,
            eval_prompts=args.eval_prompts,
            attack_prompts=args.attack_prompts,
            exploit_prompts=args.exploit_prompts,
            crossplay_prompts=args.crossplay_prompts,
            out=args.out,
            overrides=(f"model.name={args.model}", "run.progress=false", "run.tensorboard=false"),
        )
    )
    print(f"\n{args.steps} steps each, run seeds {list(result.seeds)}, model {args.model}\n")
    print("| algorithm | " + " | ".join(result.columns) + " |")
    print("|---" * (len(result.columns) + 1) + "|")
    for label in result.labels:
        print(f"| {label} | " + " | ".join(str(result.rows[label][c]) for c in result.columns) + " |")
    print(f"\nreport with the plane of every seed: {result.folder / 'comparison.md'}")


if __name__ == "__main__":
    main()
