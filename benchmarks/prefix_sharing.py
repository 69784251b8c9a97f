"""The update's forwards and backwards with and without the shared-prefix cache (issue 35), side
by side, on the CPU demo's workloads.

    python benchmarks/prefix_sharing.py [--json FILE] [--repeats 5]

``agents.hf.shared_prompt_cache`` encodes once the tokens every prompt of a batch starts with,
and those each group of prompts that agree on the next token starts with (the attacker's two
instruction templates, 150-158 of their about 205 tokens), where that saves 512 positions or
more, where before it encoded only whole prompts that repeat. ``off`` restores that
(``MIN_SAVED_POSITIONS`` out of reach). The workloads are those of one demo update, built from the bundled SFT
files so that they are the same every run (a demo step's pairs differ from run to run):

* ``attacker_sft`` / ``defender_sft``: an SFT batch of 8 (``algorithm.sft_batch_size``), drawn
  with a fixed seed: both templates of the attacker's, mixed;
* ``attacker_pairs``: 8 preference pairs of one split's attacker (one template, a different
  request each, two rewrites of 34 tokens on average).

Each: the summed log-probs of the demo's LoRA player (rank 16) under bfloat16 autocast where
the CPU multiplies bfloat16 (the demo's ``model.precision: native``), then their backward; the
variants in turns, the median of ``--repeats`` of each, at this machine's thread policy
(``ADVGAME_THREADS``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

from common import describe_machine

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "algorithms" / "configs" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from agents import load_model
    from agents.hf import native_bfloat16, token_logprobs
    from agents.roles import shared_base_players
    from agents.threads import apply_thread_policy
    from algorithms.training.sft import load_sft

    threads = apply_thread_policy()
    base, tokenizer = load_model()
    model = shared_base_players(base, rank=16, alpha=32)
    model.set_adapter("attacker")
    rng = random.Random(0)
    attacker = load_sft(DATA / "cpu_demo_attacker_sft.jsonl", tokenizer)
    defender = load_sft(DATA / "cpu_demo_sft.jsonl", tokenizer)
    harmful = [e for e in attacker if "harmless request" not in tokenizer.decode(e.prompt_ids)]
    pairs = [
        (e.prompt_ids, c)
        for e, other in zip(harmful[:8], harmful[8:16], strict=True)
        for c in (e.target_ids, other.target_ids)
    ]
    workloads = {
        "attacker_sft": [(e.prompt_ids, e.target_ids) for e in rng.sample(attacker, 8)],
        "defender_sft": [(e.prompt_ids, e.target_ids) for e in rng.sample(defender, 8)],
        "attacker_pairs": pairs,
    }
    autocast = native_bfloat16()

    def run(rows: list[tuple[list[int], list[int]]]) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            logps, mask = token_logprobs(model, rows, pad_id=tokenizer.pad_token_id, max_context=2048)
        (logps * mask).sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    result: dict[str, Any] = {"machine": describe_machine(), "threads": threads, "bfloat16": autocast}
    for name, rows in workloads.items():
        tokens = sum(len(p) + len(c) for p, c in rows)
        seconds: dict[str, list[float]] = {"on": [], "off": []}
        run(rows)  # warm-up
        for _ in range(args.repeats):
            seconds["on"].append(run(rows))
            with mock.patch("agents.hf.MIN_SAVED_POSITIONS", 10**12):
                seconds["off"].append(run(rows))
        on, off = statistics.median(seconds["on"]), statistics.median(seconds["off"])
        result[name] = {"rows": len(rows), "tokens": tokens, "on_s": on, "off_s": off, "ratio": on / off}
        print(name, json.dumps(result[name]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
