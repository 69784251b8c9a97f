"""Rollout throughput through our vLLM backend vs raw ``vllm.LLM.generate``, same engine and inputs.

    python benchmarks/vllm_overhead.py [--prompts 64] [--max-tokens 32] [--json FILE]

Both sides use ONE engine (the one our backend started), the same chats, the same per-prompt
seeded sampling and the same per-token log-prob request. Raw is what a user of vLLM would
write: render each chat with the tokenizer's chat template, pass the strings and the
``SamplingParams``. Ours adds its own tokenisation, context check and conversion of the
outputs into ``Generation`` records. Throughput = generated tokens / wall seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import chats, describe_machine, interleaved


def measure(prompts: int, max_tokens: int, repeats: int) -> dict[str, Any]:
    from vllm import SamplingParams

    from agents.vllm_backend import VLLMBackend

    engine = VLLMBackend("smollm2-135m-instruct", dtype="float32")
    try:
        conversations = chats(prompts)
        texts = [
            engine.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        params = [
            SamplingParams(max_tokens=max_tokens, temperature=1.0, top_p=1.0, seed=i, logprobs=0)
            for i in range(prompts)
        ]
        counts: dict[str, int] = {}

        def ours() -> None:
            out = engine.generate(conversations, max_tokens=max_tokens, temperature=1.0, top_p=1.0, seed=0)
            counts["ours"] = sum(len(g.token_ids) + (g.finish_reason == "stop") for g in out)

        def raw() -> None:
            out = engine.llm.generate(texts, params, use_tqdm=False)
            counts["raw"] = sum(len(o.outputs[0].token_ids) for o in out)

        seconds = interleaved({"ours": ours, "raw": raw}, repeats=repeats)
    finally:
        engine.close()
    ours_tps, raw_tps = counts["ours"] / seconds["ours"], counts["raw"] / seconds["raw"]
    return {
        "prompts": prompts,
        "max_tokens": max_tokens,
        "tokens": counts,
        "ours_tokens_per_s": ours_tps,
        "raw_tokens_per_s": raw_tps,
        "ratio": ours_tps / raw_tps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"machine": describe_machine(), "vllm": measure(args.prompts, args.max_tokens, args.repeats)}
    print(json.dumps(result, indent=1), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
