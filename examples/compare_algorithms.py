"""Compare game algorithms, picked by name from the registry, on the same seeds and budget.

    python examples/compare_algorithms.py                 # bundled model, 3 steps each (~6 min on 2 cores)
    python examples/compare_algorithms.py --steps 10 --model path/to/model
    python examples/compare_algorithms.py --algorithms dpo grpo hinge --plugin examples/custom_algorithm.py

An entry is an algorithm's registered name (built-in, from ``--plugin``, or an installed
package's ``advgame.algorithms`` entry point), optionally with a schedule: ``NAME@alternate``
trains it as a sequential baseline (``train.schedule: alternate``, one step per turn), likewise
``@attacker`` / ``@defender``. The default compares AdvGame-DPO-MD, Self-RedTeam and the
sequential DPO-MD baseline. Each algorithm starts from its CPU recipe (``configs/cpu_<name>.yaml``
where one is shipped, else ``configs/cpu_smoke.yaml``) and trains from the same start on the same
seed stream (same run seed) for the same number of steps, with the same token budgets; then the
trained defender answers the same held-out seeds greedily. One Markdown table of game figures is
printed:

  defender reward  the judge's mean reward of the defender during training (its own scale per
                   reward rule: AdvGame's 0-10 rubric scores vs Self-RedTeam's ±3 table)
  refusal          held-out refusal rates (keyword detector) after training, harmful / benign
  attack valid     share of attacker outputs that were well formed and faithful
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from algorithms.config import load_config
from algorithms.training.algorithm import load_plugin, names
from algorithms.training.runlog import read_metrics
from algorithms.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
# the shipped CPU recipe of an algorithm, where its knobs or game differ from the smoke run's
RECIPES = {
    "self_redteam": "configs/cpu_self_redteam.yaml",
    "grpo": "configs/cpu_grpo.yaml",
    "dpo": "configs/cpu_dpo.yaml",
    "advgame_ipo_md": "configs/cpu_ipo_md.yaml",
}
DEFAULT = ["advgame_dpo_md", "self_redteam", "advgame_dpo_md@alternate"]


def plan(entry: str) -> tuple[str, str, list[str]]:
    """(row label, config file, overrides) of an entry ``NAME`` or ``NAME@SCHEDULE``."""
    name, _, schedule = entry.partition("@")
    known = names()
    if name not in known:
        sys.exit(f"compare_algorithms: no algorithm {name!r}; known: {', '.join(known)} (or give --plugin)")
    overrides = [f"algorithm.name={name}"]
    label = name
    if schedule:
        overrides += [f"train.schedule={schedule}", "train.period=1"]
        label = f"{name}, sequential ({schedule})" if schedule == "alternate" else f"{name}, {schedule} only"
    return label, RECIPES.get(name, "configs/cpu_smoke.yaml"), overrides


def run(entry: str, args: argparse.Namespace) -> tuple[str, dict[str, float]]:
    label, config, overrides = plan(entry)
    out = Path(args.out) / entry.replace("@", "_")
    overrides += [
        f"model.name={args.model}",
        f"run.out_dir={out}",
        f"run.steps={args.steps}",
        f"run.seed={args.seed}",
        f"run.validate_every={args.steps}",  # held-out figures before and after training
        f"run.checkpoint_every={args.steps}",
        "run.progress=false",
        "run.tensorboard=false",
    ]
    Trainer(load_config(ROOT / config, overrides)).train()
    metrics = read_metrics(out)
    training = [m for m in metrics if any(k.startswith("game") for k in m)]
    final = [m for m in metrics if "val/refusal_harmful" in m][-1]

    def mean(key: str) -> float:
        values = [m[key] for m in training if key in m]
        return statistics.fmean(values) if values else float("nan")

    return label, {
        "defender reward": mean("game/defender_reward"),
        "attack valid": mean("game/attacker_valid"),
        "refusal harmful": final.get("val/refusal_harmful", float("nan")),
        "refusal benign": final.get("val/refusal_benign", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--algorithms", nargs="+", default=DEFAULT, metavar="NAME[@SCHEDULE]")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE")
    args = parser.parse_args()
    for plugin in args.plugin:
        load_plugin(plugin)
    results = dict(run(entry, args) for entry in args.algorithms)
    columns = list(next(iter(results.values())))
    print(f"\n{args.steps} steps each, run seed {args.seed}, model {args.model}\n")
    print("| algorithm | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    Path(args.out, "comparison.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
