"""Generation throughput of the Hugging Face and vLLM backends, and weight-push latency.

    python benchmarks/backends.py [--batches 1 8 32 128] [--max-tokens 64] [--out FILE.md]

Both backends run the bundled model (float32) on the same prompts in one process, one after
the other, so the ratios compare like with like on this machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from common import chats, describe_machine


def tokens_per_second(backend, batch: int, max_tokens: int) -> float:
    prompts = chats(batch)
    backend.generate(prompts[:1], max_tokens=4, temperature=0)  # warm-up
    start = time.perf_counter()
    outputs = backend.generate(prompts, max_tokens=max_tokens, temperature=0.7, seed=0)
    elapsed = time.perf_counter() - start
    return sum(len(g.token_ids) for g in outputs) / elapsed


def agreement(hf, engine, n: int = 32, max_tokens: int = 48) -> list[str]:
    """How closely the two backends agree on the same weights: greedy tokens and log-probs."""
    prompts = chats(n)
    ours, theirs = (
        engine.generate(prompts, max_tokens=max_tokens, temperature=0),
        hf.generate(prompts, max_tokens=max_tokens, temperature=0),
    )
    same = sum(a.token_ids == b.token_ids for a, b in zip(ours, theirs, strict=True))
    token_gap = max(
        (
            abs(x - y)
            for a, b in zip(ours, theirs, strict=True)
            if a.token_ids == b.token_ids
            for x, y in zip(a.logprobs, b.logprobs, strict=True)
        ),
        default=0.0,
    )
    texts = [g.text for g in theirs]
    score_gap = max(abs(x - y) for x, y in zip(engine.score(prompts, texts), hf.score(prompts, texts), strict=True))
    return [
        f"Agreement on {n} held-out seeds (float32, greedy, {max_tokens} tokens): identical token ids for {same}/{n};",
        f"largest per-token log-prob gap {token_gap:.2e} nats; largest sequence-score gap {score_gap:.2e} nats.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from agents import HFBackend, load_model
    from agents.roles import shared_base_players
    from agents.vllm_backend import VLLMBackend

    model, tokenizer = load_model()
    hf = HFBackend(model, tokenizer, batch_size=max(args.batches))
    engine = VLLMBackend("smollm2-135m-instruct", dtype="float32", enable_lora=True, max_lora_rank=16)

    lines = [
        f"Machine: {describe_machine()}",
        *agreement(hf, engine),
        f"Model: bundled SmolLM2-135M-Instruct, float32; sampling T=0.7, up to {args.max_tokens} new tokens.",
        "",
        "| batch | HF tokens/s | vLLM tokens/s | vLLM / HF |",
        "|---:|---:|---:|---:|",
    ]
    for batch in args.batches:
        ours, theirs = tokens_per_second(engine, batch, args.max_tokens), tokens_per_second(hf, batch, args.max_tokens)
        lines.append(f"| {batch} | {theirs:.1f} | {ours:.1f} | {ours / theirs:.2f} |")
        print(lines[-1], flush=True)

    start = time.perf_counter()
    engine.push_weights(model)
    full = time.perf_counter() - start
    players = shared_base_players(copy.deepcopy(model), rank=16)
    engine.push_adapter("defender", players, adapter_name="defender")
    start = time.perf_counter()
    engine.push_adapter("defender", players, adapter_name="defender")  # a second version, as in training
    engine.generate(chats(1), max_tokens=1, adapter="defender")  # the adapter loads on first use
    lora = time.perf_counter() - start
    lines += [
        "",
        "| weight push | seconds | share of full |",
        "|---|---:|---:|",
        f"| full (134.5M parameters, with the probe check) | {full:.2f} | 1.00 |",
        f"| LoRA adapter (rank 16, all projections), incl. first use | {lora:.2f} | {lora / full:.2f} |",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    engine.close()


if __name__ == "__main__":
    main()
