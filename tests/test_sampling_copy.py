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
    for copy in (made.current(), made.current("defender")):  # the whole model; one adapter merged
        assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
        assert not any(p.requires_grad for p in copy.parameters())
        # the rotary frequencies keep float32: rounded, every position's angle would move
        assert {b.dtype for b in copy.buffers() if b.is_floating_point()} == {torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert _same(made.current(), model)


def test_an_optimizer_step_and_an_adapter_copy_reach_the_copy_and_nothing_else_is_copied():
    model, _ = _lora_players()
    made = SamplingCopy(model)
    copied = made.current()
    trained = [p for name, p in model.named_parameters() if ".defender." in name and "lora_B" in name]
    optimizer = torch.optim.AdamW(trained, lr=0.1)
    for p in trained:
        p.grad = torch.randn_like(p)
    optimizer.step()
    copy_adapter(model, "defender", "attacker")  # in place, as the EMA and snapshot copies write
    # a copied tensor that its source did not change since is left alone: mark one to see it stay
    base = next(name for name, _ in model.named_parameters() if "lora_" not in name)
    marked = dict(copied.named_parameters())[base]
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
    first = made.current()
    copy_adapter(model, "defender", "defender_ema")  # adds an adapter: new parameters
    assert (now := made.current()) is not first
    assert "defender_ema" in now.peft_config
    assert _same(now, model)


def _trained_adapters(model):
    """Non-zero B matrices (a fresh adapter is the identity), so each adapter moves the model."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def _merged_in(copy, model, adapter) -> bool:
    """Every adapted weight of ``copy`` is bfloat16(W + s·B·A) of ``model``'s ``adapter``."""
    from agents.hf import lora_layers

    weights = dict(copy.named_parameters())
    for path, layer in lora_layers(model, adapter).items():
        a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
        want = (layer.base_layer.weight + layer.scaling[adapter] * (b @ a)).to(torch.bfloat16)
        if not torch.equal(weights[f"{path}.weight"], want):
            return False
    return True


def test_an_adapter_is_merged_into_a_plain_copy_that_samples_as_the_peft_model_does():
    model, tokenizer = _lora_players()
    _trained_adapters(model)
    made = SamplingCopy(model)
    merged = made.current("defender")
    assert not hasattr(merged, "peft_config")  # one matmul per linear, no PEFT layers
    assert _merged_in(merged, model, "defender")
    ids = torch.tensor([tokenizer.encode("How do I bake bread?")])
    model.set_adapter("defender")
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = merged(input_ids=ids).logits.float()
        other = model(input_ids=ids).logits if model.set_adapter("attacker") is None else None
    assert (got - want).abs().max() < 0.05 * want.abs().max()  # bfloat16 rounding
    assert (other - want).abs().max() > 10 * (got - want).abs().max()  # the adapters do differ


def test_an_adapters_step_reaches_its_merged_copy_only_and_the_adapters_share_the_rest():
    model, tokenizer = _lora_players()
    _trained_adapters(model)
    made = SamplingCopy(model)
    defender, attacker = made.current("defender"), made.current("attacker")
    shared = dict(attacker.named_parameters())
    for name, param in defender.named_parameters():  # embeddings and norms: one tensor for both
        assert (param.data_ptr() == shared[name].data_ptr()) == ("_proj" not in name)
    before = {name: p.clone() for name, p in attacker.named_parameters()}
    trained = [p for name, p in model.named_parameters() if ".defender." in name and "lora_A" in name]
    with torch.no_grad():
        for p in trained:
            p.add_(0.1)
    assert not _merged_in(made.copies["defender"].copy, model, "defender")  # until its next use
    assert made.current("defender") is defender and _merged_in(defender, model, "defender")
    assert made.current("attacker") is attacker
    assert all(torch.equal(p, before[name]) for name, p in attacker.named_parameters())
    # sampling as an adapter leaves the model's active adapter and its trainable set alone
    model.set_adapter("attacker")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    backend = HFBackend(model, tokenizer, batch_size=8, sampling_copy=made)
    assert all(g.token_ids for g in backend.generate(CHATS, max_tokens=4, seed=0, adapter="defender"))
    assert model.active_adapter == "attacker"
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable
    with pytest.raises(KeyError, match="no adapter named 'judge'"):
        backend.generate(CHATS, max_tokens=4, adapter="judge")


def test_an_adapter_peft_cannot_merge_linearly_samples_from_a_cast_copy():
    from peft import LoraConfig

    model, _ = _lora_players()
    model.add_adapter("dora", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    made = SamplingCopy(model)
    copy = made.current("dora")
    assert copy.peft_config and copy.active_adapter == "dora"
    assert list(made.copies) == [None]  # the whole model, cast, with the adapter set
    assert _same(copy, model)


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


@pytest.mark.parametrize("lora", [False, True])
def test_a_training_run_samples_from_copies_of_the_weights_it_trains(tiny_chat, tmp_path, lora):
    from algorithms.training.trainer import Trainer
    from tests.helpers import config

    overrides = ("rollout.hf_dtype=bfloat16", "run.validate_every=0", "optim.lr=1e-2", f"model.lora={lora}")
    trainer = Trainer(config(tiny_chat, tmp_path, *overrides))
    for _ in range(2):
        metrics = trainer.train_step()
        assert all(v == v for v in metrics.values() if isinstance(v, float))  # no NaN
    copies = list(trainer.sampler.copies.values())
    modules = {id(m) for player in trainer.players.values() for m in player.modules()}
    assert copies and all(id(made.model) in modules for made in copies)  # copies of what is trained
    # the update wrote after the step's sampling (a player that found no pair may not have
    # moved): a copy is behind until its next use takes the writes in
    stale = []
    for made in copies:
        if not lora:
            (kept,) = made.copies.values()  # full players: one cast copy of each module
            stale.append(not _same(kept.copy, made.model))
            assert _same(made.current(), made.model)
            continue
        assert set(made.copies) == {"attacker_ema", "defender_ema"}  # DPO-MD samples the EMAs
        for adapter, kept in made.copies.items():
            stale.append(not _merged_in(kept.copy, made.model, adapter))
            assert _merged_in(made.current(adapter), made.model, adapter)
    assert any(stale)
    before = {id(c): [k.copy for k in c.copies.values()] for c in copies}
    trainer.train_step()
    after = {id(c): [k.copy for k in c.copies.values()] for c in trainer.sampler.copies.values()}
    assert after == before  # kept, not remade per call


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


def test_model_precision_native_trains_in_bfloat16_only_where_the_machine_multiplies_it():
    from agents.hf import native_bfloat16
    from algorithms.config import load_config
    from algorithms.training.run_setup import bf16, precision

    cpu = torch.device("cpu")
    native = load_config(None, ["model.precision=native"])
    assert bf16(native, cpu) == native_bfloat16()
    assert isinstance(precision(native, cpu, sharded=False), torch.autocast) == native_bfloat16()
    assert not bf16(load_config(None, ["model.precision=auto"]), cpu)  # auto: GPUs only, as before
    assert bf16(load_config(None, ["model.precision=bf16"]), cpu)
