"""One decode step's attention (one query position per row over the KV cache) at the CPU demo's
shapes: torch's SDPA kernel (grouped heads in the kernel, as ``agents.hf._gqa_sdpa`` called it
for every step) against the two batched matmuls of ``agents.hf._one_position_attention``.

    python benchmarks/decode_attention.py [--threads 2] [--json FILE]

The bundled model's heads (9 query heads on 3 key/value heads of 64), a boolean padding mask,
16 and 128 rows (the attacker's and the defender's rollout batches), 100 and 300 cached
positions; float32 and bfloat16. The two variants in turns, the median of ``--repeats`` timings of
50 calls each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import describe_machine

from agents.hf import _one_position_attention


def seconds(fn: Any, calls: int = 50) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def one_shape(dtype: torch.dtype, rows: int, positions: int, repeats: int, g: torch.Generator) -> dict[str, Any]:
    query = torch.randn(rows, 9, 1, 64, generator=g).to(dtype)
    key, value = (torch.randn(rows, 3, positions, 64, generator=g).to(dtype) for _ in range(2))
    mask = torch.ones(rows, 1, 1, positions, dtype=torch.bool)
    mask[::2, ..., :10] = False  # every other row left-padded
    variants = {
        "kernel": lambda: torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, enable_gqa=True
        ),
        "by_hand": lambda: _one_position_attention(query, key, value, mask, None),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(repeats):  # in turns
        for name, fn in variants.items():
            times[name].append(seconds(fn))
    k, h = (statistics.median(times[n]) for n in ("kernel", "by_hand"))
    name = str(dtype).removeprefix("torch.")
    return {
        "dtype": name,
        "rows": rows,
        "positions": positions,
        "kernel_ms": k * 1e3,
        "by_hand_ms": h * 1e3,
        "ratio": h / k,
    }


def measure(repeats: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    return [
        one_shape(dtype, rows, positions, repeats, g)
        for dtype in (torch.float32, torch.bfloat16)
        for rows in (16, 128)
        for positions in (100, 300)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "shapes": measure(args.repeats), "machine": describe_machine()}
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
