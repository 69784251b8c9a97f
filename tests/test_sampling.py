"""Sampling is the distribution whose log-probs are recorded, and a stopped sample ends with the
token it stopped on, on every backend (no engine is started here: vLLM's outputs are built by
hand, and the ``vllm serve`` launcher is checked up to the command line it hands to vLLM)."""

from __future__ import annotations

import math
import os
import sys
import types
from types import SimpleNamespace

import pytest

from advgame_env.game import Sample
from agents.hf import Generation
from agents.vllm_backend import engine_generation
from algorithms.training.batches import continuation

EOS, OTHER_STOP = 2, 0  # <|im_end|> and <|endoftext|> of the bundled tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    from agents.models import tiny_model

    return tiny_model()[1]


def _step(token: int, logprob: float) -> dict[int, SimpleNamespace]:
    return {token: SimpleNamespace(logprob=logprob)}


def _output(ids, finish_reason, stop_reason=None):
    return SimpleNamespace(
        text="hi",
        token_ids=ids,
        logprobs=[_step(t, -0.5 - i) for i, t in enumerate(ids)],
        finish_reason=finish_reason,
        stop_reason=stop_reason,
    )


def test_a_stopped_sample_appends_the_token_it_stopped_on(tokenizer):
    stopped = Generation("hi", [5, 6], [-0.1, -0.2], "stop", stop_token_id=OTHER_STOP)
    ids, logprobs = continuation(tokenizer, Sample("hi", "hi", generation=stopped))
    assert ids == [5, 6, OTHER_STOP]
    assert logprobs is not None and logprobs[:2] == [-0.1, -0.2] and math.isnan(logprobs[2])
    # a backend that cannot tell (and a text action) ends with the tokenizer's end of turn
    unknown = Generation("hi", [5, 6], [-0.1, -0.2], "stop")
    assert continuation(tokenizer, Sample("hi", "hi", generation=unknown))[0] == [5, 6, EOS]
    cut = Generation("hi", [5, 6], [-0.1, -0.2], "length")
    assert continuation(tokenizer, Sample("hi", "hi", generation=cut))[0] == [5, 6]


def test_vllm_outputs_record_the_stop_token_off_the_tokens():
    stops = {EOS, OTHER_STOP}
    on_eos = engine_generation(_output([7, 8, EOS], "stop"), stops)
    assert (on_eos.token_ids, on_eos.logprobs, on_eos.stop_token_id) == ([7, 8], [-0.5, -1.5], EOS)
    # a second end-of-turn id of the model's generation_config: vLLM names it in stop_reason
    on_other = engine_generation(_output([7, OTHER_STOP], "stop", stop_reason=OTHER_STOP), stops)
    assert (on_other.token_ids, on_other.finish_reason, on_other.stop_token_id) == ([7], "stop", OTHER_STOP)
    cut = engine_generation(_output([7, 8], "length"), stops)
    assert (cut.token_ids, cut.finish_reason, cut.stop_token_id) == ([7, 8], "length", None)
    by_string = engine_generation(_output([7, 8], "stop", stop_reason="\n\n"), stops)
    assert (by_string.token_ids, by_string.stop_token_id) == ([7, 8], None)


def _launched(monkeypatch, argv):
    """The command line ``agents.vllm_serve`` hands to vLLM's own CLI (replaced by a recorder)."""
    from agents import vllm_serve

    seen: list[list[str]] = []
    fake = types.ModuleType("vllm.entrypoints.cli.main")
    fake.main = lambda: seen.append(list(sys.argv))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.entrypoints.cli.main", fake)
    monkeypatch.setattr(vllm_serve, "_answer_for_the_cpu_build", lambda: None)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert vllm_serve.main(argv) == 0
    return seen[0]


def test_the_serve_launcher_turns_off_the_models_sampling_defaults(monkeypatch, tmp_path):
    model = str(tmp_path)  # a model folder
    argv = _launched(monkeypatch, [model, "--port", "8000"])
    assert argv[:3] == ["vllm", "serve", model]
    assert argv[argv.index("--generation-config") + 1] == "vllm"
    # an explicit choice on the command line is kept, in either spelling
    for given in (["--generation-config", "auto"], ["--generation_config=/cfg"]):
        argv = _launched(monkeypatch, [model, *given])
        assert argv[3 : 3 + len(given)] == given and "--generation-config" not in argv[3 + len(given) :]
    # the worker extension (weight pushes, the advgame_file transport) is added unless given
    assert argv[argv.index("--worker-extension-cls") + 1] == "agents.vllm_worker.WeightSyncExtension"


def test_each_engine_starts_with_its_own_kv_cache_size_and_the_users_wins(monkeypatch):
    """The CPU build reads ``VLLM_CPU_KVCACHE_SPACE`` when the engine starts: each engine gets its
    own ``kv_cache_gib`` (not the first engine's, left in the environment), and a value the user
    exported is what every engine gets and stays exported. vLLM's ``LLM`` is replaced by a
    recorder of the environment it starts under."""
    import vllm

    from agents.vllm_backend import VLLMBackend

    class Started(Exception):
        pass

    seen = []

    def recorder(*args, **kwargs):
        seen.append(os.environ.get("VLLM_CPU_KVCACHE_SPACE"))
        raise Started

    monkeypatch.setattr(vllm, "LLM", recorder)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    for gib in (2, 1):
        with pytest.raises(Started):
            VLLMBackend("smollm2-135m-instruct", kv_cache_gib=gib)
    assert seen == ["2", "1"] and "VLLM_CPU_KVCACHE_SPACE" not in os.environ
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    with pytest.raises(Started):
        VLLMBackend("smollm2-135m-instruct", kv_cache_gib=1)
    assert seen[-1] == "3" and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
