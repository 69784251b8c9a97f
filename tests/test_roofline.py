"""The roofline benchmark's bookkeeping (issue 35): its rows in ``make bench``'s table, and the
FLOP accounting it reports for an update (a LoRA step skips the frozen base's weight gradients)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from agents import tiny_model
from algorithms.algorithm_configs import DPOMDConfig
from algorithms.training.algorithm import policy_logprobs
from algorithms.training.batches import DEFENDER, PreferencePair
from algorithms.training.players import build_players
from algorithms.training.preference import PreferenceOptimization
from tests.test_benchmarks import script

table = script("run").table


def _roofline(bf16_fast: bool, same_tokens: bool) -> dict:
    matmul = {"float32": {"peak_gflops": 100.0}, "bfloat16": {"peak_gflops": 400.0 if bf16_fast else 4.0}}
    shared = {"seconds": 10.0, "tokens_per_s": 200.0, "model_fraction_of_peak": 0.6, "computed_fraction_of_peak": 0.7}
    rollout = {
        "rows": 128,
        "answers_per_prompt": 8,
        "max_tokens": 24,
        "shared": shared,
        "per_row": {"seconds": 20.0},
        "shared_over_per_row_time": 0.5,
        "same_tokens_shared_per_row": same_tokens,
        "repeat_kv": {"seconds": 12.5},
        "gqa_over_repeat_kv_time": 0.8,
        "same_tokens_gqa_repeat_kv": True,
        "tokens_per_s_cap_fp32": 370.0,
    }
    if bf16_fast:
        rollout |= {"bf16_shared": {"seconds": 5.0}, "bf16_over_fp32_time": 0.5, "bf16_rows_with_the_same_tokens": 0.9}
    else:
        rollout["bf16_skipped"] = "bfloat16 matmuls reach 0.04 of float32's here"
    mode = {
        "pairs": 16,
        "tokens": 2000,
        "computed_gflops": 30.0,
        "peak_gflops": 100.0,
        "computed_fraction_of_peak": 0.3,
        "nominal_fraction_of_peak": 0.28,
        "reference_share": 0.27,
        "flops_over_forward": 3.0,
    }
    update = {"lora": mode, "full": mode | {"flops_over_forward": 4.0}, "lora_over_full_flops": 0.75}
    return {
        "machine": "m",
        "threads": 2,
        "matmul": matmul | {"bf16_over_fp32": matmul["bfloat16"]["peak_gflops"] / 100.0},
        "bandwidth": {"gb_per_s": 12.0},
        "rollout": rollout,
        "update": update,
    }


def test_the_roofline_rows_mark_the_half_peak_targets():
    lines = table({"roofline": _roofline(bf16_fast=False, same_tokens=True)}).splitlines()
    rollout = next(line for line in lines if line.startswith("| Rollout, demo defender batch"))
    assert "| 0.60 | >= 0.5 | met" in rollout
    lora = next(line for line in lines if line.startswith("| Update (lora)"))
    assert "| 0.30 | >= 0.5 | **missed**" in lora
    assert "same tokens" in next(line for line in lines if "encoded once per group" in line)
    assert "not measured" in next(line for line in lines if line.startswith("| Rollout, bfloat16"))
    assert "12.0 GB/s" in next(line for line in lines if line.startswith("| Memory bandwidth"))
    gqa = next(line for line in lines if "grouped-query attention" in line)
    assert "| 10.0 s | 12.5 s | 0.80 | report | same tokens |" in gqa


def test_a_bf16_rollout_and_changed_tokens_are_reported():
    lines = table({"roofline": _roofline(bf16_fast=True, same_tokens=False)}).splitlines()
    assert "**tokens differ**" in next(line for line in lines if "encoded once per group" in line)
    bf16 = next(line for line in lines if line.startswith("| Rollout, bfloat16"))
    assert "| 0.50 |" in bf16 and "90% of rows" in bf16


def _update_in_forwards(lora: bool) -> tuple[float, float]:
    """The update's FLOPs in reference forwards, and the share of a forward that is the output head."""
    players = build_players(
        roles=("attacker", "defender"), load=lambda _r: tiny_model(seed=0), lora=lora, copies={"ema"}, lora_rank=2
    )
    player = players[DEFENDER]
    pairs = [PreferencePair(DEFENDER, [5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15], 1.0, 0.0) for _ in range(2)]
    algorithm = PreferenceOptimization(DPOMDConfig())  # the EMA samples and anchors
    with FlopCounterMode(display=False) as step:
        losses, _ = algorithm.loss(player, pairs)
        losses.mean().backward()
    sequences = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    with FlopCounterMode(display=False) as reference, torch.no_grad():
        policy_logprobs(player, "ema", sequences, 2048)
    config = player.modules()[0].config
    scored = sum(len(continuation) for _, continuation in sequences)  # the head projects scored positions only
    head = 2 * scored * config.hidden_size * config.vocab_size
    return step.get_total_flops() / reference.get_total_flops(), head / reference.get_total_flops()


def test_a_lora_update_skips_the_frozen_bases_weight_gradients():
    # reference forward + learner forward + backward: full fine-tuning's backward computes input
    # and weight gradients (2 forwards), LoRA's only the input gradients through the frozen base.
    # The chunked log-probs (agents.hf.token_logprobs) recompute the output head in the backward
    # rather than keep its logits: one more head forward in each.
    full, head = _update_in_forwards(lora=False)
    assert full == pytest.approx(4.0 + head, abs=0.05)
    lora, head = _update_in_forwards(lora=True)
    assert lora == pytest.approx(3.0 + head, abs=0.1)
