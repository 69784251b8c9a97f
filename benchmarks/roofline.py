"""How far the CPU demo's rollout and update are from what this machine can do (issue 35).

    python benchmarks/roofline.py [--json FILE] [--only matmul bandwidth rollout update]

* ``matmul``: the machine's matmul throughput at the bundled model's shapes (its linear layers
  and vocabulary projection, at the rollout's 128 rows and the update's ~2k tokens), in float32
  and bfloat16. The best shape of each dtype is the peak the other rows are fractions of.
* ``bandwidth``: memory bandwidth of a 512 MiB copy (read + write), and the decoding rate it
  caps at the demo's batch (every step reads the weights once for all rows).
* ``rollout``: the demo's defender call (``HFBackend.generate``, 16 prompts x 8 answers in one
  128-row batch, 24 tokens, temperature 1) on the bundled model, with the shared prompt encoded
  once per group (today) and once per row (before), and with grouped-query attention in the
  SDPA kernel (today) and transformers' copy of the KV heads (before): generated tokens/s, the model FLOP/s
  (2·N per generated token) and the FLOP/s computed (torch's FLOP counter) as fractions of the
  float32 peak; and a bfloat16 copy of the model against the float32 one, same call.
* ``update``: one AdvGame-DPO-MD micro-batch of the demo (16 pairs, 24-token answers, LoRA
  rank 16 on the shared base, the EMA adapter as reference) through ``PreferenceOptimization.loss``
  and backward: FLOP/s counted as it computes (reference forward without autograd, learner
  forward, backward without the frozen base's weight gradients) and the issue's nominal
  6·N·tokens, as fractions of the float32 peak; the same with full fine-tuning for comparison.

Every figure here is measured in one process, the ratios side by side; absolute figures are
for the machine line (and move with other work on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from common import chats, describe_machine
from torch.utils.flop_counter import FlopCounterMode

from agents import HFBackend, load_model
from agents.hf import SamplingCopy
from algorithms.algorithm_configs import DPOMDConfig
from algorithms.training.preference import PreferenceOptimization

ROWS, ANSWERS, MAX_TOKENS = (
    128,
    8,
    24,
)  # configs/cpu_demo.yaml: rollout.batch_size, game.num_responses, roles.defender.max_tokens
MICRO_PAIRS = 16  # optim.micro_batch_size
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def timed(fn: Callable[[], Any], min_seconds: float = 0.3, least: int = 3) -> float:
    """Median seconds of one call after a warm-up, over as many calls as fill ``min_seconds``
    (at least ``least``)."""
    fn()
    times: list[float] = []
    while len(times) < least or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def model_shapes(config: Any) -> dict[str, tuple[int, int]]:
    """(in, out) of each distinct linear layer of a Llama-shaped model, and its vocabulary projection."""
    heads, kv, d = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
    kv_width = d // heads * kv
    return {
        "q/o": (d, d),
        "k/v": (d, kv_width),
        "gate/up": (d, config.intermediate_size),
        "down": (config.intermediate_size, d),
        "vocab": (d, config.vocab_size),
    }


def matmul(config: Any, rows: int = ROWS, tokens: int = 2048) -> dict[str, Any]:
    """GFLOP/s of each shape at the rollout's rows and the update's tokens, per dtype."""
    out: dict[str, Any] = {}
    for name, dtype in DTYPES.items():
        per_shape = {}
        for m in (rows, tokens):
            if m == tokens and name != "float32" and max(per_shape.values()) < out["float32"]["peak_gflops"]:
                break  # emulated on this CPU: its large shapes would take minutes and say the same
            for shape, (k, n) in model_shapes(config).items():
                x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
                seconds = timed(lambda x=x, w=w: torch.nn.functional.linear(x, w), least=1)
                per_shape[f"{m}x{shape}"] = 2 * m * k * n / seconds / 1e9
        out[name] = {"gflops": per_shape, "peak_gflops": max(per_shape.values())}
    out["bf16_over_fp32"] = out["bfloat16"]["peak_gflops"] / out["float32"]["peak_gflops"]
    return out


def bandwidth(mib: int = 512) -> dict[str, Any]:
    source = torch.ones(mib * 2**20 // 4)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), min_seconds=1.0)
    return {"copy_mib": mib, "gb_per_s": 2 * source.numel() * 4 / seconds / 1e9}


def demo_chats(rows: int) -> list[list[dict[str, str]]]:
    """The defender's call of one demo batch: each prompt asked ``ANSWERS`` times in a row."""
    return [c for c in chats(rows // ANSWERS, "harmful") for _ in range(ANSWERS)]


def rollout(model: Any, tokenizer: Any, peak: dict[str, float], batch: int, repeats: int) -> dict[str, Any]:
    n = sum(p.numel() for p in model.parameters())
    rows = demo_chats(batch)

    def run(backend: HFBackend) -> dict[str, Any]:
        with FlopCounterMode(display=False) as counter:  # a few µs per op: the same for every variant
            start = time.perf_counter()
            out = backend.generate(rows, max_tokens=MAX_TOKENS, temperature=1.0, seed=0)
            seconds = time.perf_counter() - start
        # a row that stopped also computed its stop token
        tokens = sum(len(g.token_ids) + (g.finish_reason == "stop") for g in out)
        return {"s": seconds, "tokens": tokens, "flops": counter.get_total_flops(), "ids": [g.token_ids for g in out]}

    variants = {
        "shared": HFBackend(model, tokenizer, batch_size=batch),
        "per_row": HFBackend(model, tokenizer, batch_size=batch, share_prompts=False),
        "repeat_kv": HFBackend(model, tokenizer, batch_size=batch),  # transformers' copy of KV heads
    }
    variants["repeat_kv"].gqa_in_kernel = False
    # bfloat16 only where its matmuls beat float32's (CPUs with AVX512-BF16 or AMX); elsewhere
    # torch emulates it and a rollout would take many times as long
    bf16_fast = peak["bfloat16"] > peak["float32"]
    if bf16_fast:
        # as rollout.hf_dtype bfloat16 samples: a bfloat16 copy of the float32 model
        variants["bf16_shared"] = HFBackend(model, tokenizer, batch_size=batch, sampling_copy=SamplingCopy(model))
    for backend in variants.values():
        backend.generate(rows[:ANSWERS], max_tokens=2, seed=0)  # warm-up: first-call allocations
    # in turns (A B C A B C ...), so that a change of load on a shared machine hits every variant
    runs = [{name: run(backend) for name, backend in variants.items()} for _ in range(repeats)]
    got = {name: runs[0][name] | {"s": statistics.median(r[name]["s"] for r in runs)} for name in variants}
    result: dict[str, Any] = {
        "rows": batch,
        "repeats": repeats,
        "answers_per_prompt": ANSWERS,
        "max_tokens": MAX_TOKENS,
        "params": n,
    }
    for name, r in got.items():
        dtype = "bfloat16" if name.startswith("bf16") else "float32"
        result[name] = {
            "seconds": r["s"],
            "generated_tokens": r["tokens"],
            "tokens_per_s": r["tokens"] / r["s"],
            "model_gflops": 2 * n * r["tokens"] / r["s"] / 1e9,  # useful work: 2·N per generated token
            "computed_gflops": r["flops"] / r["s"] / 1e9,  # everything the kernels did (prompt, padding, attention)
            "model_fraction_of_peak": 2 * n * r["tokens"] / r["s"] / 1e9 / peak[dtype],
            "computed_fraction_of_peak": r["flops"] / r["s"] / 1e9 / peak[dtype],
            "peak_dtype": dtype,
        }
    result["shared_over_per_row_time"] = got["shared"]["s"] / got["per_row"]["s"]
    result["same_tokens_shared_per_row"] = got["shared"]["ids"] == got["per_row"]["ids"]
    result["gqa_over_repeat_kv_time"] = got["shared"]["s"] / got["repeat_kv"]["s"]
    result["same_tokens_gqa_repeat_kv"] = got["shared"]["ids"] == got["repeat_kv"]["ids"]
    if bf16_fast:
        result["bf16_over_fp32_time"] = got["bf16_shared"]["s"] / got["shared"]["s"]
        same = sum(a == b for a, b in zip(got["bf16_shared"]["ids"], got["shared"]["ids"], strict=True))
        result["bf16_rows_with_the_same_tokens"] = same / len(rows)
    else:
        result["bf16_skipped"] = f"bfloat16 matmuls reach {peak['bfloat16'] / peak['float32']:.2f} of float32's here"
    result["tokens_per_s_cap_fp32"] = peak["float32"] * 1e9 / (2 * n)
    return result


def demo_pairs(tokenizer: Any, n: int) -> list[Any]:
    from training import fixed_pairs

    return fixed_pairs(tokenizer, n, MAX_TOKENS)


def update(peak: dict[str, float], pairs: int) -> dict[str, Any]:
    out = {mode: update_of(mode, peak, pairs) for mode in ("lora", "full")}
    out["lora_over_full_flops"] = out["lora"]["flops"] / out["full"]["flops"]
    return out


def update_of(mode: str, peak: dict[str, float], n_pairs: int) -> dict[str, Any]:
    from algorithms.training.algorithm import policy_logprobs
    from algorithms.training.players import build_players

    players = build_players(
        roles=("attacker", "defender"),
        load=lambda _role: load_model("smollm2-135m-instruct"),
        lora=mode == "lora",
        copies={"ema"},
    )
    player = players["defender"]
    model = player.learner_module().train()
    n = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)  # the base's N
    algorithm = PreferenceOptimization(DPOMDConfig(beta=0.1))  # the EMA samples and anchors
    pairs = demo_pairs(player.tokenizer, n_pairs)
    tokens = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    sequences = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        losses, _ = algorithm.loss(player, pairs)
        losses.mean().backward()

    def reference() -> None:  # the reference forward alone, as the loss runs it (no autograd)
        with torch.no_grad():
            policy_logprobs(player, "ema", sequences, 2048)

    def per_row() -> None:  # before 2026-12-07: every row encodes its own prompt
        with mock.patch("agents.hf.prompts_shareable", return_value=False):
            step()

    step()  # warm-up
    seconds, flops = {}, {}
    for name, fn in (("step", step), ("reference", reference), ("per_row", per_row)):
        with FlopCounterMode(display=False) as counter:  # a few µs per op, against seconds per call
            start = time.perf_counter()
            fn()
            seconds[name] = time.perf_counter() - start
        flops[name] = counter.get_total_flops()
    return {
        "pairs": len(pairs),
        "tokens": tokens,
        "params": n,
        "seconds": seconds["step"],
        "flops": flops["step"],
        "computed_gflops": flops["step"] / seconds["step"] / 1e9,
        "peak_gflops": peak["float32"],
        "computed_fraction_of_peak": flops["step"] / seconds["step"] / 1e9 / peak["float32"],
        "nominal_gflops": 6 * n * tokens / seconds["step"] / 1e9,  # the 6·N·tokens
        "nominal_fraction_of_peak": 6 * n * tokens / seconds["step"] / 1e9 / peak["float32"],
        # the step's work in forwards (reference + learner + backward): LoRA ~3, full ~4 (weight gradients)
        "flops_over_forward": flops["step"] / flops["reference"],
        "reference_share": seconds["reference"] / seconds["step"],
        # each distinct prompt encoded once per forward (a pair's two answers share it) / per row
        "shared_prompts_over_per_row_time": seconds["step"] / seconds["per_row"],
        "per_row_flops_over_shared": flops["per_row"] / flops["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", default=["matmul", "bandwidth", "rollout", "update"])
    parser.add_argument("--pairs", type=int, default=MICRO_PAIRS, help="pairs in the update's micro-batch (demo: 16)")
    parser.add_argument("--rows", type=int, default=ROWS, help="rows of the rollout's batch (demo: 128)")
    parser.add_argument("--repeats", type=int, default=2, help="turns of the rollout's variants (median time)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_model("smollm2-135m-instruct")
    model.eval()
    result: dict[str, Any] = {"machine": describe_machine(), "threads": torch.get_num_threads()}
    result["matmul"] = matmul(model.config, args.rows)  # the peak is needed by the others
    peak = {name: result["matmul"][name]["peak_gflops"] for name in DTYPES}
    print("matmul", json.dumps(result["matmul"]), file=sys.stderr, flush=True)
    for name in args.only:
        if name == "bandwidth":
            result[name] = bandwidth()
        elif name == "rollout":
            result[name] = rollout(model, tokenizer, peak, args.rows, args.repeats)
        elif name == "update":
            result[name] = update(peak, args.pairs)
        else:
            continue
        print(name, json.dumps(result[name]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
