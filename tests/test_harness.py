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
