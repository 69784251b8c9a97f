"""advgame plan: the arithmetic on known answers, the command, the paper configs' plans, the
accelerate recipes. Memory targets are benchmarks (benchmarks/plan_check.py), not tests."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from algorithms.cli.main import main
from algorithms.config import load_config
from algorithms.plan import (
    GIB,
    PUBLISHED,
    Setup,
    Shape,
    _working,
    learner_terms,
    make_plan,
    model_shape,
    plan_config,
    render,
    shape_from_config,
)

ROOT = Path(__file__).resolve().parent.parent
PAPER = sorted((ROOT / "configs/paper").rglob("*.yaml"))
TINY = Shape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1000, tied=True)


def setup(**change: object) -> Setup:
    base = Setup(
        shape=TINY,
        players=2,
        trained=2,
        copies=("ema",),
        lora=False,
        lora_rank=4,
        learners=1,
        sharding="none",
        checkpointing=False,
        bf16=False,
        micro_batch=2,
        sequences_per_example=2,
        seq_len=10,
        completion_len=4,
        rollout="hf",
        rollout_gpus=0,
        rollout_batch=0,
        max_model_len=64,
        judge_shape=None,
        judge_where="none",
        judge_gpus=0,
        judge_context=64,
        gpu_memory=80 * GIB,
    )
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


def terms(s: Setup) -> dict[str, float]:
    return {t.name: t.bytes for t in learner_terms(s)}


def test_parameter_count_by_hand() -> None:
    # per layer: q 64·64, k and v 64·32 each, o 64·64, gate/up/down 3·64·128, two norms 2·64
    layer = 4096 + 2 * 2048 + 4096 + 3 * 64 * 128 + 2 * 64
    assert TINY.layer_params() == layer == 36992
    assert TINY.params() == 2 * layer + 1000 * 64 + 64  # tied embedding once, the final norm
    untied = dataclasses.replace(TINY, tied=False)
    assert untied.params() == TINY.params() + 1000 * 64


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_shape_matches_transformers_parameter_count(kind: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(vocab_size=500, hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6)
    config = (LlamaConfig if kind == "llama" else Qwen2Config)(num_key_value_heads=2, **common)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shape = shape_from_config(config.to_dict())
    assert shape.attention_bias is (kind == "qwen2")
    assert shape.params() == sum(p.numel() for p in model.parameters())


def test_lora_count_matches_peft() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from agents.roles import DEFAULT_TARGETS

    config = LlamaConfig(
        vocab_size=500,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules=list(DEFAULT_TARGETS)))
    adapter = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert shape_from_config(config.to_dict()).lora_params(8) == adapter


def test_published_shapes_are_the_known_sizes() -> None:
    # the models' own cards: Qwen2.5-7B 7.61B parameters, Llama-3.1-8B 8.03B, Qwen2.5-32B 32.5B, Llama-3.3-70B 70.6B
    assert PUBLISHED["Qwen/Qwen2.5-7B-Instruct"].params() / 1e9 == pytest.approx(7.62, abs=0.01)
    assert PUBLISHED["meta-llama/Llama-3.1-8B-Instruct"].params() / 1e9 == pytest.approx(8.03, abs=0.01)
    assert PUBLISHED["Qwen/Qwen2.5-32B-Instruct"].params() / 1e9 == pytest.approx(32.76, abs=0.01)
    assert PUBLISHED["meta-llama/Llama-3.3-70B-Instruct"].params() / 1e9 == pytest.approx(70.55, abs=0.01)


@pytest.mark.slow  # converts the bundled model on a machine that has not yet
def test_bundled_shape_is_read_from_its_config_json() -> None:
    assert model_shape("smollm2-135m-instruct").params() == 134_515_008


def test_unknown_hub_model_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        model_shape("someone/not-a-known-model")


def test_full_fine_tuning_terms_by_hand() -> None:
    n = TINY.params()
    t = terms(setup())
    assert t["weights"] == 2 * n * 4  # two players' learners, float32
    assert t["copies"] == 2 * n * 4  # one EMA each
    assert t["gradients"] == 2 * n * 4
    assert t["optimizer"] == 2 * n * 8  # AdamW's two float32 moments
    assert "autocast cache" not in t and "fsdp gather" not in t
    # an on-policy recipe keeps the initial model too; a frozen second player has no optimizer
    t = terms(setup(copies=("ema", "initial"), trained=1))
    assert t["copies"] == 4 * n * 4 and t["optimizer"] == n * 8 and t["gradients"] == n * 4


def test_sharding_divides_the_state_by_the_learners() -> None:
    alone, sharded = terms(setup(learners=4)), terms(setup(learners=4, sharding="fsdp2"))
    for name in ("weights", "copies", "gradients", "optimizer"):
        assert sharded[name] == alone[name] / 4
    assert sharded["fsdp gather"] == 2 * max(TINY.layer_params(), TINY.embedding_params()) * 4
    # the working memory is per process, not sharded
    assert _working(setup(learners=4, sharding="fsdp2")) == _working(setup(learners=4))


def test_activations_by_the_formula() -> None:
    h = TINY
    per_token = 9 * 64 + 2 * 32 + 4 * 128
    tokens = 2 * 2 * 10  # micro-batch 2 pairs, 2 sequences each, 10 tokens
    activations, logits, generation = _working(setup())
    assert activations == h.layers * per_token * 4 * tokens
    assert _working(setup(checkpointing=True))[0] == (h.layers * 64 * 4 + per_token * 4) * tokens
    assert logits == 4 * 4 * 1000 * 8  # 4 sequences x 4 scored tokens x vocab: value + gradient, float32
    assert generation == 0.0  # no rollout batch on this GPU


def test_the_largest_working_phase_is_counted() -> None:
    # small sequences: the AdamW step's float32 temporary (one player's parameters) is the largest
    assert terms(setup())["optimizer step"] == TINY.params() * 4
    long = terms(setup(seq_len=4000, completion_len=2000))
    assert "optimizer step" not in long and long["activations"] > TINY.params() * 4
    generating = terms(setup(rollout_batch=512, seq_len=4000))
    assert generating["generation"] > 0 and "activations" not in generating


def test_bf16_adds_the_autocast_cache_and_halves_activations() -> None:
    assert terms(setup(bf16=True))["autocast cache"] == TINY.params() * 2
    assert _working(setup(bf16=True))[0] == _working(setup())[0] / 2


def test_plan_says_what_to_change_when_it_does_not_fit() -> None:
    plan = make_plan(setup(gpu_memory=0.002 * GIB, learners=2))
    assert not plan.fits
    assert any("fsdp2" in a for a in plan.advice) and any("model.lora=true" in a for a in plan.advice)
    assert make_plan(setup()).fits and make_plan(setup()).advice == []


def test_unsharded_learner_processes_count_ddp_buckets() -> None:
    # torch's DDP (parallel.sharding=none, several processes) reduces through buckets of its
    # own: one more float32 copy of the trained gradients; one process has none
    one, two = make_plan(setup()), make_plan(setup(learners=2))
    assert "ddp buckets" not in {t.name for t in one.learner}
    buckets = {t.name: t.bytes for t in two.learner}["ddp buckets"]
    assert buckets == {t.name: t.bytes for t in two.learner}["gradients"] == 2 * TINY.params() * 4
    assert two.learner_total == pytest.approx(one.learner_total + buckets)
    assert "ddp buckets" not in {t.name for t in make_plan(setup(learners=2, sharding="fsdp2")).learner}
    lora = make_plan(setup(learners=2, lora=True))
    assert {t.name: t.bytes for t in lora.learner}["ddp buckets"] == 2 * TINY.lora_params(4) * 4


def test_sharding_comes_from_the_config_unless_given() -> None:
    paper = load_config(ROOT / "configs/paper/qwen25_dpo_md.yaml")
    assert plan_config(paper, gpus=8).setup.sharding == "fsdp2"
    assert plan_config(paper, gpus=8, sharding="none").setup.sharding == "none"
    smoke = plan_config(load_config(ROOT / "configs/cpu_smoke.yaml"), gpus=8)
    assert smoke.setup.sharding == "none"


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
@pytest.mark.parametrize("layout", [(1, 8, 2, 2), (2, 8, 4, 4)], ids=["1x8", "2x8"])
def test_paper_config_plans_run(path: Path, layout: tuple[int, int, int, int]) -> None:
    nodes, gpus, rollout, judge = layout
    plan = plan_config(load_config(path), gpus=gpus, nodes=nodes, rollout_gpus=rollout, judge_gpus=judge)
    assert plan.setup.learners == nodes * gpus - rollout - judge
    assert plan.learner_total > 0 and plan.rollout and plan.judge
    assert len([line for line in plan.placement if line.startswith("node ")]) == nodes
    assert plan.fits or plan.advice


def test_cli_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "configs/paper/qwen25_dpo_md.yaml")
    assert main(["plan", "--config", config, "--gpus", "8", "--rollout-gpus", "2", "--judge-gpus", "2"]) == 0
    text = capsys.readouterr().out
    assert "per learner GPU" in text and "per judge GPU" in text and "fits:" in text
    assert main(["plan", "--config", config, "--gpus", "8", "--json", "--no-activation-checkpointing"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["setup"]["learners"] == 8 and out["setup"]["checkpointing"] is False
    assert out["learner_total_gib"] == pytest.approx(sum(t["gib"] for t in out["learner_gpu"].values()))


def test_cli_refuses_a_layout_without_learners(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "configs/paper/qwen25_dpo_md.yaml")
    assert main(["plan", "--config", config, "--gpus", "4", "--rollout-gpus", "2", "--judge-gpus", "2"]) == 2
    assert "lower --rollout-gpus" in capsys.readouterr().err
    assert main(["plan", "--config", str(ROOT / "configs/cpu_smoke.yaml"), "--judge-gpus", "1", "--gpus", "2"]) == 2
    assert "rule judge" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "machines", "processes"), [("fsdp2_1x8", 1, 8), ("fsdp2_2x8", 2, 16)])
def test_accelerate_configs_parse(name: str, machines: int, processes: int) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / f"configs/accelerate/{name}.yaml"))
    assert config.distributed_type == "FSDP"
    assert (config.num_machines, config.num_processes) == (machines, processes)
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.mixed_precision == "no"  # bf16 is the run config's model.precision, applied by the trainer
    # and `accelerate launch` reads it into the FSDP2 launch it does (its own argument check, no process starts)
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    given = ["--config_file", str(ROOT / f"configs/accelerate/{name}.yaml"), "-m", "algorithms.cli", "train"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(given))
    assert args.use_fsdp and str(args.fsdp_version) == "2" and args.num_processes == processes


def test_paper_configs_point_at_the_recipes() -> None:
    for path in (ROOT / "configs/paper").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert "advgame plan" in text and "configs/accelerate/" in text, path.name


@pytest.mark.slow  # builds a model, runs two trainer steps in a subprocess
def test_gpu_training_script_runs_on_cpu_with_a_tiny_shape(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks/gpu_train.py"), "--device", "cpu", "--tiny"]
    # 16-token turns: the random-init model never stops, so each turn runs to the budget; the test
    # checks the script's path (build, plan, steps, the JSON), which does not depend on its length
    command += ["--steps", "2", "--seeds", "2", "--micro-batch", "2", "--tokens", "16", "--json", str(out)]
    # a plain one-process run, whatever launcher variables the test process was started with
    drop = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and len(result["step_s"]) == 2 and result["tokens"] == 16
    assert result["update_tokens"] > 0 and result["update_tokens_per_s"] > 0
    assert result["plan_learner_gib"] > 0 and result["peak_memory_gib"] is None  # no GPU: no peak figure


@pytest.mark.slow  # two torchrun launches of 2 processes, one trainer step each
def test_two_gpu_script_dry_runs_both_paths_on_cpu(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "gpu2.json"
    command = [sys.executable, str(ROOT / "benchmarks/gpu_train_2gpu.py"), "--device", "cpu", "--tiny"]
    command += ["--steps", "1", "--seeds", "1", "--micro-batch", "2", "--tokens", "16", "--json", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = json.loads(out.read_text())
    assert sorted(results) == ["fsdp2", "none"]
    for sharding, r in results.items():
        assert r["world"] == 2 and r["sharding"].startswith(sharding), r
        assert r["update_tokens"] > 0 and r["plan_learner_gib"] > 0 and r["peak_memory_gib"] is None
    assert "ddp buckets" in results["none"]["plan_terms_gib"]  # planned for 2 learner GPUs
    assert results["none"]["replica_max_difference"] == 0.0  # DDP kept the two processes' weights equal
    assert "not measured" in done.stdout  # no GPU: no peak, no MFU


def test_benchmark_table_rows_of_the_plan_check() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks/run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    rows = {"a": {"planned_mib": 110.0, "measured_mib": 100.0, "plan_over_measured": 1.1}}
    rows["b"] = {"planned_mib": 130.0, "measured_mib": 100.0, "plan_over_measured": 1.3}
    results = {"plan": {"machine": "m", "rows": rows}, "gpu_train": {"skipped": "no GPU on this machine"}}
    lines = run.table(results).splitlines()
    assert "| met |" in next(
        line for line in lines if line.endswith("a | 110 MiB | 100 MiB | 1.10 | within 15% | met |")
    )
    assert "**missed**" in next(line for line in lines if ", b |" in line)
    assert "not measured" in next(line for line in lines if "DPO-MD steps" in line)


def paper_layout(path: Path) -> dict[str, int]:
    """The paper's hardware as the README and the sbatch lay it out: AdvGame on 2 x 8 (8 learners;
    4 rollout and 4 judge GPUs on node 1), Self-RedTeam on one node of 8."""
    if path.name.startswith("selfredteam"):
        return {"gpus": 8}
    return {"gpus": 8, "nodes": 2, "rollout_gpus": 4, "judge_gpus": 4}


@pytest.mark.parametrize("path", [p for p in PAPER if p.parent.name == "paper"], ids=lambda p: p.name)
def test_each_paper_recipe_fits_its_papers_hardware_at_its_batch_sizes(path: Path) -> None:
    plan = plan_config(load_config(path), **paper_layout(path))
    assert plan.fits, render(plan, path.name)
    names = {t.name for t in plan.learner}
    assert "autocast cache" not in names  # bf16 through FSDP2's MixedPrecisionPolicy


def test_the_readmes_per_gpu_table_is_the_plans() -> None:
    """Each paper config's row in the README's table: its GiB per learner GPU as `advgame plan`
    gives it on the paper's hardware (configs that share a row are listed "a, b / c": the figures
    in the same order, a and b equal)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `") and line.rstrip().endswith("| yes |")]
    shown: dict[str, str] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        groups, figures = cells[0].split(" / "), cells[2].split(" / ")
        for group, figure in zip(groups, figures, strict=True):
            shown |= {name.strip(" `"): figure for name in group.split(",")}
    paper = {p.stem: p for p in PAPER if p.parent.name == "paper"}
    assert set(shown) == set(paper), "the README's table lists every paper config"
    for name, path in paper.items():
        plan = plan_config(load_config(path), **paper_layout(path))
        assert shown[name] == f"{plan.learner_total / GIB:.1f}", name


def test_sharded_bf16_gathers_bf16_and_keeps_no_cast_cache() -> None:
    sharded = terms(setup(learners=4, sharding="fsdp2", bf16=True))
    assert "autocast cache" not in sharded
    assert sharded["fsdp gather"] == 2 * max(TINY.layer_params(), TINY.embedding_params()) * 2
    assert "autocast cache" in terms(setup(learners=4, bf16=True))  # unsharded: autocast


def test_logits_are_one_chunk_of_scored_positions() -> None:
    from agents.hf import CHUNK_LOGITS

    big = dataclasses.replace(TINY, vocab=152064)
    _, logits, _ = _working(setup(shape=big, micro_batch=8, completion_len=2048, seq_len=4096))
    assert logits == (CHUNK_LOGITS // 152064) * 152064 * (4 + 4)  # float32 value + gradient
