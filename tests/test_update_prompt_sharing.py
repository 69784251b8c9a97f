"""An update's forwards encode a prompt that several pairs share once (issue 35): the log-probs
and their gradients equal the one-forward path's up to float summation order."""

import pytest
import torch

from agents import tiny_model
from agents.hf import prompts_shareable, token_logprobs
from agents.roles import shared_base_players


def _pairs():
    # a preference pair's two answers to one prompt, a third answer to it, prompts of different
    # lengths (left padding of the shared part), an empty continuation and a prompt asked once
    long, short, once = list(range(5, 40)), [7, 8, 9, 10], [3, 4, 5, 6, 7, 8]
    return [(long, [11, 12, 13]), (short, [14]), (long, [15, 16]), (once, [17, 18]), (short, []), (long, [19] * 6)]


# positions a common prefix must save to be encoded alone, in these tests (the library's is
# sized for real prompts: agents.hf.MIN_SAVED_POSITIONS)
SAVED = 8


def _templated():
    # no prompt repeats, but all are one long instruction around different requests (the
    # attacker's prompts, an SFT batch): the instruction is encoded once; one request is longer
    head = list(range(100, 120))
    return [([*head, 7, 8], [11, 12]), ([*head, 9, 10, 11, 12], [13]), ([*head, 3, 4], [14, 15, 16])]


def _two_templates():
    # an SFT batch of the attacker: two templates (each shared by two prompts) after a common
    # opening, and a prompt of neither; each template is encoded once, the opening once
    a, b = list(range(100, 120)), list(range(200, 220))
    prompts = [[1, 2, 3, *a, 7, 8], [1, 2, 3, *a, 9, 10, 11], [1, 2, 3, *b, 4, 5], [1, 2, 3, *b, 6], [1, 2, 3, 50, 51]]
    return [(p, [30 + i, 31]) for i, p in enumerate(prompts)]


def _encoded(model, pairs):
    """The [rows, positions] of every forward ``token_logprobs`` runs on ``pairs``."""
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            token_logprobs(model, pairs, pad_id=0, max_context=512)
    finally:
        hook.remove()
    return seen


def _both(model, pairs, **kw):
    got = token_logprobs(model, pairs, pad_id=0, max_context=512, **kw)
    want = token_logprobs(model, pairs, pad_id=0, max_context=512, share_prompts=False, **kw)
    return got, want


@pytest.mark.parametrize("make_pairs", [_pairs, _templated, _two_templates])
@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompts_give_the_same_logprobs_and_gradients(lora, make_pairs, monkeypatch):
    monkeypatch.setattr("agents.hf.MIN_SAVED_POSITIONS", SAVED)
    model, _ = tiny_model(seed=0)
    if lora:
        model = shared_base_players(model, rank=4, alpha=8)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        model.set_adapter("defender")
    pairs = make_pairs()
    assert prompts_shareable(model, pairs, 512)
    grads = []
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        logps, mask = token_logprobs(model, pairs, pad_id=0, max_context=512, share_prompts=share)
        ((logps * mask).sum() * 0.1).backward()
        trained = [p for p in model.parameters() if p.requires_grad]
        grads.append((logps.detach(), mask, torch.cat([p.grad.flatten() for p in trained if p.grad is not None])))
    (got, got_mask, got_grad), (want, want_mask, want_grad) = grads
    assert torch.equal(got_mask, want_mask)
    assert torch.allclose(got, want, atol=1e-5)
    assert got_grad.shape == want_grad.shape and torch.allclose(got_grad, want_grad, atol=1e-5, rtol=1e-4)


def test_the_prompt_is_encoded_once_per_distinct_prompt():
    model, _ = tiny_model(seed=0)
    seen = _encoded(model, _pairs())
    assert seen == [(3, 34), (6, 7)]  # 3 distinct prompts but their last token; then 6 rows of 1 + 6 tokens


def test_a_prefix_all_prompts_share_is_encoded_once_and_a_short_one_not_alone(monkeypatch):
    model, _ = tiny_model(seed=0)
    assert not prompts_shareable(model, _templated(), 512)  # 2 x 20 positions saved: not worth a forward
    monkeypatch.setattr("agents.hf.MIN_SAVED_POSITIONS", SAVED)
    seen = _encoded(model, _templated())
    # the shared instruction once; the rests of the three prompts but their last token; then the rows
    assert seen == [(1, 20), (3, 3), (3, 4)]
    short = [([1, 2, 3, *p[-2:]], c) for p, c in _templated()]  # 2 x 3 positions saved, no repeat
    assert not prompts_shareable(model, short, 512)


def test_each_template_is_encoded_once_after_the_opening_they_share(monkeypatch):
    monkeypatch.setattr("agents.hf.MIN_SAVED_POSITIONS", SAVED)
    model, _ = tiny_model(seed=0)
    seen = _encoded(model, _two_templates())
    # the opening (3 tokens x 4 saved); the two templates and the lone prompt's next token; the
    # rests but their last tokens (at most 2); then the 5 rows: last prompt token + 2-token answer
    assert seen == [(1, 3), (3, 20), (5, 2), (5, 3)]
    monkeypatch.setattr("agents.hf.MIN_SAVED_POSITIONS", 47)  # each template alone saves 23: one forward of all
    assert not prompts_shareable(model, _two_templates(), 512)


def test_rows_cut_to_the_context_or_unique_prompts_take_the_one_forward_path():
    model, _ = tiny_model(seed=0)
    pairs = _pairs()
    assert not prompts_shareable(model, pairs, 40)  # the long prompt's rows no longer fit
    assert not prompts_shareable(model, [(p, c) for p, c in pairs[:2]], 512)  # no prompt repeats
    with torch.no_grad():
        (got, _), (want, _) = _both(model, pairs[:2])
    assert torch.equal(got, want)


def test_recomputed_layers_take_the_one_forward_path():
    model, _ = tiny_model(seed=0)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert not prompts_shareable(model, _pairs(), 512)  # their layers run without a cache
