"""``advgame plan`` against measured peak memory on this CPU: plan / measured per case.

    python benchmarks/plan_check.py [--json FILE] [--only CASE ...]

Each case runs in a fresh process: it builds the trainer of ``configs/cpu_smoke.yaml``
(AdvGame-DPO-MD, rule judge) on the case's model with the case's overrides, then takes two
optimizer steps per player through the trainer's own update (``Trainer._update``), each on two
micro-batches of fixed pairs of exactly the plan's lengths (prompt + completion tokens), and an
EMA update: the steady state the plan models, where every copy and AdamW moment exists and
gradients accumulate while the next micro-batch's activations are alive; every pair has its own
prompt, as the plan's rows share nothing. Measured (``--measure live``, the default): the peak of
CPU tensors alive at once over the trainer's build and those steps (torch's profiler, its memory
events: ``live_peak_mib``), which is what the plan models and what a GPU's
``max_memory_allocated`` counts; ``--measure rss``: the process's peak RSS above the RSS it had
after its imports, which also counts the allocator's kept blocks and the process's other objects.
The plan is ``algorithms.plan.learner_terms`` for one CPU process (float32, no headroom), without
the rollout's generation term (no rollout runs here). Target (issue 16, checked again for issue
26): within 15%. For ``rss`` the cases run with glibc told to return freed blocks (``--malloc
return``, see ``main``) by default; ``--malloc default`` measures glibc as it comes, whose RSS
keeps every freed block and grows with each micro-batch.

Cases: the bundled 135M model (LoRA and full fine-tuning, activation checkpointing off and
on) and a tiny random-init Llama (full fine-tuning, saved with the bundled tokenizer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMPT, COMPLETION, MICRO = 64, 64, 4  # tokens per prompt, per completion; pairs per micro-batch
CASES: dict[str, tuple[str, list[str]]] = {
    "bundled_lora": ("bundled", ["model.lora=true"]),
    "bundled_lora_gc": ("bundled", ["model.lora=true", "model.gradient_checkpointing=true"]),
    "bundled_full": ("bundled", ["model.lora=false"]),
    "bundled_full_gc": ("bundled", ["model.lora=false", "model.gradient_checkpointing=true"]),
    "tiny_full": ("tiny", ["model.lora=false"]),
}
TINY = {"hidden_size": 256, "layers": 4}  # about 14M parameters, most of them the embedding


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def live_peak_mib(profiler: Any) -> float:
    """The most MiB of CPU tensors alive at once while ``profiler`` (``profile_memory=True``) ran:
    its allocation and free events in time order, summed. This is what a GPU's
    ``max_memory_allocated`` counts and what the plan models: tensors, not the allocator's kept
    blocks nor the process's other objects. (torch's ``MemTracker`` counts the same but refuses a
    module that runs twice in an iteration, as the policy and its reference forward do here.)"""
    import torch

    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() == cpu:
            live += event.nbytes()
            peak = max(peak, live)
    return peak / 2**20


def one(case: str, measure: str) -> dict[str, Any]:
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity, profile

    from agents.models import tiny_model
    from algorithms.plan import GIB, learner_terms, setup_of

    kind, overrides = CASES[case]
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        model = "smollm2-135m-instruct"
        if kind == "tiny":
            built, tokenizer = tiny_model(0, hidden_size=TINY["hidden_size"], layers=TINY["layers"])
            built.save_pretrained(f"{folder}/tiny")
            tokenizer.save_pretrained(f"{folder}/tiny")
            model = f"{folder}/tiny"
            del built
        baseline = rss_mib()  # imports done, nothing of the run built yet
        tracking = profile(activities=[ProfilerActivity.CPU], profile_memory=True) if measure == "live" else None
        with tracking or contextlib.nullcontext():
            cfg = train_two_steps(folder, model, overrides)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        setup = setup_of(cfg, gpus=1, gpu_memory_gib=24, on_gpu=False)
        setup = dataclasses.replace(setup, seq_len=PROMPT + COMPLETION, completion_len=COMPLETION, rollout_batch=0)
        terms = learner_terms(setup)
    planned = sum(t.bytes for t in terms) / 2**20
    measured = live_peak_mib(tracking) if tracking is not None else peak - baseline
    return {
        "case": case,
        "measure": measure,
        "parameters": setup.shape.params(),
        "planned_mib": planned,
        "measured_mib": measured,
        "plan_over_measured": planned / measured,
        "baseline_mib": baseline,
        "peak_rss_above_imports_mib": peak - baseline,
        "terms_gib": {t.name: t.bytes / GIB for t in terms},
    }


def train_two_steps(folder: str, model: str, overrides: list[str]) -> Any:
    """Build the case's trainer and take its two optimizer steps per player and an EMA update; its config."""
    from algorithms.config import load_config
    from algorithms.training.batches import PreferencePair
    from algorithms.training.trainer import Trainer

    base = [
        "run.validate_every=0",
        "run.tensorboard=false",
        "run.progress=false",
        f"optim.micro_batch_size={MICRO}",
    ]
    tokens = [f"roles.attacker.max_tokens={COMPLETION}", f"roles.defender.max_tokens={COMPLETION}"]
    cfg = load_config(
        ROOT / "configs/cpu_smoke.yaml",
        [*base, *tokens, f"model.name={model}", f"run.out_dir={folder}/run", *overrides],
    )
    trainer = Trainer(cfg)
    rng = random.Random(0)
    for learner in trainer.learners.values():
        vocab = len(learner.player.tokenizer)

        def ids(n: int, vocab: int = vocab) -> list[int]:
            return [rng.randrange(3, vocab) for _ in range(n)]

        # two micro-batches, twice: the steady state the plan models (gradients accumulate
        # while the next micro-batch's activations exist; every AdamW moment exists). Every
        # pair has its own prompt: the plan models rows that share nothing (a repeated prompt
        # would be encoded once per micro-batch, agents.hf.shared_prompt_logprobs)
        roles = learner.roles
        pairs = [
            PreferencePair(roles[i % len(roles)], ids(PROMPT), ids(COMPLETION), ids(COMPLETION), 1.0, 0.0)
            for i in range(2 * MICRO)
        ]
        for _ in range(2):
            trainer._update(learner, list(learner.roles), pairs, 0)
        learner.player.ema_update(0.5)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), help="measure one case in this process")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="these cases (default: all)")
    parser.add_argument(
        "--malloc",
        choices=["return", "default"],
        default="return",
        help="return: freed blocks go back to the OS (RSS follows live tensors); default: glibc as it comes",
    )
    parser.add_argument(
        "--measure",
        choices=["live", "rss"],
        default="live",
        help="live: the peak of CPU tensors alive at once (torch's profiler); rss: the process's peak RSS above imports",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one(args.case, args.measure)))
        return
    from common import describe_machine

    rows = {}
    for case in args.only or CASES:
        env = dict(os.environ)
        if args.malloc == "return":
            # glibc keeps freed blocks for reuse and RSS never falls, so a second micro-batch's
            # activations land beside the first's freed ones; a fixed mmap threshold makes every
            # block of 64 KiB or more its own mapping, returned on free: RSS then follows the live
            # tensors, as max_memory_allocated does on a GPU
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        done = subprocess.run(
            [sys.executable, __file__, "--case", case, "--measure", args.measure],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        rows[case] = json.loads(done.stdout.strip().splitlines()[-1])
        r = rows[case]
        print(
            f"{case:18s} plan {r['planned_mib']:8.0f} MiB  measured {r['measured_mib']:8.0f} MiB  "
            f"plan/measured {r['plan_over_measured']:.3f}",
            file=sys.stderr,
            flush=True,
        )
    result = {"machine": describe_machine(), "malloc": args.malloc, "measure": args.measure, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
