"""The training step: our DPO update vs TRL's, how it scales, and the weight push's share of a step.

    python benchmarks/training.py [--json FILE]

* ``dpo_vs_trl``: one DPO loss + backward on a fixed batch of pairs, ours
  (``PreferenceOptimization.loss``, the 8 pairs in one micro-batch) against TRL's ``DPOTrainer.compute_loss``, on two copies of
  the same model with the same token ids and a frozen reference each; both loss values are
  reported, as the comparison only holds at equal loss. TRL is needed for this one only
  (``pip install -e ".[bench]"``).
* ``step_scaling``: the same update's time against the number of pairs (8 -> 256) and the
  completion length, on a small random model (4 layers of 128) so the large batches fit in
  minutes, in micro-batches of 16 pairs as the trainer runs them; the fitted exponent says
  how time grows.
* ``push_share``: one step of the CPU demo recipe with vLLM rollouts (the sync pushes both
  players' LoRA adapters), and the time a full-weight push of both players would take instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import chats, describe_machine, exponent, interleaved, median_seconds

from advgame_env import bundled_seeds
from agents.hf import encode, prompt_ids
from agents.models import load_model, tiny_model
from algorithms.algorithm_configs import DPOConfig
from algorithms.training.batches import DEFENDER, PreferencePair
from algorithms.training.players import FullPlayer
from algorithms.training.preference import PreferenceOptimization

ROOT = Path(__file__).resolve().parent.parent


def fixed_pairs(tokenizer: Any, n: int, completion_tokens: int) -> list[PreferencePair]:
    """``n`` pairs: held-out prompts, chosen/rejected cut from natural text, all the same length."""
    prompts = prompt_ids(tokenizer, chats(n), 2048, completion_tokens)
    text = encode(tokenizer, " ".join(s.prompt for s in bundled_seeds("all")))
    pairs = []
    for i, prompt in enumerate(prompts):
        a, b = (i * 37) % (len(text) - completion_tokens), (i * 53 + 11) % (len(text) - completion_tokens)
        chosen, rejected = text[a : a + completion_tokens], text[b : b + completion_tokens]
        pairs.append(PreferencePair(DEFENDER, prompt, chosen, rejected, 1.0, 0.0))
    return pairs


def our_update(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """(step(pairs) -> loss, the player): on-policy DPO with a frozen copy as the reference."""
    player = FullPlayer(DEFENDER, model, tokenizer, copies={"initial"})
    algorithm = PreferenceOptimization(DPOConfig(beta=0.1))  # the learner samples, the initial model anchors

    def step(pairs: list[PreferencePair], micro: int = 16) -> float:
        """Mean loss over the pairs, gradients accumulated over micro-batches as the trainer does."""
        model.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(pairs), micro):
            losses, _ = algorithm.loss(player, pairs[start : start + micro])
            loss = losses.sum() / len(pairs)
            loss.backward()
            total += float(loss.detach())
        return total

    return step, player


def trl_update(model: Any, reference: Any, tokenizer: Any, folder: str) -> Any:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=folder, beta=0.1, report_to="none", use_cpu=True, bf16=False, max_length=None)
    dummy = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dummy, processing_class=tokenizer)

    def step(pairs: list[PreferencePair]) -> float:
        rows = [{"prompt_ids": p.prompt_ids, "chosen_ids": p.chosen_ids, "rejected_ids": p.rejected_ids} for p in pairs]
        inputs = trainer.data_collator(rows)
        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        return float(loss.detach())

    return step


@torch.no_grad()
def nudge(model: Any, scale: float = 0.02) -> None:
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=generator) * scale * param.std().nan_to_num(0.0))


def dpo_vs_trl(pairs_n: int = 8, completion_tokens: int = 32, repeats: int = 3) -> dict[str, Any]:
    model, tokenizer = load_model()
    reference = copy.deepcopy(model).requires_grad_(False)
    ours, _ = our_update(model.train(), tokenizer)  # keeps its own frozen copy as the reference
    nudge(model)  # so the policy differs from the reference and the loss is not log 2
    with tempfile.TemporaryDirectory() as folder:
        twin = copy.deepcopy(model).train()
        theirs = trl_update(twin, reference, tokenizer, folder)
        pairs = fixed_pairs(tokenizer, pairs_n, completion_tokens)
        losses = {"ours": ours(pairs), "trl": theirs(pairs)}
        seconds = interleaved({"ours": lambda: ours(pairs), "trl": lambda: theirs(pairs)}, repeats=repeats)
    return {
        "pairs": pairs_n,
        "completion_tokens": completion_tokens,
        "prompt_tokens_mean": sum(len(p.prompt_ids) for p in pairs) / len(pairs),
        "ours_s": seconds["ours"],
        "trl_s": seconds["trl"],
        "ratio": seconds["ours"] / seconds["trl"],
        "ours_loss": losses["ours"],
        "trl_loss": losses["trl"],
    }


def step_scaling(
    batches: tuple[int, ...] = (8, 32, 128, 256), lengths: tuple[int, ...] = (16, 32, 64, 128)
) -> dict[str, Any]:
    model, tokenizer = tiny_model(hidden_size=128, layers=4)
    step, _ = our_update(model.train(), tokenizer)
    by_batch = {n: median_seconds(lambda n=n: step(fixed_pairs(tokenizer, n, 32)), repeats=2) for n in batches}
    by_length = {n: median_seconds(lambda n=n: step(fixed_pairs(tokenizer, 16, n)), repeats=2) for n in lengths}
    return {
        "by_batch": by_batch,
        "by_length": by_length,
        "batch_exponent": exponent(list(by_batch), list(by_batch.values())),
        "length_exponent": exponent(list(by_length), list(by_length.values())),
    }


def push_share() -> dict[str, Any]:
    from algorithms.config import load_config
    from algorithms.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as folder:
        overrides = ["rollout.backend=vllm", "run.steps=2", "run.validate_every=0", f"run.out_dir={folder}/run"]
        overrides += ["run.tensorboard=false", "run.progress=false"]
        trainer = Trainer(load_config(ROOT / "configs/cpu_demo.yaml", overrides))
        try:
            trainer.train_step()  # the first step also loads both adapters into the engine once
            metrics = trainer.train_step()
            engine = next(iter(trainer.sampler.engines.values()))
            full = median_seconds(
                lambda: [engine.push_weights(p.sampling("ema")[0]) for p in trainer.players.values()],
                repeats=2,
            )
        finally:
            trainer.sampler.close()
    step, sync = metrics["time/step_s"], metrics["time/sync_s"]
    return {
        "step_s": step,
        "lora_push_s": sync,
        "lora_share": sync / step,
        "full_push_s": full,
        "full_share": full / (step - sync + full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*", default=["dpo_vs_trl", "step_scaling", "push_share"])
    args = parser.parse_args()
    torch.manual_seed(0)
    result: dict[str, Any] = {"machine": describe_machine()}
    for name in args.only:
        result[name] = globals()[name]()
        print(name, json.dumps(result[name]), file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
