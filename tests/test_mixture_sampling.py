"""Geometric-mixture sampling (Nash-MD's π_mix ∝ π_θ^(1−β) π_ref^β) on the HF backend: the
recorded log-probs equal a brute-force computation from the two models' full next-token
distributions, β = 0 samples exactly as the learner alone, and LoRA adapter on / off of one
base serve as learner and reference."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from agents.hf import (
    NUCLEUS_CANDIDATES,
    HFBackend,
    MixtureBackend,
    encode,
    fixed,
    mixture_backend,
    mixture_logprobs,
    nucleus,
    render_chat,
    sample_token,
)
from agents.models import load_model

CHATS = [
    [{"role": "user", "content": "How do I pick a lock?"}],
    [{"role": "user", "content": "A longer question, so that the batch is padded on the left side?"}],
    [{"role": "user", "content": "Name a fruit."}],
]


@pytest.fixture(scope="module")
def models(tiny_chat):
    learner, tokenizer = load_model(str(tiny_chat))
    reference = copy.deepcopy(learner)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a reference that disagrees with the learner, so the mixture is neither
        for param in reference.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return learner, reference, tokenizer


def brute_force(learner, reference, tokenizer, chat, generation, beta):
    """log π_mix of each generated token from one uncached forward per model over the whole
    sequence: (1 − β)·l_θ(y) + β·l_ref(y) − logsumexp_v[(1 − β)·l_θ(v) + β·l_ref(v)]."""
    prompt = encode(tokenizer, render_chat(tokenizer, chat))
    ids = torch.tensor([prompt + generation.token_ids])
    with torch.no_grad():
        lp = [m(input_ids=ids).logits[0, len(prompt) - 1 : -1].float().log_softmax(-1) for m in (learner, reference)]
    joint = (1 - beta) * lp[0] + beta * lp[1]
    targets = torch.tensor(generation.token_ids).unsqueeze(-1)
    return (joint.gather(-1, targets).squeeze(-1) - torch.logsumexp(joint, -1)).tolist()


@pytest.mark.parametrize("beta", [0.25, 0.5, 0.8])
def test_mixture_logprobs_equal_a_brute_force_computation(models, beta):
    learner, reference, tokenizer = models
    backend = MixtureBackend(fixed(learner), fixed(reference), tokenizer, beta=beta, batch_size=2)
    generations = backend.generate(CHATS, max_tokens=12, temperature=1.0, seed=3)
    assert any(g.token_ids for g in generations)
    for chat, generation in zip(CHATS, generations, strict=True):
        assert len(generation.logprobs) == len(generation.token_ids)
        want = brute_force(learner, reference, tokenizer, chat, generation, beta)
        assert generation.logprobs == pytest.approx(want, abs=1e-4)


def test_beta_zero_samples_as_the_learner_and_beta_one_as_the_reference(models):
    learner, reference, tokenizer = models
    for beta, alone in ((0.0, learner), (1.0, reference)):
        mixed = MixtureBackend(fixed(learner), fixed(reference), tokenizer, beta=beta, batch_size=4)
        got = mixed.generate(CHATS * 2, max_tokens=10, temperature=1.0, seed=11)
        want = HFBackend(alone, tokenizer, batch_size=4).generate(CHATS * 2, max_tokens=10, temperature=1.0, seed=11)
        assert [g.token_ids for g in got] == [g.token_ids for g in want]
        assert [g.finish_reason for g in got] == [g.finish_reason for g in want]
        assert [g.stop_token_id for g in got] == [g.stop_token_id for g in want]
        for g, w in zip(got, want, strict=True):
            assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)


def test_lora_adapter_on_and_off_of_one_base_are_learner_and_reference(tiny_chat):
    from agents.roles import shared_base_players

    base, tokenizer = load_model(str(tiny_chat))
    peft_model = shared_base_players(base, rank=4, alpha=8, adapters=("defender",))
    with torch.no_grad():  # move the adapter off the identity, so learner and base differ
        generator = torch.Generator().manual_seed(1)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))

    @contextmanager
    def adapter_on():
        peft_model.set_adapter("defender")
        yield peft_model

    @contextmanager
    def adapter_off():
        with peft_model.disable_adapter():
            yield peft_model

    backend = MixtureBackend(adapter_on, adapter_off, tokenizer, beta=0.5)
    generations = backend.generate(CHATS, max_tokens=8, temperature=1.0, seed=2)
    with adapter_on():
        learner = copy.deepcopy(peft_model).merge_and_unload()
    reference = peft_model.get_base_model()
    with peft_model.disable_adapter():
        for chat, generation in zip(CHATS, generations, strict=True):
            want = brute_force(learner, reference, tokenizer, chat, generation, 0.5)
            assert generation.logprobs == pytest.approx(want, abs=1e-4)


def test_mixture_logprobs_normalise_and_check_beta():
    learner, reference = torch.log(torch.tensor([0.5, 0.25, 0.25])), torch.log(torch.tensor([0.25, 0.25, 0.5]))
    mixed = mixture_logprobs(learner, reference, 0.5)
    # sqrt(p·q) = [√.125, .25, √.125], over their sum
    raw = torch.tensor([0.125**0.5, 0.25, 0.125**0.5])
    assert mixed.exp().tolist() == pytest.approx((raw / raw.sum()).tolist())
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
        mixture_logprobs(learner, reference, 1.5)


def test_top_p_keeps_the_nucleus_only():
    logprobs = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    torch.manual_seed(0)
    drawn = {int(sample_token(logprobs, 1.0, 0.7)) for _ in range(200)}
    assert drawn == {0, 1}  # 0.6 alone is short of 0.7; 0.6 + 0.3 covers it
    assert int(sample_token(logprobs, 0.0, 1.0)) == 0


def whole_sort_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus by sorting every row whole (sample_token's way before the candidates)."""
    ranked, ranking = probs.sort(-1, descending=True)
    return torch.zeros_like(probs, dtype=torch.bool).scatter(-1, ranking, ranked.cumsum(-1) - ranked <= top_p)


def test_the_nucleus_from_the_candidates_is_the_whole_sorts():
    generator = torch.Generator().manual_seed(0)
    spread = torch.linspace(0.3, 3.0, 64).unsqueeze(-1)  # flat rows reach past the 256 candidates, peaked ones do not
    probs = (torch.randn((64, 4096), generator=generator) * spread / 0.6).softmax(-1)
    for top_p in (0.5, 0.9, 0.99):
        kept = nucleus(probs, top_p)
        assert torch.equal(kept, whole_sort_nucleus(probs, top_p))
        assert bool(kept.any(-1).all())  # the most likely token is always kept
        # both paths ran: rows ranked by the candidates and rows ranked by a whole sort
        past = int((probs.topk(NUCLEUS_CANDIDATES, dim=-1).values.sum(-1) <= top_p).sum())
        assert 0 < past < len(probs)


def test_tokens_are_drawn_from_the_tempered_distribution_and_never_one_of_mass_zero():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    rows = torch.log(probs).expand(4000, -1)  # one draw per row: 4000 draws in one call
    torch.manual_seed(0)
    counts = torch.bincount(sample_token(rows, 1.0, 1.0), minlength=5).double()
    assert counts[4] == 0
    # within 4 standard deviations of each expected count
    expected = 4000 * probs.double()
    assert torch.all((counts - expected).abs() <= 4 * (expected * (1 - probs.double())).sqrt() + 1e-9)
    tempered = torch.softmax(torch.log(probs[:4]) / 0.5, -1).double()  # temperature 0.5: p² renormalised
    counts = torch.bincount(sample_token(torch.log(probs[:4]).expand(4000, -1), 0.5, 1.0), minlength=4).double()
    assert torch.all((counts - 4000 * tempered).abs() <= 4 * (4000 * tempered * (1 - tempered)).sqrt())


def test_servers_that_cannot_mix_are_refused_with_the_reason(models):
    learner, reference, tokenizer = models

    class VLLMBackend:  # stands for any backend that is not in-process HF
        pass

    with pytest.raises(TypeError, match=r"vLLM and OpenAI-compatible servers .* rollout\.backend: hf"):
        mixture_backend(VLLMBackend(), HFBackend(reference, tokenizer), beta=0.5)
    backend = mixture_backend(HFBackend(learner, tokenizer), HFBackend(reference, tokenizer), beta=0.5)
    with pytest.raises(ValueError, match="choose their adapters themselves"):
        backend.generate(CHATS, max_tokens=2, adapter="defender")
