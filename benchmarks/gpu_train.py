"""Three AdvGame-DPO-MD steps of full fine-tuning of a random-init ~0.5B Llama through the trainer (GPU).

    python benchmarks/gpu_train.py [--json FILE]                   # on a GPU, at most a few minutes
    python benchmarks/gpu_train.py --device cpu --tiny             # the same code path on a CPU, tiny shape
    python benchmarks/gpu_train.py --device cpu --tiny --tokens 16 # ... with shorter turns (the test's run)
    python benchmarks/gpu_train.py --bundle DIR                    # here: what a bare GPU machine lacks

A Llama-shaped model is built from a config (no weights to download: random init, the bundled
model's tokenizer) and saved as a Hugging Face folder, which the trainer loads by path. Then
``Trainer.train_step`` runs three times: HF rollouts of both players, the rule judge, DPO-MD
pairs, one update per player and split (learner forward + backward, EMA reference forward),
the EMA update, in bf16 (FSDP2's MixedPrecisionPolicy when sharded, autocast otherwise) with
activation checkpointing, as the paper recipes train.
Where the config has ``parallel.sharding`` (the FSDP2 work), the run passes
``parallel.sharding=fsdp2`` at world size 1; otherwise it runs unsharded and says so.

A random-init model's rollouts rarely give the judge anything to rank (every answer scores the
same), so where a learner's split gave no pair, that update trains on fixed pairs of the
config's lengths instead (random token ids; counted in ``fixed_pair_updates``): every step has
an update to time. Recorded as JSON: peak GPU memory (``torch.cuda.max_memory_allocated``)
against ``advgame plan``'s learner total for the same config on one GPU, tokens/s of the update
(real tokens, padding excluded) and its MFU: 6·N FLOPs per trained token (forward + backward)
plus 2·N per token of the reference forward, against ``--peak-tflops`` (989: H100/H200 SXM
dense bf16); the recomputation of checkpointing is not counted, as MFU conventionally does not.

Under ``torchrun --nproc_per_node N`` (``benchmarks/gpu_train_2gpu.py`` starts it) every process
runs the steps on its own GPU (NCCL; gloo with ``--device cpu``), ``--sharding none`` through
torch's DDP, ``--sharding fsdp2`` through FSDP2; the plan is for N learner GPUs, the peak is the
largest process's, tokens/s counts every process's tokens over the slowest process's update
time and MFU divides by N GPUs' peak; unsharded, ``replica_max_difference`` is the largest
difference between the processes' trained weights afterwards (DDP keeps them equal).

On a GPU machine with only torch, transformers, peft and accelerate (the lent ``device``):
``--bundle DIR`` copies the pure-Python packages the trainer imports (pettingzoo, gymnasium,
tyro, rich, httpx, ...) and the bundled tokenizer into DIR (about 20 MB); carry DIR and pass
``--deps DIR``, which appends it to ``sys.path`` (the machine's own packages come first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ~0.47B parameters with the bundled tokenizer's 49,152-token vocabulary (tied embeddings)
SHAPE = {"hidden_size": 1024, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 16}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
TOKENS = 128  # each player's token budget per turn (--tokens)
PURE_PYTHON = (  # what the trainer imports beyond torch, transformers, peft, accelerate, numpy
    "pettingzoo",
    "gymnasium",
    "farama_notifications",
    "cloudpickle",
    "dill",
    "tyro",
    "docstring_parser",
    "typeguard",
    "rich",
    "pygments",
    "markdown_it",
    "mdurl",
    "click",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "certifi",
    "idna",
    "yaml",
    "tqdm",
)


def bundle(folder: Path) -> None:
    """Copy the pure-Python dependencies and the bundled tokenizer into ``folder`` for carrying."""
    import importlib.util

    from agents.models import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    for name in PURE_PYTHON:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        source = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
        target = folder / source.name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(source, target)
    tokenizer = folder / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    for file in Path(resolve_model("smollm2-135m-instruct")).iterdir():
        if file.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy2(file, tokenizer / file.name)
    print(f"carry {folder}; run: python benchmarks/gpu_train.py --deps {folder} --tokenizer {tokenizer}")


def build_model(folder: Path, tokenizer_from: str, tiny: bool) -> int:
    """A random-init Llama saved as a Hugging Face folder with the tokenizer; its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=4 if not tiny else 2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(TINY if tiny else SHAPE),
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def accepts_sharding() -> bool:
    """Whether this checkout's TrainConfig has ``parallel.sharding`` (the FSDP2 work adds it)."""
    from algorithms.config import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if "parallel" not in fields:
        return False
    section = fields["parallel"].default_factory()  # type: ignore[misc]
    return any(f.name == "sharding" for f in dataclasses.fields(section))


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """The figures (None on every process but the first)."""
    import torch

    from algorithms.config import load_config
    from algorithms.plan import GIB, plan_config
    from algorithms.training.batches import PreferencePair
    from algorithms.training.trainer import Trainer

    cuda = args.device.startswith("cuda")
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)  # peak memory is read off the current device
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        params = build_model(folder, args.tokenizer, args.tiny)
        overrides = [
            f"model.name={folder}",
            "model.lora=false",
            f"model.precision={'bf16' if cuda else 'fp32'}",
            "model.gradient_checkpointing=true",
            "rollout.backend=hf",
            f"roles.attacker.max_tokens={args.tokens}",
            f"roles.defender.max_tokens={args.tokens}",
            "rollout.max_model_len=1024",
            f"optim.micro_batch_size={args.micro_batch}",
            f"data.batch_size={args.seeds}",
            f"run.steps={args.steps}",
            "run.validate_every=0",
            "run.tensorboard=false",
            "run.progress=false",
            "run.checkpoint_every=1000",
            f"run.out_dir={scratch}/run",
        ]
        sharding = args.sharding if args.sharding != "auto" else "fsdp2" if accepts_sharding() else None
        if sharding:
            overrides.append(f"parallel.sharding={sharding}")  # one process: Dist.mesh makes a group of its own
        cfg = load_config(ROOT / "configs/cpu_smoke.yaml", overrides)
        memory = torch.cuda.get_device_properties(local_rank).total_memory / GIB if cuda else 80.0
        plan = plan_config(cfg, gpus=world, gpu_memory_gib=memory, sharding=sharding, on_gpu=cuda)

        trainer = Trainer(cfg)
        updates: dict[str, float] = {"seconds": 0.0, "trained_tokens": 0, "fixed_pair_updates": 0}
        rng = random.Random(0)
        inner = trainer._update
        prompt_len = plan.setup.seq_len - plan.setup.completion_len

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        def timed_update(learner: Any, roles: list[str], examples: list[Any], split: int) -> dict[str, float]:
            if not examples:  # nothing ranked: fixed pairs of the config's lengths (see the top)
                vocab = len(learner.player.tokenizer)
                ids = lambda n: [rng.randrange(3, vocab) for _ in range(n)]  # noqa: E731
                examples = [
                    PreferencePair(roles[0], ids(prompt_len), ids(args.tokens), ids(args.tokens), 1.0, 0.0)
                    for _ in range(2 * args.micro_batch)
                ]
                updates["fixed_pair_updates"] += 1
            sync()
            start = time.perf_counter()
            out = inner(learner, roles, examples, split)
            sync()
            updates["seconds"] += time.perf_counter() - start
            updates["trained_tokens"] += sum(
                len(e.prompt_ids) * 2 + len(e.chosen_ids) + len(e.rejected_ids) for e in examples
            )
            return out

        trainer._update = timed_update  # type: ignore[method-assign]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        steps = [trainer.train_step() for _ in range(args.steps)]
        wall = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
        # every process's figures, and (unsharded) its trained weights' sums, to compare replicas
        learner = trainer.learners["defender"].player
        sums = [] if sharding == "fsdp2" else [float(t.double().sum()) for t in learner.weights("learner").values()]
        everyone = trainer.dist.gather([(updates["trained_tokens"], updates["seconds"], peak, sums)])
        if not trainer.dist.main:
            return None
    tokens, seconds = sum(e[0] for e in everyone), max(e[1] for e in everyone)
    peaks = [e[2] for e in everyone if e[2] is not None]
    peak = max(peaks) if peaks else None
    spread = [max(abs(a - b) for a, b in zip(e[3], everyone[0][3], strict=True)) for e in everyone if e[3]]
    flops = (6 + 2) * params * tokens  # learner forward + backward, reference forward
    described = {"fsdp2": "fsdp2", "none": "none (DDP)" if world > 1 else "none", None: "none (no parallel.sharding)"}
    return {
        "device": torch.cuda.get_device_name(local_rank) if cuda else "cpu",
        "parameters": params,
        "sharding": f"{described[sharding]} (world size {world})",
        "world": world,
        "replica_max_difference": max(spread) if spread else None,
        "steps": args.steps,
        "tokens": args.tokens,
        "wall_s": wall,
        "update_s": seconds,
        "update_tokens": tokens,
        "update_tokens_per_s": tokens / seconds if seconds else None,
        "update_tflops": flops / seconds / 1e12 if seconds else None,
        "mfu": flops / seconds / (world * args.peak_tflops * 1e12) if seconds and cuda else None,
        "fixed_pair_updates": updates["fixed_pair_updates"],
        "peak_memory_gib": peak,
        "plan_learner_gib": plan.learner_total / GIB,
        "plan_over_measured": plan.learner_total / GIB / peak if peak else None,
        "plan_terms_gib": {t.name: t.bytes / GIB for t in plan.learner},
        "step_s": [s.get("time/step_s") for s in steps],
        "play_s": [s.get("time/play_s") for s in steps],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=8, help="seeds per split per step (data.batch_size)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=TOKENS, help="each player's token budget per turn")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="one GPU's dense bf16 peak")
    parser.add_argument(
        "--sharding",
        choices=("auto", "none", "fsdp2"),
        default="auto",
        help="parallel.sharding (auto: fsdp2 where the config has it)",
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the bundled model's)")
    parser.add_argument("--deps", type=Path, help="a --bundle folder: appended to sys.path")
    parser.add_argument("--bundle", type=Path, help="copy the pure-Python deps and the tokenizer here, then stop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.deps:
        sys.path.append(str(args.deps.resolve()))
    if args.bundle:
        bundle(args.bundle)
        return
    import torch

    result: dict[str, Any] | None
    gpus, world = torch.cuda.device_count(), int(os.environ.get("WORLD_SIZE", "1"))
    if args.device.startswith("cuda") and gpus < world:
        result = {"skipped": "no GPU on this machine" if not gpus else f"{gpus} GPU(s) for {world} processes"}
    else:
        if args.tokenizer is None:
            from agents.models import resolve_model

            args.tokenizer = resolve_model("smollm2-135m-instruct")
        result = run(args)
    if result is None:  # not the first process
        return
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
