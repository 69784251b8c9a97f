"""Training-step throughput of a randomly initialised ~0.5B Llama-shaped model in bf16 (GPU only).

    python benchmarks/gpu.py [--batch 8] [--seq 1024] [--json FILE]
    python benchmarks/gpu.py --device cpu --tiny      (checks the code path on a CPU in seconds)

Full fine-tuning (AdamW on every weight) and LoRA (rank 16 on every projection, the base
frozen): tokens/s of forward + backward + optimizer step, and model FLOPs utilisation, with
the usual 6·N·tokens FLOPs per step for full fine-tuning and 4·N·tokens for LoRA (no weight
gradients of the frozen base), against the GPU's dense bf16 peak (``--peak-tflops``; the
default is the H100/H200 SXM figure, 989).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

SHAPE = {"hidden_size": 1024, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 16}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def build(tiny: bool, device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = TINY if tiny else SHAPE
    config = LlamaConfig(vocab_size=32000, num_key_value_heads=4, max_position_embeddings=4096, **shape)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=torch.bfloat16)


def throughput(lora: bool, args: argparse.Namespace) -> dict[str, Any]:
    model = build(args.tiny, args.device)
    params = sum(p.numel() for p in model.parameters())
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, 32000, (args.batch, args.seq), device=args.device)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    tokens = args.batch * args.seq
    flops = (4 if lora else 6) * params * tokens / seconds
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
    return {
        "mode": "lora" if lora else "full",
        "parameters": params,
        "step_s": seconds,
        "tokens_per_s": tokens / seconds,
        "tflops": flops / 1e12,
        "mfu": flops / (args.peak_tflops * 1e12),
        "peak_memory_gib": peak_memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        result: dict[str, Any] = {"skipped": "no GPU on this machine"}
    else:
        from common import describe_machine

        rows = []
        for lora in (False, True):
            rows.append(throughput(lora, args))
            if args.device.startswith("cuda"):  # the next mode starts from an empty GPU
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        result = {"machine": describe_machine(), "rows": rows}
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
