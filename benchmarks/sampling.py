"""One decode step's draw (``agents.hf.sample_token``) at the CPU demo's defender batch: 128 rows
(16 prompts x 8 answers) over the bundled model's 49,152-token vocabulary, at the papers' sampling
(temperature 0.6, top-p 0.9; AdvGame's rollouts) and at the demo's (temperature 1, no truncation).

    python benchmarks/sampling.py [--threads 2] [--repeats 5] [--json FILE]

The top-p nucleus found among the 256 most likely tokens (``agents.hf.nucleus``, whole sort only
for a row whose candidates hold no more than top-p) against a whole sort of every row (the way
before 2026-12-07), and both against an untruncated draw; the logits are the bundled model's own
next-token logits after 16 of the demo's requests. The variants in turns, the median of
``--repeats`` timings of 20 calls each; the nucleus of each row is checked to be the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from common import chats, describe_machine

from agents import load_model
from agents.hf import encode, nucleus, pad_rows, render_chat, sample_token

ROWS, ANSWERS, TEMPERATURE, TOP_P = 128, 8, 0.6, 0.9


def whole_sort_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus as ``sample_token`` found it before: a whole sort of every row."""
    ranked, ranking = probs.sort(-1, descending=True)
    return torch.zeros_like(probs, dtype=torch.bool).scatter(-1, ranking, ranked.cumsum(-1) - ranked <= top_p)


def whole_sort_draw(logprobs: torch.Tensor) -> torch.Tensor:
    """``sample_token``'s draw with the whole-sort nucleus: the same draw, only the ranking differs."""
    with mock.patch("agents.hf.nucleus", whole_sort_nucleus):
        return sample_token(logprobs, TEMPERATURE, TOP_P)


def demo_logprobs() -> torch.Tensor:
    model, tokenizer = load_model("smollm2-135m-instruct")
    prompts = [encode(tokenizer, render_chat(tokenizer, c)) for c in chats(ROWS // ANSWERS, "benign")]
    ids, mask = pad_rows(prompts, tokenizer.pad_token_id, left=True)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].float()
    return logits.log_softmax(-1).repeat_interleave(ANSWERS, dim=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logprobs = demo_logprobs()
    probs = (logprobs / TEMPERATURE).softmax(-1)
    same = torch.equal(nucleus(probs, TOP_P), whole_sort_nucleus(probs, TOP_P))
    variants = {
        "candidates": lambda: sample_token(logprobs, TEMPERATURE, TOP_P),
        "whole_sort": lambda: whole_sort_draw(logprobs),
        "untruncated": lambda: sample_token(logprobs, 1.0, 1.0),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.repeats):  # in turns
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(20):
                fn()
            times[name].append((time.perf_counter() - start) / 20)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    result: dict[str, Any] = {
        "threads": args.threads,
        "rows": ROWS,
        "vocab": logprobs.shape[-1],
        "temperature": TEMPERATURE,
        "top_p": TOP_P,
        "ms": ms,
        "same_nucleus": same,
        "nucleus_size_median": float(nucleus(probs, TOP_P).sum(-1).float().median()),
        "machine": describe_machine(),
    }
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
