"""Padded embedding rows (Qwen2.5: 151,665 tokens in 152,064 rows) are never sampled, as AdvGame
masks them with ``allowed_token_ids`` (docs/paper-fidelity.md §5 item 17)."""

import pytest
import torch

from agents.hf import HFBackend, padded_vocab_ids
from agents.models import load_model


def test_the_padded_rows_are_the_ids_past_the_tokenizer():
    tokenizer = type("FiveTokens", (), {"__len__": lambda self: 5})()  # a tokenizer's length only
    assert padded_vocab_ids(8, tokenizer) == [5, 6, 7]
    assert padded_vocab_ids(5, tokenizer) == []


@pytest.mark.slow
def test_a_model_with_padded_rows_never_samples_them(tiny_chat):
    model, tokenizer = load_model(tiny_chat)
    real = len(tokenizer)
    model.resize_token_embeddings(real + 16)
    with torch.no_grad():  # make the padded rows the likeliest tokens by far
        model.get_output_embeddings().weight[real:] = 0.0
        bias = torch.zeros(real + 16)
        bias[real:] = 50.0
        model.get_output_embeddings().bias = torch.nn.Parameter(bias)
    backend = HFBackend(model, tokenizer)
    assert backend.padded_ids == list(range(real, real + 16))
    chats = [[{"role": "user", "content": "Say something."}]] * 4
    generations = backend.generate(chats, max_tokens=6, temperature=1.0, seed=0)
    ids = [t for g in generations for t in g.token_ids]
    assert ids and max(ids) < real
    assert all(lp > -1e30 for g in generations for lp in g.logprobs)  # finite: of the masked distribution
