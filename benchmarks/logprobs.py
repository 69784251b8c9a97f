"""Peak memory of per-token log-probs: chunked (``agents.hf.TargetLogprobs``, the default) / the
model's full [positions x vocabulary] logits, on the bundled model (SmolLM2-135M, vocabulary
49,152), one forward + backward of a micro-batch as the update runs it.

    python benchmarks/logprobs.py [--batch 8] [--prompt 64] [--completion 448] [--no-checkpointing] [--json FILE]

Each path runs in a fresh process (peak RSS is per process): load the model, note the RSS,
compute the log-probs of ``batch`` continuations, backward their sum, then read the peak RSS.
Reported: the peak above the RSS before the call, per path, their ratio, and the largest
difference of the summed log-probs and of any gradient element between the two paths.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(path: str, batch: int, prompt: int, completion: int, checkpointing: bool, grads_out: str) -> dict[str, Any]:
    import random

    import torch

    from agents import DEFAULT_MODEL, load_model
    from agents.hf import token_logprobs

    torch.manual_seed(0)
    model, tokenizer = load_model(DEFAULT_MODEL)
    model.train()  # as in an update (transformers checkpoints layers only in training mode; no dropout here)
    if checkpointing:  # as the paper recipes train: the decoder's activations are then small
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rng = random.Random(0)
    vocabulary = int(model.config.vocab_size)
    pairs = [
        (
            [rng.randrange(3, vocabulary) for _ in range(prompt)],
            [rng.randrange(3, vocabulary) for _ in range(completion)],
        )
        for _ in range(batch)
    ]
    before = rss_mib()
    kwargs: dict[str, Any] = {"chunk_logits": None} if path == "full" else {}  # chunked: the default
    logps, mask = token_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, max_context=prompt + completion, **kwargs)
    total = (logps * mask).sum()
    total.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, grads_out)
    return {
        "peak_above_mib": peak - before,
        "logp_sum": float(total),
        "vocabulary": vocabulary,
        "scored": int(mask.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--completion", type=int, default=448)
    parser.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", choices=["full", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--grads", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.batch, args.prompt, args.completion, args.checkpointing, args.grads)))
        return

    import tempfile

    import torch
    from common import describe_machine

    out: dict[str, Any] = {
        "machine": describe_machine(),
        "batch": args.batch,
        "positions": args.prompt + args.completion,
    }
    out["checkpointing"] = args.checkpointing
    with tempfile.TemporaryDirectory() as folder:
        for path in ("full", "chunked"):
            command = [sys.executable, __file__, "--one", path, "--grads", f"{folder}/{path}.pt"]
            command += ["--batch", str(args.batch), "--prompt", str(args.prompt), "--completion", str(args.completion)]
            command += ["--checkpointing" if args.checkpointing else "--no-checkpointing"]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            out[path] = json.loads(done.stdout.strip().splitlines()[-1])
        full, chunked = torch.load(f"{folder}/full.pt"), torch.load(f"{folder}/chunked.pt")
    out["max_grad_difference"] = max(float((full[n] - chunked[n]).abs().max()) for n in full)
    out["max_grad"] = max(float(g.abs().max()) for g in full.values())
    out["logp_sum_difference"] = abs(out["full"]["logp_sum"] - out["chunked"]["logp_sum"])
    out["peak_ratio"] = out["chunked"]["peak_above_mib"] / out["full"]["peak_above_mib"]
    print(
        f"{out['machine']}\nbatch {args.batch} x {out['positions']} positions, vocabulary {out['full']['vocabulary']},"
        f" activation checkpointing {'on' if args.checkpointing else 'off'}:"
        f" peak above the model: chunked {out['chunked']['peak_above_mib']:.0f} MiB / full logits"
        f" {out['full']['peak_above_mib']:.0f} MiB = {out['peak_ratio']:.3f}; summed log-prob"
        f" {out['full']['logp_sum']:.4f} vs {out['chunked']['logp_sum']:.4f} (difference {out['logp_sum_difference']:.2e});"
        f" largest gradient difference {out['max_grad_difference']:.2e} (largest element {out['max_grad']:.2e})"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
