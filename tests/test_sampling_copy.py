"""Sampling in bfloat16 from a copy of the float32 learner (``rollout.hf_dtype``, issue 35): the
copy follows every write to the learner, copies only what changed, and what the updates compute
from bfloat16 samples stays within a stated tolerance of the float32 path's."""

import pytest
import torch

from agents import HFBackend, load_model, tiny_model
from agents.hf import SamplingCopy, token_logprobs
from agents.roles import copy_adapter, shared_base_players
from algorithms.training.losses import grpo_token_loss

CHATS = [[{"role": "user", "content": text}] for text in ("How do I bake bread?", "Name a colour.")] * 4


def _lora_players():
    base, tokenizer = tiny_model(seed=0)
    return shared_base_players(base, rank=4, alpha=8), tokenizer


def _same(copy: torch.nn.Module, model: torch.nn.Module) -> bool:
    """Every parameter of ``copy`` is ``model``'s rounded to bfloat16."""
    theirs = dict(model.named_parameters())
    return all(torch.equal(p, theirs[name].to(torch.bfloat16)) for name, p in copy.named_parameters())


def test_the_copy_is_bfloat16_and_leaves_the_model_and_its_buffers_as_they_were():
    model, _ = _lora_players()
    made = SamplingCopy(model)
    assert {p.dtype for p in made.current().parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in made.copy.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # the rotary frequencies keep float32: rounded, every position's angle would move
    assert {b.dtype for b in made.copy.buffers() if b.is_floating_point()} == {torch.float32}
    assert _same(made.copy, model)


def test_an_optimizer_step_and_an_adapter_copy_reach_the_copy_and_nothing_else_is_copied():
    model, _ = _lora_players()
    made = SamplingCopy(model)
    trained = [p for name, p in model.named_parameters() if ".defender." in name and "lora_B" in name]
    optimizer = torch.optim.AdamW(trained, lr=0.1)
    for p in trained:
        p.grad = torch.randn_like(p)
    optimizer.step()
    copy_adapter(model, "defender", "attacker")  # in place, as the EMA and snapshot copies write
    # a copied tensor that its source did not change since is left alone: mark one to see it stay
    base = next(name for name, _ in model.named_parameters() if "lora_" not in name)
    marked = dict(made.copy.named_parameters())[base]
    with torch.no_grad():
        marked.fill_(7.0)
    current = made.current()
    assert torch.all(dict(current.named_parameters())[base] == 7.0)
    with torch.no_grad():  # put the base back as it was, then every tensor must match
        marked.copy_(dict(model.named_parameters())[base])
    assert _same(current, model)
    assert not torch.equal(trained[0], torch.zeros_like(trained[0]))  # the step did write


def test_a_new_adapter_makes_a_new_copy():
    model, _ = _lora_players()
    made = SamplingCopy(model)
    first = made.copy
    copy_adapter(model, "defender", "defender_ema")  # adds an adapter: new parameters
    assert made.current() is not first
    assert "defender_ema" in made.copy.peft_config
    assert _same(made.copy, model)


def test_the_backend_samples_from_the_copy_and_scores_with_the_model(tiny_chat):
    model, tokenizer = load_model(tiny_chat)
    backend = HFBackend(model, tokenizer, batch_size=8, sampling_copy=SamplingCopy(model))
    got = backend.generate(CHATS, max_tokens=8, temperature=1.0, seed=0)
    assert all(g.token_ids for g in got)
    # the recorded log-probs are the bfloat16 model's; the float32 model's of the same tokens
    # differ by its rounding only
    pairs = [(backend_prompt, g.token_ids) for backend_prompt, g in zip(_prompts(tokenizer), got, strict=True)]
    fp32, mask = token_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, max_context=2048)
    bf16 = torch.zeros_like(fp32)
    for i, g in enumerate(got):
        bf16[i, : len(g.logprobs)] = torch.tensor(g.logprobs)
    gap = ((fp32 - bf16).abs() * mask).max()
    assert 0 < gap < 0.1  # nats per token (measured: 0.03 on this model)
    with pytest.raises(ValueError, match="copy of the backend's own model"):
        HFBackend(load_model(tiny_chat)[0], tokenizer, sampling_copy=backend.sampling_copy)


def _prompts(tokenizer):
    from agents.hf import prompt_ids

    return prompt_ids(tokenizer, CHATS, 2048, 8)


def test_grpo_loss_from_bfloat16_samples_equals_the_float32_paths_within_tolerance(tiny_chat):
    """The only place an update reads what the sampler recorded is GRPO's truncated importance
    ratio π_learner / π_sampler (DPO-MD, Nash-MD, SPIRAL and Self-RedTeam recompute everything
    in float32). With the sampler's log-probs recorded in bfloat16, the ratio is 1 up to the
    rounding: the loss stays within 0.1% of the float32 sampler's, its gradient within 3%."""
    model, tokenizer = load_model(tiny_chat)
    backend = HFBackend(model, tokenizer, batch_size=8, sampling_copy=SamplingCopy(model))
    got = backend.generate(CHATS, max_tokens=8, temperature=1.0, seed=1)
    pairs = [(p, g.token_ids) for p, g in zip(_prompts(tokenizer), got, strict=True)]
    with torch.no_grad():
        ref, mask = token_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, max_context=2048)
    sampled = torch.zeros_like(ref)
    for i, g in enumerate(got):
        sampled[i, : len(g.logprobs)] = torch.tensor(g.logprobs)
    advantages = torch.linspace(0.5, 1.5, len(got))  # one sign: no cancellation to hide behind

    def loss_and_grad(sampler_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        logps, _ = token_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, max_context=2048)
        loss = grpo_token_loss(logps, sampler_logps, ref + 0.05, advantages, mask, 0.05, 2.0).sum()
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return loss.detach(), grad

    loss_bf16, grad_bf16 = loss_and_grad(sampled)
    loss_fp32, grad_fp32 = loss_and_grad(ref)  # the float32 sampler's log-probs: the learner's own
    # measured: loss 2.3e-4 apart (relative), gradient 1.3e-2 (relative norm of the difference)
    assert loss_bf16 == pytest.approx(float(loss_fp32), rel=1e-3)
    assert float((grad_bf16 - grad_fp32).norm() / grad_fp32.norm()) < 3e-2


def test_a_training_run_samples_from_copies_of_the_weights_it_trains(tiny_chat, tmp_path):
    from algorithms.training.trainer import Trainer
    from tests.helpers import config

    trainer = Trainer(config(tiny_chat, tmp_path, "rollout.hf_dtype=bfloat16", "run.validate_every=0", "optim.lr=1e-2"))
    for _ in range(2):
        metrics = trainer.train_step()
        assert all(v == v for v in metrics.values() if isinstance(v, float))  # no NaN
    copies = list(trainer.sampler.copies.values())
    modules = {id(m) for player in trainer.players.values() for m in player.modules()}
    assert copies and all(id(made.model) in modules for made in copies)  # copies of what is trained
    for made in copies:  # the update wrote after the step's sampling; the next use takes it in
        assert not _same(made.copy, made.model)
        assert _same(made.current(), made.model)
    before = {id(c): c.copy for c in copies}
    trainer.train_step()
    assert {id(c): c.copy for c in trainer.sampler.copies.values()} == before  # kept, not remade per call


def test_hf_dtype_resolves_per_machine_and_refuses_sharded_players():
    from types import SimpleNamespace

    from agents.hf import native_bfloat16
    from algorithms.training.rollouts import hf_sampling_dtype

    plain, sharded = SimpleNamespace(sharded=False), SimpleNamespace(sharded=True)
    assert hf_sampling_dtype("float32", {"defender": plain}) == "float32"
    assert hf_sampling_dtype("bfloat16", {"defender": plain}) == "bfloat16"
    assert hf_sampling_dtype("auto", {"defender": plain}) == ("bfloat16" if native_bfloat16() else "float32")
    assert hf_sampling_dtype("auto", {"defender": sharded}) == "float32"
    with pytest.raises(ValueError, match=r"rollout.hf_dtype bfloat16.*defender"):
        hf_sampling_dtype("bfloat16", {"defender": sharded})
