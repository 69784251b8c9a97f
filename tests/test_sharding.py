"""parallel.sharding=fsdp2: two gloo processes with FSDP2 train as one plain process does, and a
sharded (torch.distributed.checkpoint) checkpoint resumes at another world size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from algorithms.config import ConfigError, load_config

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "tests" / "sharded_update.py"
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def accelerate_launch(port: int) -> list[str]:
    """`accelerate launch` of two processes; --multi_gpu starts them (gloo on a CPU machine)."""
    options = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    options += ["--dynamo_backend", "no", "--main_process_port", str(port)]
    return [sys.executable, "-m", "accelerate.commands.launch", *options]


def test_the_parallel_section_is_checked():
    assert load_config(None, []).parallel.sharding == "none"
    assert load_config(None, ["parallel.sharding=fsdp2"]).parallel.sharding == "fsdp2"
    with pytest.raises(ConfigError, match="'none', 'fsdp2'"):
        load_config(None, ["parallel.sharding=zero3"])
    with pytest.raises(ConfigError, match=r"opponents\.draw=latest"):
        load_config(None, ["parallel.sharding=fsdp2", "opponents.draw=uniform"])
    # sharded players reach vLLM gathered: full weights and LoRA adapters (agents.roles.save_adapter)
    assert load_config(None, ["parallel.sharding=fsdp2", "model.lora=true", "rollout.backend=vllm"])
    assert load_config(None, ["parallel.sharding=fsdp2", "model.lora=false", "rollout.backend=vllm"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "paper").glob("*.yaml")), ids=lambda p: p.name)
def test_the_paper_recipes_shard_their_learners(path):
    assert load_config(path).parallel.sharding == "fsdp2"


@pytest.mark.slow
def test_two_sharded_processes_train_as_one_plain_process(tiny_chat, tmp_path):
    """Full and LoRA players, DPO-MD (EMA reference, EMA updated on the shards) and GRPO (initial
    reference), two optimizer steps on a global batch split unevenly (so one process runs a
    zero-weight padding micro-batch): the same learner and EMA weights to float tolerance."""
    one = subprocess.run(
        [sys.executable, SCRIPT, str(tiny_chat), str(tmp_path / "one.pt"), "none"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*accelerate_launch(29531), str(SCRIPT), str(tiny_chat), str(tmp_path / "two.pt"), "fsdp2"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a["world"] == 1 and b["world"] == 2
    cases = [k for k in a if k != "world"]
    assert sorted(cases) == ["full/advgame_dpo_md", "full/grpo", "lora/advgame_dpo_md", "lora/grpo"]
    for case in cases:
        for x, y in zip(a[case]["figures"], b[case]["figures"], strict=True):
            assert x["examples"] == y["examples"] >= 8, case
            assert y["loss"] == pytest.approx(x["loss"], abs=1e-5), case
            assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4), case
        for which in ("learner", "ema"):
            if which not in a[case]:
                continue
            want, have = a[case][which], b[case][which]
            assert want.keys() == have.keys(), (case, which)
            for name, tensor in want.items():
                # summation order differs between one and two processes: float32 rounding only
                torch.testing.assert_close(have[name], tensor, rtol=0, atol=1e-5, msg=f"{case} {which} {name}")
        assert a[case]["figures"][1]["grad_norm"] > 0


def _run(command: list[str]) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def _exported(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _assert_same(restored: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> None:
    shared = sorted(restored.keys() & exported.keys())
    assert "model.embed_tokens.weight" in shared and len(shared) >= len(exported)
    for name in shared:
        torch.testing.assert_close(restored[name], exported[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_another_world_size(tiny_chat, tmp_path):
    """Full fine-tuning with DPO-MD (learner, EMA, AdamW states sharded): 2 processes train 2
    steps and write sharded checkpoints; 1 process resumes the newest and trains a third; 2
    processes resume that and train a fourth. Each resume restores exactly the weights the run
    had (its final/ export, written from the same state) and the AdamW states it saved."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    run = tmp_path / "run"
    args = [f"model.name={tiny_chat}", f"run.out_dir={run}", "run.steps=2", "run.progress=false"]
    args += ["run.tensorboard=false", "run.checkpoint_every=1", "run.validate_every=2", "data.validation_size=4"]
    args += ["data.batch_size=2", "game.direct_fraction=0.5", "roles.attacker.max_tokens=8"]
    args += ["roles.defender.max_tokens=12", "optim.lr=1e-3", "model.lora=false", "parallel.sharding=fsdp2"]
    _run([*accelerate_launch(29532), "-m", "algorithms.cli", "train", *args])
    step_2 = run / "checkpoints" / "step_0000002"
    assert torch.load(step_2 / "state.pt", weights_only=True)["sharded"] is True
    dcp_to_torch_save(step_2 / "dcp", tmp_path / "step_2.pt")  # the shards as one plain file
    saved = torch.load(tmp_path / "step_2.pt", weights_only=False)
    config = json.loads((run / "final" / "defender" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]  # not FSDP's wrapper class
    final_2 = {name: _exported(run / "final" / name) for name in ("attacker", "defender", "defender_ema")}

    _run([sys.executable, str(SCRIPT), "resume", str(run), str(tmp_path / "one.pt"), "3"])
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    assert one["world"] == 1 and one["step"] == 2
    _assert_same(one["weights"]["attacker/learner"], final_2["attacker"])
    _assert_same(one["weights"]["defender/learner"], final_2["defender"])
    _assert_same(one["weights"]["defender/ema"], final_2["defender_ema"])
    _assert_same(one["weights"]["defender/learner"], saved["defender/learner"])
    for name in ("attacker", "defender"):
        want, have = saved[f"{name}/optimizer"]["state"], one["adam"][name]["state"]
        assert want.keys() == have.keys() and want
        for fqn, moments in want.items():
            for key in ("exp_avg", "exp_avg_sq", "step"):
                torch.testing.assert_close(have[fqn][key], moments[key], rtol=0, atol=0, msg=f"{name} {fqn} {key}")
    assert (run / "checkpoints" / "step_0000003" / "dcp" / ".metadata").is_file()  # written by 1 process
    final_3 = {name: _exported(run / "final" / name) for name in ("defender", "defender_ema")}

    launch = [*accelerate_launch(29533), str(SCRIPT)]
    _run([*launch, "resume", str(run), str(tmp_path / "two.pt"), "4"])
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert two["world"] == 2 and two["step"] == 3
    _assert_same(two["weights"]["defender/learner"], final_3["defender"])
    _assert_same(two["weights"]["defender/ema"], final_3["defender_ema"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({m["step"] for m in lines if "time/step_s" in m}) == [1, 2, 3, 4]
    assert len((run / "resumes.jsonl").read_text().splitlines()) == 2


def test_the_benchmark_table_reports_the_reduction_ratio():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    figures = {"machine": "m", "tensors": 272, "engine_reduce_s": 0.05, "per_tensor_reduce_s": 0.2}
    figures |= {"ratio": 0.25, "backward_ratio": 1.5}
    row = next(line for line in run.table({"reduction": figures}).splitlines() if "Gradient reduction" in line)
    assert "| 50 ms | 200 ms | 0.25 | report | backward + reduction 1.50 |" in row
    # with DDP's figures (parallel.sharding=none), a row of its own: backward + reduction, compared whole
    figures |= {"ddp_backward_s": 1.2, "per_tensor_backward_s": 1.5, "ddp_ratio": 0.8, "ddp_buckets": 6}
    rows = run.table({"reduction": figures}).splitlines()
    ddp = next(line for line in rows if "DDP (6 buckets)" in line)
    assert "| 1.20 s | 1.50 s | 0.80 | report |" in ddp
