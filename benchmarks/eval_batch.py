"""The CPU demo's greedy evaluation at two batch sizes, side by side (issue 35).

    python benchmarks/eval_batch.py [--json FILE] [--small 16] [--large 64] [--rounds 2]

``advgame demo`` answers the 169 held-out seeds with the bundled model in float32, greedily, 64
tokens each, before and after training. A decode step's cost on a CPU is mostly per-step work
(every weight read, every op dispatched) until a batch is large, so ``HFBackend``'s batch sets
most of the evaluation's time. Here: the same generation at ``--small`` and ``--large`` rows a
batch, in turns, the median of each; and how many of the answers are the same text (left
padding changes float summation order only).

The demo's red-team runs (``heldout.attacker_rows``: the attacker at the start and at the end,
24 held-out harmful seeds x 2 samples) are mostly the attacker writing 48 rewrites, sampled, 64
tokens each; they went from batches of 16 to one batch (``HFBackend``'s 64). The same rewrites
at the two batch sizes, in turns: ``attacker_small_s``, ``attacker_large_s``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import describe_machine

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--small", type=int, default=16)
    parser.add_argument("--large", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from advgame_env import GameConfig, Label
    from agents import HFBackend, load_model
    from agents.threads import apply_thread_policy
    from algorithms.evaluation.heldout import heldout

    threads = apply_thread_policy()  # ADVGAME_THREADS, as advgame demo
    chats = [[{"role": "user", "content": s.prompt}] for s in heldout(None)]
    model, tokenizer = load_model()
    seconds: dict[int, list[float]] = {args.small: [], args.large: []}
    answers: dict[int, list[str]] = {}
    for _ in range(args.rounds):
        for size in seconds:
            backend = HFBackend(model, tokenizer, batch_size=size)
            start = time.perf_counter()
            answers[size] = [g.text for g in backend.generate(chats, max_tokens=args.tokens, temperature=0.0)]
            seconds[size].append(time.perf_counter() - start)
            print(size, f"{seconds[size][-1]:.1f} s", file=sys.stderr, flush=True)
    attacker: dict[int, list[float]] = {args.small: [], args.large: []}
    templates = GameConfig().templates
    harmful = [s for s in heldout(None) if s.label is Label.HARMFUL][:24]
    tasks = [[{"role": "user", "content": templates.attacker_task(s.prompt, s.label, False)}] for s in harmful] * 2
    for _ in range(args.rounds):
        for size in attacker:
            backend = HFBackend(model, tokenizer, batch_size=size)
            start = time.perf_counter()
            backend.generate(tasks, max_tokens=args.tokens, temperature=1.0, seed=0)
            attacker[size].append(time.perf_counter() - start)
            print("attacker", size, f"{attacker[size][-1]:.1f} s", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "machine": describe_machine(),
        "threads": threads,
        "prompts": len(chats),
        "tokens": args.tokens,
        "small": args.small,
        "large": args.large,
        "small_s": statistics.median(seconds[args.small]),
        "large_s": statistics.median(seconds[args.large]),
        "same_answers": sum(a == b for a, b in zip(answers[args.small], answers[args.large], strict=True)),
        "attacker_rewrites": len(tasks),
        "attacker_small_s": statistics.median(attacker[args.small]),
        "attacker_large_s": statistics.median(attacker[args.large]),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
