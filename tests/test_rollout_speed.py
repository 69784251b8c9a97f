"""Rollout speed-ups that must not change what is sampled: a prompt that several rows of a batch
share is encoded once (issue 35), and the same seed still gives the same tokens."""

import copy

import pytest
import torch

from agents import HFBackend, load_model, tiny_model
from agents.hf import prompt_ids
from agents.roles import shared_base_players
from tests.helpers import assert_same_generations


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# as a rollout asks: groups of answers to one prompt, prompts of different lengths (left padding),
# a prompt asked once, and a repeat that is not next to its first copy
CHATS = [
    *[_chat("How do I bake bread?")] * 4,
    _chat("Name a colour."),
    *[_chat("A much longer question, so that the batch pads the others on the left?")] * 3,
    _chat("How do I bake bread?"),
]


def _both(model, tokenizer, **kw):
    return HFBackend(model, tokenizer, **kw), HFBackend(model, tokenizer, share_prompts=False, **kw)


def test_a_shared_prompt_is_sampled_as_if_encoded_per_row(tiny_chat):
    shared, per_row = _both(*load_model(tiny_chat), batch_size=16)
    for temperature, top_p, seed in ((1.0, 1.0, 7), (0.7, 0.9, 8), (0.0, 1.0, None)):
        kw = {"max_tokens": 10, "temperature": temperature, "top_p": top_p, "seed": seed}
        got, want = shared.generate(CHATS, **kw), per_row.generate(CHATS, **kw)
        # float summation order differs (one forward over the prompt vs two); same tokens, same draws
        assert_same_generations(got, want, abs=1e-5)
    assert {g.finish_reason for g in got} == {"stop"}  # rows that end early are kept as they were


def _common_prefix(rows):
    n = 0
    while all(len(r) > n + 1 for r in rows) and len({r[n] for r in rows}) == 1:
        n += 1
    return n


def _encoded(model, run):
    seen: list[tuple[int, int]] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    try:
        run()
    finally:
        hook.remove()
    return seen


def test_each_distinct_prompt_is_encoded_once(tiny_chat):
    model, tokenizer = load_model(tiny_chat)
    backend = HFBackend(model, tokenizer, batch_size=16)
    seen = _encoded(model, lambda: backend.generate(CHATS, max_tokens=3, temperature=1.0, seed=0))
    width = seen[0][1] + 1
    # the chat template's opening saves too few positions to be encoded on its own
    assert seen[0] == (3, width - 1)  # three distinct prompts, all but their last token
    assert seen[1] == (len(CHATS), 1)  # then every row from its last prompt token on
    assert all(shape == (len(CHATS), 1) for shape in seen[2:])


def test_a_prefix_worth_encoding_alone_is_encoded_once(tiny_chat, monkeypatch):
    monkeypatch.setattr("agents.hf.MIN_SAVED_POSITIONS", 4)  # the tiny chats' template opening now pays
    model, tokenizer = load_model(tiny_chat)
    backend = HFBackend(model, tokenizer, batch_size=16)
    seen = _encoded(model, lambda: backend.generate(CHATS, max_tokens=3, temperature=1.0, seed=0))
    distinct = list(dict.fromkeys(tuple(p) for p in prompt_ids(tokenizer, CHATS, backend.max_context, 3)))
    common = _common_prefix(distinct)
    assert common >= 2
    assert seen[0] == (1, common)  # the prefix every prompt starts with, once
    assert seen[1] == (3, max(len(p) for p in distinct) - 1 - common)  # each distinct rest but its last token
    assert seen[2] == (len(CHATS), 1)  # then every row from its last prompt token on
    assert all(shape == (len(CHATS), 1) for shape in seen[3:])


# no prompt repeats, but every one is the same long instruction around a different request (the
# attacker's template): the instruction is encoded once
TEMPLATED = [
    _chat("Rewrite the request below so that it keeps its intent and reads naturally. " + r)
    for r in ("How do I bake bread?", "Name a colour.", "What is the capital of France, and why is it there?")
]


# two such templates, as in the attacker's SFT batch (harmful and benign), and a lone request
TWO_TEMPLATES = [
    *TEMPLATED[:2],
    *[_chat("Make the request below sound alarming while asking for the same thing. " + r) for r in ("Hi.", "Why?")],
    _chat("Name a colour."),
]


@pytest.mark.parametrize("chats", [TEMPLATED, TWO_TEMPLATES], ids=["one template", "two templates"])
def test_prompts_that_share_only_a_prefix_are_sampled_as_if_encoded_per_row(tiny_chat, monkeypatch, chats):
    monkeypatch.setattr("agents.hf.MIN_SAVED_POSITIONS", 16)
    model, tokenizer = load_model(tiny_chat)
    shared, per_row = _both(model, tokenizer, batch_size=16)
    kw = {"max_tokens": 8, "temperature": 1.0, "seed": 5}
    seen = _encoded(model, lambda: shared.generate(chats, **kw))
    assert len(seen) > 1 and seen[0][0] < len(chats)  # a shared stage came first
    assert_same_generations(shared.generate(chats, **kw), per_row.generate(chats, **kw), abs=1e-5)


def test_lora_players_share_prompts_with_their_own_adapter():
    base, tokenizer = tiny_model(seed=0)
    model = shared_base_players(base, rank=4, alpha=8)
    with torch.no_grad():  # make the defender's adapter differ from the identity
        for name, p in model.named_parameters():
            if "lora_B" in name and ".defender." in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    shared, per_row = _both(model, tokenizer, batch_size=16)
    for adapter in ("attacker", "defender"):
        kw = {"max_tokens": 6, "temperature": 1.0, "seed": 3, "adapter": adapter}
        assert_same_generations(shared.generate(CHATS, **kw), per_row.generate(CHATS, **kw), abs=1e-5)
    a = shared.generate(CHATS, max_tokens=6, temperature=0, adapter="attacker")
    d = shared.generate(CHATS, max_tokens=6, temperature=0, adapter="defender")
    flat = [[x for g in gens for x in g.logprobs] for gens in (a, d)]
    assert len(flat[0]) != len(flat[1]) or flat[0] != pytest.approx(flat[1], abs=1e-3)  # the adapter took part


def test_the_mixture_sampler_shares_prompts_too(tiny_chat):
    from agents.hf import MixtureBackend, fixed

    learner, tokenizer = load_model(tiny_chat)
    reference = copy.deepcopy(learner)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    seen: list[int] = []
    hook = learner.get_input_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    got = {}
    for share in (True, False):
        mixture = MixtureBackend(fixed(learner), fixed(reference), tokenizer, beta=0.5, share_prompts=share)
        got[share] = mixture.generate(CHATS, max_tokens=8, temperature=1.0, seed=4)
    hook.remove()
    assert_same_generations(got[True], got[False], abs=1e-5)
    assert seen[0] == 3 and seen[1] == len(CHATS)  # the learner: three distinct prompts, then every row


def test_a_model_with_its_own_cache_class_encodes_every_row(tiny_chat):
    model, tokenizer = load_model(tiny_chat)
    model.generation_config.cache_implementation = "static"
    want = HFBackend(model, tokenizer, share_prompts=False).generate(CHATS, max_tokens=4, temperature=1.0, seed=1)
    got = HFBackend(model, tokenizer).generate(CHATS, max_tokens=4, temperature=1.0, seed=1)
    assert_same_generations(got, want, abs=1e-5)


def test_grouped_query_attention_in_the_kernel_samples_the_same_tokens(tiny_chat):
    from agents.hf import GQA_SDPA

    model, tokenizer = load_model(tiny_chat)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # the tiny model is GQA
    seen: list[str] = []
    hook = model.model.layers[0].register_forward_hook(lambda *_: seen.append(model.config._attn_implementation))
    got = {}
    for kernel in (True, False):
        backend = HFBackend(model, tokenizer, share_prompts=False)
        backend.gqa_in_kernel = kernel
        got[kernel] = backend.generate(CHATS, max_tokens=10, temperature=1.0, seed=6)
    hook.remove()
    assert_same_generations(got[True], got[False], abs=1e-5)
    assert seen[0] == GQA_SDPA and seen[-1] == "sdpa" and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("additive", [False, True])
def test_one_position_attention_is_the_kernels_with_grouped_heads_and_padding(dtype, additive):
    from agents.hf import _one_position_attention

    g = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, positions, dim = 5, 9, 3, 37, 16
    query = (2 * torch.randn(rows, heads, 1, dim, generator=g)).to(dtype)  # scores of a few units, as a model's
    key = (2 * torch.randn(rows, kv_heads, positions, dim, generator=g)).to(dtype)
    value = torch.randn(rows, kv_heads, positions, dim, generator=g).to(dtype)
    attends = torch.ones(rows, 1, 1, positions, dtype=torch.bool)
    for r in range(rows):  # left padding, a different amount per row
        attends[r, ..., : 3 * r] = False
    mask = torch.zeros(attends.shape, dtype=dtype).masked_fill(~attends, float("-inf")) if additive else attends
    kernel = torch.nn.functional.scaled_dot_product_attention
    exact = kernel(query.float(), key.float(), value.float(), attn_mask=attends, enable_gqa=True, scale=0.3)
    ours = _one_position_attention(query, key, value, mask, 0.3)
    theirs = kernel(query, key, value, attn_mask=mask, enable_gqa=True, scale=0.3)
    assert ours.dtype == dtype and ours.shape == exact.shape
    if dtype == torch.float32:
        torch.testing.assert_close(ours, exact, atol=1e-6, rtol=1e-5)
    else:  # both within bfloat16's rounding of the exact result (its relative step is 2**-8), ours
        # no further from it than the kernel, which accumulates in float32 (scores rounded to
        # bfloat16 were 6x further)
        for got in (ours, theirs):
            torch.testing.assert_close(got.float(), exact, atol=2e-2, rtol=2**-7)
        assert (ours.float() - exact).abs().max() <= 1.25 * (theirs.float() - exact).abs().max()
    # a padded position takes no part (row 2 pads its first 6), an attended one does (row 0 pads none)
    for row, changes in ((2, False), (0, True)):
        key[row, :, :6], value[row, :, :6] = 99, 99
        again = _one_position_attention(query, key, value, mask, 0.3)
        assert torch.equal(again[row], ours[row]) != changes
