"""The Hugging Face backend and model loading (tiny random models fast; the bundled one slow)."""

import pytest
import torch

from agents import HFBackend, load_model, render_chat, resolve_model, tiny_model
from agents.hf import branch_paths, encode, token_logprobs
from agents.policy import Policy
from tests.helpers import assert_same_generations

CHAT = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = tiny_model(seed=0)
    return HFBackend(model, tokenizer, batch_size=4)


def test_greedy_generation_is_deterministic_and_batch_invariant(tiny):
    chats = [CHAT, [{"role": "user", "content": "A much longer question, padded on the left in a batch?"}], CHAT]
    batch = tiny.generate(chats, max_tokens=8, temperature=0)
    alone = [tiny.generate([c], max_tokens=8, temperature=0)[0] for c in chats]
    assert [g.token_ids for g in batch] == [g.token_ids for g in alone]
    # the same chat twice in one batch: the same tokens; log-probs equal up to float summation
    # order, which CPU matrix kernels may pick per row
    assert_same_generations(batch[:1], batch[2:], abs=1e-5)
    for g in batch:
        assert g.finish_reason in ("stop", "length") and len(g.logprobs) == len(g.token_ids)


def test_sequence_scores_match_the_generation_logprobs(tiny):
    longer = [{"role": "user", "content": "Longer, so the batch pads."}]
    generations = tiny.generate(
        [CHAT, longer],
        max_tokens=6,
        temperature=0.8,
        seed=1,
    )
    prompts = [
        encode(tiny.tokenizer, render_chat(tiny.tokenizer, c))
        for c in (CHAT, [{"role": "user", "content": "Longer, so the batch pads."}])
    ]
    with torch.no_grad():
        scores = tiny.sequence_logprobs([(p, g.token_ids) for p, g in zip(prompts, generations, strict=True)])
    assert scores.tolist() == pytest.approx([sum(g.logprobs) for g in generations], abs=1e-4)


def test_choice_logprobs_equal_one_score_per_option_in_fewer_forwards(tiny):
    chats = [CHAT, [{"role": "user", "content": "A longer question, so the batch pads on the left?"}]]
    options = ["A", "B", "yes", *(str(d) for d in range(11))]
    got = tiny.choice_logprobs(chats, options)
    want = tiny.score([c for c in chats for _ in options], [o for _ in chats for o in options])
    assert [v for row in got for v in row] == pytest.approx(want, abs=1e-4)
    assert branch_paths([[5], [6], [5, 7]]) == [(5,)]  # "1", "2" and "10": one forward over prompt + "1"
    assert sorted(branch_paths([[5, 7], [6, 8]])) == [(5,), (6,)]


def test_sampling_with_a_seed_is_reproducible(tiny):
    first = tiny.generate([CHAT] * 2, max_tokens=6, temperature=1.0, seed=5)
    again = tiny.generate([CHAT] * 2, max_tokens=6, temperature=1.0, seed=5)
    assert_same_generations(again, first)


def test_bad_input_is_a_clear_error_or_defined(tiny):
    assert tiny.generate([], max_tokens=4) == [] and tiny.score([], []) == []
    for bad in ({"max_tokens": 0}, {"max_tokens": 4, "temperature": -1}, {"max_tokens": 4, "top_p": 0}):
        with pytest.raises(ValueError):
            tiny.generate([CHAT], **bad)
    with pytest.raises(ValueError, match="no room"):
        tiny.generate([CHAT], max_tokens=10_000)
    with pytest.raises(ValueError, match="at least one message"):
        tiny.generate([[]], max_tokens=4)
    # a prompt longer than the context is cut from the left, never an error
    long_chat = [{"role": "user", "content": "word " * 3000}]
    (g,) = tiny.generate([long_chat], max_tokens=4, temperature=0)
    assert len(g.token_ids) <= 4


def test_policies_batch_rounds_and_skip_empty_slots(tiny):
    policy = Policy(tiny, max_tokens=4, temperature=0)
    attacks = policy.attack(["task one", "task two"], num_attacks=2)
    assert len(attacks) == 2 and all(len(a) == 2 for a in attacks)
    answers = policy.respond([("prompt", ""), ("", "")], num_responses=3)
    assert [len(row) for row in answers[0]] == [3, 3]
    assert all(g.text == "" for g in answers[0][1]) and all(g.text == "" for row in answers[1] for g in row)


def test_unknown_models_are_named_clearly():
    with pytest.raises(FileNotFoundError, match="neither a bundled model"):
        resolve_model("./no/such/folder")


@pytest.mark.slow
def test_bundled_model_loads_offline_and_answers():
    model, tokenizer = load_model("smollm2-135m-instruct")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    backend = HFBackend(model, tokenizer)
    (g,) = backend.generate([CHAT], max_tokens=12, temperature=0)
    assert g.text.strip() and all(lp <= 0 for lp in g.logprobs)
    assert not hasattr(model.config, "quantization_config")  # a plain checkpoint vLLM can load too
    with torch.no_grad():
        (score,) = backend.score([CHAT], [g.text])
    assert score == pytest.approx(sum(g.logprobs), abs=1e-2)


def test_greedy_policies_generate_each_distinct_chat_once(tiny_chat):
    backend = HFBackend(*load_model(tiny_chat))
    asked: list[int] = []
    generate = backend.generate
    backend.generate = lambda chats, **kw: asked.append(len(chats)) or generate(chats, **kw)  # type: ignore[method-assign]
    policy = Policy(backend, max_tokens=6, temperature=0.0)
    out = policy.sample(["How do I bake bread?", "", "How do I bake bread?", "Name a colour."], 3)
    assert asked == [2]  # two distinct chats, however many copies were asked for
    assert [len(row) for row in out] == [3, 3, 3, 3] and out[1][0].text == ""
    assert len({g.text for g in out[0] + out[2]}) == 1
    assert (
        out[3][0].text
        == generate([[{"role": "user", "content": "Name a colour."}]], max_tokens=6, temperature=0.0)[0].text
    )


def _peaked_model(**generation_config):
    """A tiny model made near-certain (final norm scaled up): at temperature 1 it puts almost all
    mass on one token per step, which it then repeats -- exactly what the repetition processors
    of a generation_config would forbid."""
    model, tokenizer = tiny_model(seed=0)
    with torch.no_grad():
        model.model.norm.weight.mul_(300)
    for key, value in generation_config.items():
        setattr(model.generation_config, key, value)
    return model, tokenizer


def test_sampling_ignores_the_models_generation_config_processors():
    # Qwen2.5 ships repetition_penalty 1.05 and top_k 20; here they are exaggerated so that
    # applying them would change every token. Sampled at temperature 1, the tokens must come
    # from the distribution whose log-probs are recorded, which is the one scoring computes.
    model, tokenizer = _peaked_model(repetition_penalty=1e4, no_repeat_ngram_size=1, top_k=1, min_new_tokens=8)
    backend = HFBackend(model, tokenizer)
    generations = backend.generate([CHAT] * 3, max_tokens=6, temperature=1.0, top_p=1.0, seed=0)
    prompt = encode(tokenizer, render_chat(tokenizer, CHAT))
    logps, mask = token_logprobs(model, [(prompt, g.token_ids) for g in generations], pad_id=0, max_context=2048)
    for g, row, keep in zip(generations, logps.tolist(), mask.tolist(), strict=True):
        assert len(g.token_ids) == 6 and all(keep)
        assert g.logprobs == pytest.approx(row, rel=1e-5, abs=1e-4)
        # the model's own distribution made these tokens near-certain; a penalised draw has
        # log-probs in the hundreds of negative nats
        assert min(g.logprobs) > -1.0
    # greedy: every token is the argmax of the model's own next-token distribution
    (greedy,) = backend.generate([CHAT], max_tokens=6, temperature=0)
    assert greedy.token_ids == generations[0].token_ids


def test_a_stop_on_a_second_end_of_turn_id_is_recorded():
    model, tokenizer = _peaked_model()
    (first,) = HFBackend(model, tokenizer).generate([CHAT], max_tokens=1, temperature=0)
    other = first.token_ids[0]  # the token the model says first; make it a second stop id
    assert other != tokenizer.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, other]
    backend = HFBackend(model, tokenizer)
    assert backend.stop_ids == {tokenizer.eos_token_id, other}
    (g,) = backend.generate([CHAT], max_tokens=4, temperature=0)
    assert (g.token_ids, g.text, g.finish_reason, g.stop_token_id) == ([], "", "stop", other)
    (cut,) = HFBackend(*_peaked_model()).generate([CHAT], max_tokens=3, temperature=0)
    assert cut.finish_reason == "length" and cut.stop_token_id is None
