"""Per-token log-probs without a [positions x vocabulary] logits tensor: the chunked path
(``agents.hf.TargetLogprobs``) gives today's full-logits values and gradients, plain, LoRA and
FSDP2-sharded."""

from __future__ import annotations

import random

import pytest
import torch

from agents import load_model
from agents.hf import token_logprobs


def _pairs(vocabulary: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(0)
    lengths = [(9, 5), (3, 12), (14, 1), (6, 7)]  # uneven prompts and continuations
    return [
        ([rng.randrange(3, vocabulary) for _ in range(p)], [rng.randrange(3, vocabulary) for _ in range(c)])
        for p, c in lengths
    ]


def _both(model, pairs, max_context: int = 64, positions: int = 3):
    vocabulary = model.get_output_embeddings().weight.shape[0]
    seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        chunked = token_logprobs(model, pairs, pad_id=0, max_context=max_context, chunk_logits=positions * vocabulary)
    finally:
        hook.remove()
    full = token_logprobs(model, pairs, pad_id=0, max_context=max_context, chunk_logits=None)
    return chunked, full, seen


def _grads(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            out[name] = grad.clone()
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("max_context", [64, 10])  # 10 cuts rows: prompt tokens, then continuation tokens
def test_chunked_log_probs_equal_the_full_logits_ones_values_and_gradients(tiny_chat, max_context):
    model, _ = load_model(tiny_chat)
    pairs = _pairs(model.config.vocab_size)
    (logps, mask), (want, want_mask), seen = _both(model, pairs, max_context)
    torch.testing.assert_close(mask, want_mask, rtol=0, atol=0)
    torch.testing.assert_close(logps, want, rtol=0, atol=1e-5)
    # the head only ever saw one chunk of the scored positions, never a whole row of positions
    assert seen and max(seen) <= 3 and sum(seen) == int(mask.sum())
    assert model.get_output_embeddings() is model.lm_head and isinstance(model.lm_head, torch.nn.Linear)
    # gradients through the checkpointed chunks equal those through the full logits
    token_logprobs(model, pairs, pad_id=0, max_context=max_context, chunk_logits=3 * model.config.vocab_size)[
        0
    ].sum().backward()
    chunked = _grads(model)
    token_logprobs(model, pairs, pad_id=0, max_context=max_context, chunk_logits=None)[0].sum().backward()
    full = _grads(model)
    assert full and chunked.keys() == full.keys()
    for name, grad in full.items():
        # float32 sums in another order: within 1e-5 of the largest element of each gradient
        torch.testing.assert_close(chunked[name], grad, rtol=0, atol=1e-5 * float(grad.abs().max()), msg=name)


def test_chunked_log_probs_of_a_lora_model(tiny_chat):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(tiny_chat)[0], LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # an adapter that changes the answer
    pairs = _pairs(model.config.vocab_size)
    (logps, _), (want, _), _ = _both(model, pairs)
    torch.testing.assert_close(logps, want, rtol=0, atol=1e-5)
    with model.disable_adapter():
        (plain, _), _, _ = _both(model, pairs)
    assert not torch.allclose(plain, logps, atol=1e-3)  # the adapter took part in the chunked forward


def test_chunked_log_probs_of_an_fsdp2_sharded_model(tiny_chat):
    from algorithms.training.distributed import Dist, shard_module

    (plain, _), (sharded, _) = load_model(tiny_chat), load_model(tiny_chat)
    shard_module(sharded, Dist().mesh)
    pairs = _pairs(plain.config.vocab_size)
    (want, _), _, _ = _both(plain, pairs)
    token_logprobs(plain, pairs, pad_id=0, max_context=64, chunk_logits=None)[0].sum().backward()
    have = token_logprobs(sharded, pairs, pad_id=0, max_context=64, chunk_logits=3 * plain.config.vocab_size)[0]
    torch.testing.assert_close(have.detach(), want, rtol=0, atol=1e-5)
    have.sum().backward()
    want_grads, have_grads = _grads(plain), _grads(sharded)
    assert want_grads.keys() == have_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(have_grads[name], grad, rtol=0, atol=1e-5 * float(grad.abs().max()), msg=name)
