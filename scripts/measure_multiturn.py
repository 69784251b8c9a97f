"""The measured tables of docs/multiturn.md: a 2-turn training run of the CPU demo's recipe, then
its attacker and defender beside the single-turn CPU demo's and the Crescendo-style baseline.

    python scripts/measure_multiturn.py train  --out runs/multiturn_measure --single-turn runs/cpu_demo
    python scripts/measure_multiturn.py eval   --out runs/multiturn_measure
    python scripts/measure_multiturn.py tables --out runs/multiturn_measure

``train`` copies the single-turn run (a finished ``advgame demo`` folder) into OUT/single_turn (its
exports are written into the copy, never into the original) and runs ``configs/cpu_multiturn.yaml``
into OUT/train with the attacker starting from the single-turn run's final attacker (the untrained
135M attacker writes no valid opener, so a fresh run would not reach turn 2 in a few steps) and
the defender from the bundled model. ``eval`` runs, every one on the same held-out harmful seeds,
up to 2 turns, the model-free judge, 64-token turns (the redteam command has one budget for both
sides), in two chains side by side:

  (a) against the INITIAL defender (the bundled model): the multi-turn attacker, the single-turn
      attacker and the Crescendo-style baseline (``advgame redteam --turns 2``);
  (b) the Crescendo-style baseline against the multi-turn defender and the single-turn defender,
      and the three defenders' held-out harmful compliance and benign refusal (``advgame eval``,
      greedy 64-token answers to the 169 held-out seeds, as ``advgame demo``).

``tables`` prints the markdown tables, with both runs' mean step time (``time/step_s`` in each
run's metrics.jsonl). Every command is printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

CONFIG = "configs/cpu_multiturn.yaml"
BASE = "smollm2-135m-instruct"  # the initial defender (and attacker) of both runs: LoRA on the bundled model
TURNS = 2
SEEDS = 24  # held-out harmful seeds, the same for every row
SAMPLES = 2  # attacker samples per seed; the scripted baseline is deterministic: one
TOKENS = 64  # the demo's attacker budget, and its evaluation's answer budget


Command = list[str]


def advgame(*args: str) -> None:
    print("$ advgame " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "algorithms.cli", *args], check=True)


def in_two_chains(commands: list[Command]) -> None:
    """The commands in two chains side by side, one CPU thread each (the machine has two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    def chain(part: list[Command]) -> None:
        for command in part:
            advgame(*command)

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(chain, commands[0::2]), pool.submit(chain, commands[1::2])]:
            done.result()


def last_export(run: Path, role: str) -> str:
    """The run's ``role`` at its last checkpoint as a loadable folder (exported once, inside ``run``)."""
    from algorithms.evaluation.evaluate import checkpoint_models

    return checkpoint_models(run, role, steps="last")[-1][1]


def redteam(out: Path, name: str, attacker: str, target: str) -> Command:
    samples = 1 if attacker == "crescendo" else SAMPLES
    think = [] if attacker == "crescendo" else ["--no-think"]
    return [
        "redteam", "--attacker", attacker, "--target", target, "--turns", str(TURNS), "--limit", str(SEEDS),
        "--samples", str(samples), "--max-tokens", str(TOKENS), *think, "--no-embeddings",
        "--out", str(out / name),
    ]  # fmt: skip


def train(out: Path, single_turn: Path, steps: int | None) -> None:
    copy = out / "single_turn"
    if not copy.exists():
        shutil.copytree(single_turn, copy, ignore=shutil.ignore_patterns("tensorboard", "eval"))
    start = last_export(copy, "attacker")
    extra = [f"run.steps={steps}", f"run.checkpoint_every={steps}", f"run.validate_every={steps}"] if steps else []
    advgame("train", "--config", CONFIG, f"run.out_dir={out / 'train'}", f"roles.attacker.model={start}", *extra)


def evaluate(out: Path) -> None:
    copy = out / "single_turn"
    runs = {"multi_turn": out / "train", "single_turn": copy}
    attackers = {name: last_export(run, "attacker") for name, run in runs.items()}
    defenders = {name: last_export(run, "defender") for name, run in runs.items()}
    (out / "models.json").write_text(json.dumps({"attackers": attackers, "defenders": defenders}, indent=2))
    commands = [redteam(out, f"redteam_{name}_vs_initial", a, BASE) for name, a in attackers.items()]
    commands.append(redteam(out, "redteam_crescendo_vs_initial", "crescendo", BASE))
    commands += [redteam(out, f"redteam_crescendo_vs_{name}", "crescendo", d) for name, d in defenders.items()]
    for name, model in (("initial", BASE), *defenders.items()):
        commands.append(["eval", "--model", model, "--max-tokens", str(TOKENS), "--out", str(out / f"eval_{name}")])
    in_two_chains(commands)


def _rate(rate: dict[str, float] | None) -> str:
    if not rate:
        return "n/a"
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}] (n={rate['n']})"


def _by_turn(folder: Path, every_sample: bool) -> list[str]:
    """Per turn t, the share of harmful conversations broken at or before t: of the judged, valid
    ones (the report's "broken by turn t"), or of every sample (an invalid one counts as a failure).
    Counted here because the report stops at the last turn any conversation reached."""
    from advgame_env.metrics import rate

    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    attacks = [r for r in rows if not r["direct"] and r["label"] == "harmful"]
    if not every_sample:
        attacks = [r for r in attacks if r["valid"] and r["success"] is not None]
    return [
        str(rate(sum(r["success_turn"] is not None and r["success_turn"] <= t for r in attacks), len(attacks)))
        for t in range(1, TURNS + 1)
    ]


def _step_seconds(run: Path) -> str:
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [s["time/step_s"] for s in steps if "time/step_s" in s]
    return f"{sum(seconds) / len(seconds):.0f} s (mean of {len(seconds)} steps)" if seconds else "n/a"


def tables(out: Path) -> None:
    turns = " | ".join(f"broken by turn {t}" for t in range(1, TURNS + 1))
    every = " | ".join(f"by turn {t}, every sample" for t in range(1, TURNS + 1))
    print(f"| attacker (vs the initial defender) | attack validity | {turns} | {every} |")
    print("|---" * (2 + 2 * TURNS) + "|")
    attackers = (
        ("multi_turn", "multi-turn trained"),
        ("single_turn", "single-turn demo"),
        ("crescendo", "Crescendo-style"),
    )
    for name, label in attackers:
        folder = out / f"redteam_{name}_vs_initial"
        validity = _rate(json.loads((folder / "summary.json").read_text())["rates"].get("attack validity"))
        cells = [validity, *_by_turn(folder, every_sample=False), *_by_turn(folder, every_sample=True)]
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    measures = ("harmful compliance", "benign refusal", "benign-but-scary refusal")
    print(f"| defender | {' | '.join(measures)} | Crescendo-style: {turns} |")
    print("|---" * (1 + len(measures) + TURNS) + "|")
    for name, label in (
        ("initial", "initial"),
        ("multi_turn", "multi-turn trained"),
        ("single_turn", "single-turn demo"),
    ):
        held_out = json.loads((out / f"eval_{name}" / "summary.json").read_text())
        cells = [_rate(held_out.get(m)) for m in measures]
        cells += _by_turn(out / f"redteam_crescendo_vs_{name}", every_sample=False)
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    print(f"step time: multi-turn {_step_seconds(out / 'train')}, single-turn {_step_seconds(out / 'single_turn')}")
    steps = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    played = [f"{s['step']}: {s.get('game/conversations_past_turn_1', 'n/a')}" for s in steps if "game/rounds" in s]
    print(f"multi-turn run, attacked conversations answered past turn 1, by step: {', '.join(played)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("train", "eval", "tables"))
    parser.add_argument("--out", type=Path, default=Path("runs/multiturn_measure"))
    parser.add_argument("--single-turn", type=Path, default=Path("runs/cpu_demo"), help="train: the single-turn run")
    parser.add_argument("--steps", type=int, default=None, help="train: override run.steps")
    args = parser.parse_args()
    if args.stage == "train":
        train(args.out, args.single_turn, args.steps)
    elif args.stage == "eval":
        evaluate(args.out)
    else:
        tables(args.out)


if __name__ == "__main__":
    main()
