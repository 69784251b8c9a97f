"""Peak resident memory of the two-player setup: LoRA on one shared base vs separate full models.

    python benchmarks/memory.py [--json FILE]

Each variant runs in a fresh process: it builds the trainer of the CPU demo recipe (attacker
and defender with every copy the algorithm keeps, their optimizers) on the bundled model and
takes one optimizer step per player on a fixed batch of pairs, so gradients and Adam state
exist too. Reported: the process's peak RSS, and the same above the RSS it had after its
imports (Python, torch, transformers), which is what the setup itself costs.

Variants:
  lora         LoRA adapters (learner + EMA per player) on one frozen base: the demo's setup
  full         full fine-tuning, DPO-MD: learner + EMA per player (4 full models)
  full_6       full fine-tuning that also keeps each initial model, as the reference design
               keeps six full copies per rank (algorithm.reference=initial)
  *_gc         the same with activation checkpointing (model.gradient_checkpointing=true)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

VARIANTS = {
    "lora": ["model.lora=true"],
    "full": ["model.lora=false"],
    "full_6": ["model.lora=false", "algorithm.reference=initial"],
}
# and each with activation checkpointing, as both reference designs train
VARIANTS |= {f"{name}_gc": [*o, "model.gradient_checkpointing=true"] for name, o in VARIANTS.items()}
ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(variant: str) -> dict[str, Any]:
    from training import fixed_pairs

    from algorithms.config import load_config
    from algorithms.training.trainer import Trainer

    baseline = rss_mib()
    with tempfile.TemporaryDirectory() as folder:
        overrides = [*VARIANTS[variant], "run.validate_every=0", "run.tensorboard=false", f"run.out_dir={folder}/run"]
        trainer = Trainer(load_config(ROOT / "configs/cpu_demo.yaml", overrides))
        for learner in trainer.learners.values():
            pairs = fixed_pairs(learner.player.tokenizer, 8, 24)
            trainer._update(learner, list(learner.roles), pairs, 0)
            learner.player.ema_update(0.5)
        copies = {name: sorted({"learner", *p.copies}) for name, p in trainer.players.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "variant": variant,
        "peak_mib": peak,
        "baseline_mib": baseline,
        "setup_mib": peak - baseline,
        "copies": copies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="measure one variant in this process")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one(args.variant)))
        return
    from common import describe_machine

    rows = {}
    for variant in VARIANTS:
        done = subprocess.run(
            [sys.executable, __file__, "--variant", variant], capture_output=True, text=True, check=True
        )
        rows[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[variant]), file=sys.stderr, flush=True)
    result = {"machine": describe_machine(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
