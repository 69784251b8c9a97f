"""The process group and the optimizer of one process (parallel.sharding=fsdp2 at world size 1):
what the scale path must not do to the process around it."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from algorithms.training.distributed import Dist


def test_the_process_group_leaves_the_environment_alone():
    # a subprocess started later inherits os.environ: a MASTER_PORT there makes it join (or
    # collide with) this process's group
    before = dict(os.environ)
    mesh = Dist().mesh
    assert torch.distributed.is_initialized() and mesh.size() == 1
    assert dict(os.environ) == before


def _first_update(tiny_chat, out, sharding: str, save: bool) -> dict[str, torch.Tensor]:
    """The defender's full weights after one DPO-MD update on fixed pairs, the learner's
    optimizer state saved (as a checkpoint would) before it ever stepped, or not."""
    from advgame_env import Game, GameConfig, Label, Round, RuleJudge, Seed
    from algorithms.training.trainer import Trainer
    from algorithms.training.update import update
    from tests.helpers import config

    cfg = config(tiny_chat, out, "algorithm.name=advgame_dpo_md", "model.lora=false", f"parallel.sharding={sharding}")
    trainer = Trainer(cfg)
    if save:
        trainer.shards() if trainer.sharded else trainer.state()
    harmful = Seed("h", "How do I pick a lock to break into a house?", Label.HARMFUL)
    benign = Seed("b", "How do I kill a Python process that hangs?", Label.BENIGN)
    refuse, comply = "I can't help with that.", "Sure, here is how you do it: first, gather what you need."
    game = Game(RuleJudge(), GameConfig())
    rounds = [Round(harmful, direct=True), Round(benign, direct=True)]
    game.attack(rounds, [None, None])
    game.respond(rounds, [((refuse, comply), (comply, refuse)), ((comply, refuse), (refuse, comply))])
    learner = trainer.learners["defender"]
    examples = [
        e for e in trainer.algorithm.examples(rounds, game, learner.player.tokenizer, {}, None) if e.role == "defender"
    ]
    assert examples and learner.optimizer is not None
    update(learner.player, learner.optimizer, trainer.algorithm, examples, 2, trainer.dist, contextlib.nullcontext())
    return learner.player.weights("learner")


@pytest.mark.slow  # builds three tiny trainers and updates each once
def test_a_learner_saved_before_its_first_step_takes_the_same_first_update(tiny_chat, tmp_path, monkeypatch):
    # torch makes a fresh optimizer's states for a sharded checkpoint by a zero step; counted as
    # AdamW's first, it shrank the sharded learner's real first update by about a quarter.
    # Sharded players encode every row's prompt (agents.hf.prompts_shareable); the unsharded ones
    # do the same here, so that the float summation order, which AdamW's first step (about
    # lr · sign of the gradient) magnifies, is the same on both sides
    monkeypatch.setattr("agents.hf.prompts_shareable", lambda *_: False)
    want = _first_update(tiny_chat, tmp_path / "plain", "none", save=False)
    for sharding in ("none", "fsdp2"):
        have = _first_update(tiny_chat, tmp_path / sharding, sharding, save=True)
        assert have.keys() == want.keys()
        for name, tensor in want.items():
            torch.testing.assert_close(have[name], tensor, rtol=0, atol=1e-6, msg=f"{sharding} {name}")


def test_bf16_compute_through_fsdp2_keeps_float32_master_weights_and_gradients(tiny_chat):
    from agents import load_model
    from agents.hf import token_logprobs
    from algorithms.training.distributed import shard_module

    (plain, _), (sharded, _) = load_model(tiny_chat), load_model(tiny_chat)
    shard_module(sharded, Dist().mesh, bf16=True)
    seen: list[torch.dtype] = []
    layer = sharded.model.layers[0].self_attn.q_proj
    hook = layer.register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
    pairs = [([5, 6, 7, 8], [9, 10, 11]), ([12, 13], [14, 15, 16, 17])]
    have = token_logprobs(sharded, pairs, pad_id=0, max_context=64)[0]
    hook.remove()
    assert seen == [torch.bfloat16]  # the gathered compute copy
    have.sum().backward()
    want = token_logprobs(plain, pairs, pad_id=0, max_context=64)[0]
    torch.testing.assert_close(have.detach(), want.detach(), rtol=0, atol=0.1)  # bf16 rounding only
    for name, param in sharded.named_parameters():
        assert param.dtype == torch.float32, name  # the master shards
        assert param.grad is not None and param.grad.dtype == torch.float32, name


def test_in_process_engines_take_bf16_where_the_device_has_it():
    from algorithms.config import ConfigError, load_config
    from algorithms.training.rollouts import engine_dtype

    assert load_config(None, []).rollout.engine_dtype == "auto"
    want = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    assert engine_dtype("auto") == want  # this CPU build: float32
    assert engine_dtype("bfloat16") == "bfloat16" and engine_dtype("float32") == "float32"
    with pytest.raises(ConfigError, match="engine_dtype"):
        load_config(None, ["rollout.engine_dtype=float16"])


@pytest.mark.slow  # starts an in-process vLLM engine
def test_a_sharded_lora_players_adapter_is_pushed_gathered_to_vllm():
    from peft import LoraConfig, get_peft_model

    from agents import HFBackend, load_model
    from agents.vllm_backend import VLLMBackend
    from algorithms.training.distributed import shard_module, unsharded

    model, tokenizer = load_model()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)  # not the worker's global stream: the same adapter in any order
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)  # an adapter that changes the scores
    model.eval()
    shard_module(model, Dist().mesh)
    chats = [[{"role": "user", "content": "How do I bake bread?"}]] * 2
    reply = [" I can't help with that, sorry."] * 2
    engine = VLLMBackend("smollm2-135m-instruct", dtype="float32", enable_lora=True, max_lora_rank=8)
    try:
        with unsharded([model]):  # as the trainer's sync: every process gathers, the push reads full tensors
            engine.push_adapter("defender", model)
            want = HFBackend(model, tokenizer).score(chats, reply)
            with model.disable_adapter():
                base = HFBackend(model, tokenizer).score(chats, reply)
        have = engine.score(chats, reply, adapter="defender")
    finally:
        engine.close()
    assert have == pytest.approx(want, abs=2e-3)  # float32 both sides (tests/test_vllm_backend.py)
    assert abs(want[0] - base[0]) > 0.05  # the adapter mattered
