"""Where a trained defender's over-refusal comes from: its refusal rate on benign requests read
four ways, at the start and at the last checkpoint of a run.

    ADVGAME_THREADS=2 python scripts/refusal_diagnostic.py RUN_DIR [--steps 0,last] [--samples 8]

For each of held-out vanilla benign, held-out benign-but-scary, 96 *training* vanilla benign and
held-out harmful seeds: the share of answers the model-free judge reads as a refusal (or
deflection), greedy at 64 tokens (the demo's evaluation) and at 24 (the demo's training length),
and sampled (``--samples`` answers per request, 24 tokens) at temperature 1 (the demo's) and 0.7;
and the share of greedy answers that refuse only after 24 tokens (a refusal phrase after a
helpful opening). Greedy equal to sampled says the refusals are the policy's own probability,
not a mode greedy decoding picks; a training-seed rate equal to the held-out one says it is not
a generalisation gap (docs/results/index.md, "Next recipe", for what it found on the demo).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advgame_env import Label, Seed, bundled_seeds
from advgame_env.rule_judge import Behaviour, behaviour
from agents import HFBackend, load_model
from agents.threads import apply_thread_policy
from algorithms.evaluation.evaluate import checkpoint_models


def refused(texts: list[str]) -> float:
    return sum(behaviour(t) is not Behaviour.COMPLIANCE for t in texts) / len(texts)


def seed_sets() -> dict[str, list[Seed]]:
    heldout, train = bundled_seeds("heldout"), bundled_seeds("train")
    return {
        "heldout_benign": [s for s in heldout if s.label is Label.BENIGN and s.subtype != "scary"],
        "heldout_scary": [s for s in heldout if s.label is Label.BENIGN and s.subtype == "scary"],
        "train_benign": [s for s in train if s.label is Label.BENIGN and s.subtype != "scary"][:96],
        "heldout_harmful": [s for s in heldout if s.label is Label.HARMFUL],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", default="0,last")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    apply_thread_policy()
    out: dict[str, dict[str, float]] = {}
    for name, model in checkpoint_models(args.run, "defender", steps=args.steps):
        backend = HFBackend(*load_model(model), batch_size=128)
        for label, seeds in seed_sets().items():
            chats = [[{"role": "user", "content": s.prompt}] for s in seeds]
            long, short = (backend.generate(chats, max_tokens=n, temperature=0.0) for n in (64, 24))
            row = {"greedy_64": refused([g.text for g in long]), "greedy_24": refused([g.text for g in short])}
            late = [a for a, b in zip(long, short, strict=True) if refused([a.text]) and not refused([b.text])]
            row["late_refusals"] = len(late) / len(long)
            many = [c for c in chats for _ in range(args.samples)]
            for temperature in (1.0, 0.7):
                sampled = backend.generate(many, max_tokens=24, temperature=temperature, seed=0)
                row[f"sampled_24_t{temperature}"] = refused([g.text for g in sampled])
            out[f"{name}/{label}"] = row
            print(name, label, len(seeds), {k: round(v, 3) for k, v in row.items()}, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
