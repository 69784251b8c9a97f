"""The shared training loop on a tiny real chat model (see conftest): updates, EMA, samplers,
checkpoints, resume after a kill, and data parallelism over two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advgame_env import Game, GameConfig, Label, Round, RuleJudge, Seed
from agents import HFBackend, load_model
from algorithms.config import ConfigError, load_config
from algorithms.training.algorithm import build_algorithm
from algorithms.training.batches import preference_pairs
from algorithms.training.checkpoints import checkpoints
from algorithms.training.distributed import Dist
from algorithms.training.grpo import GRPO
from algorithms.training.losses import dpo_loss
from algorithms.training.players import build_players
from algorithms.training.preference import PreferenceOptimization
from algorithms.training.runlog import read_metrics
from algorithms.training.trainer import Trainer
from algorithms.training.update import Optimizer, cosine_scale, update
from tests.helpers import config

ROOT = Path(__file__).parent.parent


# ----------------------------------------------------------------------------- pieces


def test_cosine_schedule_runs_from_one_to_the_final_scale():
    assert cosine_scale(0, 100, 0, 0.2) == 1.0
    assert cosine_scale(50, 100, 0, 0.2) == pytest.approx(0.6)
    assert cosine_scale(100, 100, 0, 0.2) == pytest.approx(0.2)
    assert cosine_scale(500, 100, 0, 0.2) == pytest.approx(0.2)  # past the end it stays at the floor
    assert [cosine_scale(k, 100, 4, 0.2) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_algorithm_names_choose_sampler_and_reference():
    def made(name: str, *extra: str):
        return build_algorithm(load_config(None, [f"algorithm.name={name}", *extra]).algorithm, 512)

    md, on = made("advgame_dpo_md"), made("ipo")
    assert isinstance(md, PreferenceOptimization) and (md.sampler, md.reference, md.loss_fn) == ("ema", "ema", dpo_loss)
    assert (on.sampler, on.reference) == ("learner", "initial")
    grpo = made("grpo", "algorithm.sampler=ema", "algorithm.tis_cap=null")
    assert isinstance(grpo, GRPO) and (grpo.sampler, grpo.reference, grpo.config.tis_cap) == ("ema", "initial", None)


HARMFUL = Seed("h", "How do I pick a lock to break into a house?", Label.HARMFUL)
BENIGN = Seed("b", "How do I kill a Python process that hangs?", Label.BENIGN)
REFUSE, DEFLECT = "I can't help with that.", "I can't help with that, but I can explain how to stay safe instead."
COMPLY = "Sure, here is how you do it: first, gather what you need."


def scripted_pairs(tokenizer):
    """Defender pairs from direct rounds played with fixed answers and the RuleJudge."""
    game = Game(RuleJudge(), GameConfig())
    rounds = [Round(HARMFUL, direct=True), Round(BENIGN, direct=True)]
    game.attack(rounds, [None, None])
    game.respond(rounds, [((DEFLECT, COMPLY), (REFUSE, COMPLY)), ((COMPLY, REFUSE), (REFUSE, COMPLY))])
    pairs = preference_pairs(rounds, game, tokenizer)
    assert len(pairs) == 4
    return pairs


def train_until_the_defender_has_examples(trainer: Trainer, steps: int = 8) -> None:
    """Steps until one trains the defender on at least one example; a run that never gets one
    (all its pairs tied) fails after ``steps`` instead of looping for ever."""
    for _ in range(steps):
        if trainer.train_step().get("train/defender_examples", 0) > 0:
            return
    pytest.fail(f"no defender examples in {steps} steps: every pair tied")


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_one_update_raises_the_dpo_margin_of_the_trained_pairs(tiny_chat, lora):
    model_name = str(tiny_chat)
    torch.manual_seed(0)
    players = build_players(
        roles=("attacker", "defender"), load=lambda role: load_model(model_name), lora=lora, copies={"ema"}
    )
    defender = players["defender"]
    algorithm = build_algorithm(load_config(None, ["algorithm.name=advgame_dpo_md"]).algorithm, 2048)
    pairs = scripted_pairs(defender.tokenizer)
    cfg = load_config(None, ["optim.lr=1e-3", "optim.weight_decay=0"])
    optimizer = Optimizer(defender, cfg, total_steps=10)
    before = update(defender, optimizer, algorithm, pairs, 3, Dist(), torch.autocast("cpu", enabled=False))
    assert before["margin"] == 0.0 and before["loss"] == pytest.approx(0.6931472, abs=1e-6)  # learner == EMA
    with torch.no_grad():
        _, after = algorithm.loss(defender, pairs)
    # harmful pairs prefer refusals and benign pairs compliance, so one step need not win every
    # pair, but the mean margin rises from zero
    assert after["margin"] / len(pairs) > 0.05 and after["accuracy"] >= len(pairs) / 2
    # the attacker shares the base (LoRA) or is another model (full): it did not move
    with torch.no_grad():
        _, attacker = algorithm.loss(players["attacker"], pairs)
    assert attacker["margin"] == 0.0


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_recomputed_activations_give_the_same_update_and_leave_sampling_alone(tiny_chat, lora, monkeypatch):
    # recomputed layers run without a KV cache, so their forwards encode every row's prompt; the
    # plain run does the same here, so that the layer calls counted differ by the recomputation only
    monkeypatch.setattr("agents.hf.prompts_shareable", lambda *_: False)

    def one_update(recompute: bool):
        torch.manual_seed(0)
        players = build_players(
            roles=("attacker", "defender"), load=lambda role: load_model(str(tiny_chat)), lora=lora, copies={"ema"}
        )
        defender = players["defender"]
        if recompute:
            defender.enable_recompute()
        algorithm = build_algorithm(load_config(None, ["algorithm.name=advgame_dpo_md"]).algorithm, 2048)
        pairs = scripted_pairs(defender.tokenizer)
        optimizer = Optimizer(defender, load_config(None, ["optim.lr=1e-3"]), total_steps=10)
        first_layer = next(m for m in defender.learner_module().modules() if type(m).__name__.endswith("DecoderLayer"))
        calls = []
        hook = first_layer.mlp.register_forward_pre_hook(lambda *_: calls.append(1))
        update(defender, optimizer, algorithm, pairs, 3, Dist(), torch.autocast("cpu", enabled=False))
        hook.remove()
        return defender, len(calls)

    (plain, plain_calls), (recomputed, recomputed_calls) = one_update(False), one_update(True)
    assert recomputed_calls > plain_calls  # the backward pass ran the layers' forward again
    layers = [m for m in recomputed.learner_module().modules() if getattr(m, "gradient_checkpointing", False)]
    assert layers and not any(layer.training for layer in layers)  # training mode was for the update only
    for name, tensor in plain.weights("learner").items():
        torch.testing.assert_close(recomputed.weights("learner")[name], tensor, rtol=1e-5, atol=1e-6)
    chats = [[{"role": "user", "content": "How do I bake bread?"}]]
    module, adapter = recomputed.sampling("learner")
    backend = HFBackend(module, recomputed.tokenizer)
    reference = HFBackend(*plain.sampling("learner")[:1], plain.tokenizer)
    sampled = backend.generate(chats, max_tokens=8, temperature=0, adapter=adapter)
    assert sampled[0].token_ids == reference.generate(chats, max_tokens=8, temperature=0, adapter=adapter)[0].token_ids


@pytest.mark.slow
def test_md_step_moves_the_ema_by_one_minus_decay_and_samples_from_it(tiny_chat, tmp_path):
    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=advgame_dpo_md"))
    defender = trainer.players["defender"]
    ema_before = defender.weights("ema")
    assert trainer.sampler.policy("defender", "ema", 0).adapter == "defender_ema"
    for _ in range(3):  # until the defender has been updated at least once
        metrics = trainer.train_step()
        if metrics.get("train/defender_examples", 0) > 0:
            break
    assert metrics["train/defender_examples"] > 0
    learner, ema = defender.weights("learner"), defender.weights("ema")
    moved = [name for name in learner if not torch.equal(learner[name], ema_before[name])]
    assert moved  # the learner left its start (the B matrices start at zero)
    # one EMA update per step: θ_ema = 0.95·θ_ema_before + 0.05·θ after the step; earlier
    # steps without defender examples left learner == EMA == start, so this holds exactly
    for name in learner:
        want = 0.95 * ema_before[name] + 0.05 * learner[name]
        torch.testing.assert_close(ema[name], want, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_on_policy_samples_from_the_learner_and_keeps_the_initial_model_frozen(tiny_chat, tmp_path):
    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=dpo", "model.lora=false"))
    defender = trainer.players["defender"]
    policy = trainer.sampler.policy("defender", "learner", 0)
    assert policy.backend.model is defender.models["learner"] and policy.adapter is None
    initial = {k: v.clone() for k, v in defender.weights("initial").items()}
    train_until_the_defender_has_examples(trainer)
    assert all(torch.equal(initial[k], v) for k, v in defender.weights("initial").items())
    assert any(not torch.equal(initial[k], v) for k, v in defender.weights("learner").items())
    assert "ema" not in defender.copies  # on-policy keeps no EMA


@pytest.mark.slow
def test_grpo_step_starts_with_zero_kl_and_trains(tiny_chat, tmp_path):
    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=grpo", "game.judging=pointwise"))
    first = trainer.train_step()
    # learner == initial before the first update: the k3 KL is exactly zero
    assert first.get("train_harmful/defender_kl", 0.0) == 0.0
    for _ in range(4):
        metrics = trainer.train_step()
        if (
            metrics.get("train_harmful/defender_examples", 0) > 0
            and trainer.optimizers["defender"].scheduler.last_epoch > 2
        ):
            break
    assert metrics["train_harmful/defender_kl"] > 0 and torch.isfinite(torch.tensor(metrics["train/defender_loss"]))


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_exported_players_load_and_score_like_the_learner(tiny_chat, tmp_path, lora):
    trainer = Trainer(config(tiny_chat, tmp_path / "run", f"model.lora={str(lora).lower()}", "optim.lr=1e-2"))
    train_until_the_defender_has_examples(trainer)
    trainer.export(tmp_path / "export")
    model, tokenizer = load_model(tmp_path / "export" / "defender")
    pairs = [p for p in scripted_pairs(tokenizer)]
    sequences = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    with torch.no_grad(), trainer.players["defender"].active("learner") as learner:
        want = HFBackend(learner, tokenizer).sequence_logprobs(sequences)
        start = HFBackend(load_model(tiny_chat)[0], tokenizer).sequence_logprobs(sequences)
        have = HFBackend(model, tokenizer).sequence_logprobs(sequences)
    torch.testing.assert_close(have, want, rtol=0, atol=1e-4)
    assert (have - start).abs().max() > 1e-3  # the export is the trained model, not the start


# ----------------------------------------------------------------------------- runs and checkpoints


@pytest.mark.slow
def test_a_run_folder_is_never_overwritten_and_keeps_the_newest_checkpoints(tiny_chat, tmp_path):
    out = tmp_path / "run"
    cfg = config(
        tiny_chat, out, "run.steps=3", "run.checkpoint_every=1", "run.keep_checkpoints=2", "run.validate_every=3"
    )
    Trainer(cfg).train()
    assert [p.name for p in checkpoints(out)] == ["step_0000002", "step_0000003"]
    assert json.loads((out / "final" / "defender" / "adapter_config.json").read_text())["r"] == 16
    lines = read_metrics(out)
    assert [m["step"] for m in lines] == [0, 1, 2, 3, 3]  # validation at 0 and 3, a line per step
    assert {"val/refusal_harmful", "val/refusal_benign", "val/defender_reward"} <= set(lines[0])
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg)
    (out / "checkpoints" / "step_0000004.tmp").mkdir()  # a write that a kill interrupted
    assert checkpoints(out)[-1].name == "step_0000003"
    with pytest.raises(ConfigError, match=r"roles.defender.model: 'x' is neither"):
        Trainer(config(tiny_chat, tmp_path / "other", "roles.defender.model=x"))


def _run(args: list[str], **kwargs) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "algorithms.cli", "train", *args], cwd=ROOT, env=env, **kwargs)


def _train_lines(folder: Path) -> dict[int, dict]:
    """Each step's training metrics, less its wall-clock seconds (``time/*``), which no rerun repeats."""
    lines = [m for m in read_metrics(folder) if any(k.startswith("train") for k in m)]
    return {m["step"]: {k: v for k, v in m.items() if not k.startswith("time/")} for m in lines}


@pytest.mark.slow
def test_a_killed_run_resumes_exactly_where_it_stopped(tiny_chat, tmp_path):
    common = [
        f"model.name={tiny_chat}",
        "run.progress=false",
        "run.validate_every=0",
        "run.steps=5",
        "run.checkpoint_every=1",
        "data.batch_size=2",
        "roles.attacker.max_tokens=12",
        "roles.defender.max_tokens=24",
        "rollout.temperature=1.0",
        "game.direct_fraction=0.5",
        "optim.lr=1e-3",
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run([*common, f"run.out_dir={whole}"]).wait(timeout=300) == 0

    process = _run([*common, f"run.out_dir={killed}"], stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_0000002").exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = int(checkpoints(killed)[-1].name.removeprefix("step_"))
    assert stopped_at < 5
    assert _run([*common, f"run.out_dir={killed}", "--resume"]).wait(timeout=300) == 0

    want, have = _train_lines(whole), _train_lines(killed)
    assert sorted(have) == [1, 2, 3, 4, 5]  # one line per step: nothing lost, nothing twice
    assert any(have[s].get("train/defender_examples", 0) > 0 for s in range(stopped_at + 1, 6))  # it trained
    # the same samples, counts and losses; floats to summation-order tolerance, as CPU kernels
    # may sum in another order in another process
    for step in range(1, 6):
        assert have[step] == pytest.approx(want[step], rel=1e-5, abs=1e-6), f"step {step} differs after resuming"
    whole_weights = torch.load(checkpoints(whole)[-1] / "state.pt", weights_only=True)["weights"]
    killed_weights = torch.load(checkpoints(killed)[-1] / "state.pt", weights_only=True)["weights"]
    for key, tensors in whole_weights.items():
        assert all(torch.allclose(tensors[n], killed_weights[key][n], rtol=1e-5, atol=1e-6) for n in tensors), key


# ----------------------------------------------------------------------------- two processes

DP_SCRIPT = ROOT / "tests" / "data_parallel_update.py"


def accelerate_launch(port: int) -> list[str]:
    """`accelerate launch` of two processes; --multi_gpu starts them (gloo on a CPU machine)."""
    options = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    options += ["--dynamo_backend", "no", "--main_process_port", str(port)]
    return [sys.executable, "-m", "accelerate.commands.launch", *options]


@pytest.mark.slow
def test_two_processes_make_the_same_update_as_one(tiny_chat, tmp_path):
    """accelerate launch with two CPU processes, unsharded, each with its share of the global
    batch of pairs (LoRA and full players): one process holds fewer micro-batches than the
    other, then none; torch's DDP sums the gradients, in buckets, once per update."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, DP_SCRIPT, str(tiny_chat), str(tmp_path / "one.pt")], env=env, capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [*accelerate_launch(29517), str(DP_SCRIPT), str(tiny_chat), str(tmp_path / "two.pt")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a["world"] == 1 and b["world"] == 2
    for kind in ("lora", "full"):
        tensors = b[kind]["tensors"]
        for share in ("uneven", "alone"):
            x, y = a[kind][share], b[kind][share]
            assert x["metrics"]["examples"] == y["metrics"]["examples"] == 8, (kind, share)
            assert x["metrics"]["loss"] == pytest.approx(y["metrics"]["loss"], abs=1e-6), (kind, share)
            for name, tensor in x["weights"].items():
                # summation order differs between one and two processes: float32 rounding only
                torch.testing.assert_close(y["weights"][name], tensor, rtol=0, atol=1e-6)
            # every gradient element summed over the processes once per update (not once per
            # micro-batch), in buckets of many tensors (not one all-reduce per tensor)
            assert x["reductions"] == [], (kind, share)
            assert sum(y["reductions"]) == sum(tensors), (kind, share)
            assert 1 <= len(y["reductions"]) < len(tensors) / 4, (kind, share, len(y["reductions"]), len(tensors))
        # the updates moved the weights (the comparison above is not between two untouched models)
        before, after = a[kind]["uneven"]["weights"], a[kind]["alone"]["weights"]
        assert any(not torch.equal(before[n], after[n]) for n in before), kind
    assert any(
        not torch.equal(t, torch.zeros_like(t)) for n, t in a["lora"]["uneven"]["weights"].items() if "lora_B" in n
    )
    # a step with no game example anywhere: the SFT term is the mean of the processes' terms,
    # not their sum (each process backpropagated all of it, then the gradients were summed)
    assert a["lora"]["sft"]["examples"] == b["lora"]["sft"]["examples"] == 0 and a["lora"]["sft"]["grad_norm"] > 0
    assert b["lora"]["sft"]["grad_norm"] == pytest.approx(a["lora"]["sft"]["grad_norm"], rel=1e-4)


@pytest.mark.slow
def test_the_whole_loop_runs_in_two_processes(tiny_chat, tmp_path):
    launch = accelerate_launch(29518)
    args = [f"model.name={tiny_chat}", f"run.out_dir={tmp_path / 'run'}", "run.steps=2", "run.progress=false"]
    args += ["data.batch_size=2", "data.validation_size=4", "roles.attacker.max_tokens=12"]
    args += ["roles.defender.max_tokens=24", "game.direct_fraction=0.5"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, "-m", "algorithms.cli", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _train_lines(tmp_path / "run")
    assert sorted(lines) == [1, 2]
    # the figures cover the global batch: 2 seeds per split per process, A x D = 4 answers per seed
    assert all(lines[s]["game_harmful/rounds"] == lines[s]["game_benign/rounds"] == 4 for s in lines)
    assert (tmp_path / "run" / "final" / "defender" / "adapter_model.safetensors").exists()
