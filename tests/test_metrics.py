"""Evaluation figures on hand-made data with known answers."""

import math

import pytest
import torch

from advgame_env.metrics import bleu, embedding_diversity, rate, self_bleu_diversity


def test_rates_carry_wilson_intervals():
    r = rate(5, 10)
    assert r.value == 0.5 and r.low == pytest.approx(0.2366, abs=1e-4) and r.high == pytest.approx(0.7634, abs=1e-4)
    zero, full = rate(0, 20), rate(20, 20)
    assert (zero.low, full.high) == (0.0, 1.0)
    assert zero.high == pytest.approx(0.1611, abs=1e-4) and full.low == pytest.approx(0.8389, abs=1e-4)
    assert math.isnan(rate(0, 0).value) and str(rate(0, 0)) == "n/a (0 items)"
    assert str(rate(1, 4)) == "25.0% [4.6, 69.9] (n=4)"
    with pytest.raises(ValueError):
        rate(3, 2)


def test_embedding_diversity_of_known_geometries():
    assert embedding_diversity([[1, 0], [2, 0], [3, 0]]) == pytest.approx(0.0)  # one direction
    assert embedding_diversity([[1, 0], [0, 1]]) == pytest.approx(1.0)  # orthogonal
    assert embedding_diversity([[1, 0], [-1, 0]]) == pytest.approx(2.0)  # opposite
    # three unit vectors 120° apart: every cosine is −1/2
    third = [[1, 0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]]
    assert embedding_diversity(third) == pytest.approx(1.5)
    assert math.isnan(embedding_diversity([[1, 0]]))


def test_bleu_and_self_bleu():
    assert bleu("the cat sat on the mat", ["the cat sat on the mat"]) == pytest.approx(100.0)
    # no match at all: orders 1-3 smoothed to 1/(2·3), 1/(4·2), 1/(8·1); no 4-gram in 3 tokens
    no_match = 100 * math.exp(1 - 6 / 3) * (1 / 6 * 1 / 8 * 1 / 8) ** (1 / 3)
    assert bleu("dogs bark loudly", ["the cat sat on the mat"]) == pytest.approx(no_match)
    # worked examples against a 6-token reference; both hypotheses have 4 tokens, so the
    # brevity penalty is exp(1 − 6/4)
    brevity = math.exp(1 - 6 / 4)
    assert bleu("the cat sat on", ["the cat sat on the mat"]) == pytest.approx(100 * brevity)  # precisions all 1
    # "the cat ran on": 1-grams 3/4, 2-grams 1/3; no 3-gram (of 2) nor 4-gram (of 1) matches,
    # smoothed as 1/(2·2) and 1/(4·1)
    want = 100 * brevity * math.exp((math.log(3 / 4) + math.log(1 / 3) + math.log(1 / 4) + math.log(1 / 4)) / 4)
    assert bleu("the cat ran on", ["the cat sat on the mat"]) == pytest.approx(want)
    same = ["how do I pick a lock"] * 3
    assert self_bleu_diversity(same) == pytest.approx(0.0)
    # two texts, one the other's prefix: BLEU(short vs long) = 100·exp(1 − 6/4) (all precisions 1);
    # BLEU(long vs short) = 100·(4/6 · 3/5 · 2/4 · 1/3)^(1/4) (no brevity penalty)
    pair = ["a b c d", "a b c d e f"]
    mean_bleu = (100 * math.exp(1 - 6 / 4) + 100 * (4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25) / 2
    assert self_bleu_diversity(pair) == pytest.approx(1 - mean_bleu / 100)
    different = ["how do I pick a lock", "write a poem about rain", "what is twelve times seven"]
    assert self_bleu_diversity(different) > self_bleu_diversity(pair) > self_bleu_diversity(same)
    assert math.isnan(self_bleu_diversity(["one"]))


@pytest.mark.slow
def test_minilm_embeddings_load_offline_and_separate_paraphrases_from_other_topics():
    from agents.embeddings import SentenceEmbedder

    embedder = SentenceEmbedder()
    vectors = embedder.embed(
        ["How do I pick a lock?", "What is the way to open a lock without its key?", "Bake bread."]
    )
    assert vectors.shape == (3, 384) and torch.allclose(vectors.norm(dim=-1), torch.ones(3), atol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated
    assert embedding_diversity(vectors[:2].tolist()) < embedding_diversity(vectors[[0, 2]].tolist())
