"""lm-evaluation-harness through advgame: its scores read, task YAMLs anchored, a real offline run."""

import json
import math
from pathlib import Path

import pytest

from algorithms.evaluation.harness import HarnessError, available, model_args, run_harness, scores, task_specs

TASK = Path(__file__).parent / "data" / "lm_eval" / "tiny_choice.yaml"
needs_harness = pytest.mark.skipif(not available(), reason="the `lm_eval` extra is not installed")

RECORD = {  # the shape of a harness record's parts that advgame reads
    "results": {
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6},
        "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A", "sample_len": 4},
    },
    "n-samples": {"arc_easy": {"original": 100, "effective": 20}},
    "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True}},
}


def test_scores_are_read_with_their_stderr_filter_and_sample_count():
    found = {s.name: s for s in scores(RECORD)}
    assert sorted(found) == ["arc_easy acc", "arc_easy acc_norm", "gsm8k exact_match (strict-match)"]
    acc = found["arc_easy acc"]
    assert (acc.value, acc.stderr, acc.n, acc.higher_is_better) == (0.5, 0.1, 20, True)
    assert acc.low == pytest.approx(0.5 - 0.196, abs=1e-4) and acc.high == pytest.approx(0.5 + 0.196, abs=1e-4)
    gsm = found["gsm8k exact_match (strict-match)"]
    assert gsm.stderr is None and gsm.n is None and math.isnan(gsm.low)


def test_an_adapter_folder_runs_on_its_base(tmp_path, tiny_chat):
    assert model_args(tiny_chat) == {"pretrained": str(tiny_chat), "dtype": "float32"}
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_chat)}))
    assert model_args(adapter) == {"pretrained": str(tiny_chat), "peft": str(adapter), "dtype": "float32"}


@needs_harness
def test_a_task_yamls_data_files_are_read_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    name, (config,) = "arc_easy", task_specs([str(TASK)])
    assert task_specs([name]) == [name]
    assert config["task"] == "advgame_tiny_choice"
    assert config["dataset_kwargs"]["data_files"]["test"] == str(TASK.parent / "tiny_choice.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        task_specs(["missing.yaml"])


@pytest.mark.slow
@needs_harness
def test_a_failing_run_says_why(tiny_chat):
    with pytest.raises(HarnessError, match="failed with exit code"):
        run_harness(tiny_chat, ["advgame_no_such_task"])


def test_a_missing_harness_is_a_clear_error(monkeypatch, tiny_chat):
    monkeypatch.setattr("algorithms.evaluation.harness.available", lambda: False)
    with pytest.raises(HarnessError, match=r"pip install 'advgame\[lm_eval\]'"):
        run_harness(tiny_chat, ["arc_easy"])


def test_with_vllm_an_adapter_is_served_by_the_engine_at_a_rank_vllm_accepts(tmp_path, tiny_chat):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    settings = {"base_model_name_or_path": str(tiny_chat), "r": 12}
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    assert model_args(adapter, backend="vllm") == {
        "pretrained": str(tiny_chat),
        "lora_local_path": str(adapter),
        "max_lora_rank": 16,
        "dtype": "float32",
    }
    assert model_args(tiny_chat, backend="vllm") == model_args(tiny_chat)
    (adapter / "adapter_config.json").write_text(json.dumps(settings | {"r": 1024}))
    with pytest.raises(HarnessError, match="LoRA rank 1024 is above vLLM's largest"):
        model_args(adapter, backend="vllm")


def test_vllm_engine_arguments_on_cpu_are_the_backends(monkeypatch):
    import os

    from algorithms.evaluation.harness import _vllm_settings

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    base = {"pretrained": "m", "dtype": "float32"}
    engine, batch = _vllm_settings(base, 8)
    assert engine["enforce_eager"] is True and engine["enable_chunked_prefill"] is False and batch == 8
    assert engine["max_model_len"] == 2048 and engine["max_num_batched_tokens"] == 8192
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
    # an adapter scores one sequence a call on CPU (vLLM's CPU LoRA fails on a batch)
    assert _vllm_settings(base | {"lora_local_path": "a"}, 8)[1] == 1
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert _vllm_settings(base | {"lora_local_path": "a"}, 8) == (base | {"lora_local_path": "a"}, 8)  # a GPU


def test_a_missing_vllm_is_a_clear_error(monkeypatch, tiny_chat):
    from algorithms.evaluation.utility import plan_from_options

    monkeypatch.setattr("algorithms.evaluation.harness.available", lambda: True)
    monkeypatch.setattr("algorithms.evaluation.harness.vllm_available", lambda: False)
    with pytest.raises(HarnessError, match="needs vLLM installed"):
        run_harness(tiny_chat, ["arc_easy"], backend="vllm")
    with pytest.raises(ImportError, match="--backend vllm needs vLLM installed"):
        plan_from_options(lm_eval="arc_easy", lm_eval_backend="vllm")
    with pytest.raises(ValueError, match="hf or the vllm backend"):
        run_harness(tiny_chat, ["arc_easy"], backend="openai")  # type: ignore[arg-type]


@needs_harness
@pytest.mark.parametrize(("backend", "harness"), [("vllm", "vllm"), ("hf", "hf"), ("openai", "hf")])
def test_eval_runs_the_harness_on_the_backend_it_was_given(monkeypatch, backend, harness):
    import algorithms.evaluation.evaluate
    from algorithms.cli.main import main

    monkeypatch.setattr("algorithms.evaluation.harness.vllm_available", lambda: True)
    given = {}

    def evaluate_models(models, seeds, judge, make, out, suite, **options):
        given.update(options)
        return [], None

    monkeypatch.setattr(algorithms.evaluation.evaluate, "evaluate_models", evaluate_models)
    url = ["--url", "http://127.0.0.1:1/v1"] if backend == "openai" else []
    assert main(["eval", "--model", "smollm2-135m-instruct", "--backend", backend, *url, "--lm-eval", "arc_easy"]) == 0
    assert given["plan"].lm_eval == ("arc_easy",) and given["plan"].lm_eval_backend == harness
