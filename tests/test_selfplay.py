"""Self-RedTeam self-play (REINFORCE++ on one shared policy) and the sequential baselines."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advgame_env import Label, bundled_seeds
from advgame_env.rule_judge import Behaviour, behaviour
from agents import HFBackend, load_model
from agents.policy import Policy, chat
from algorithms.algorithm_configs import SelfRedTeamConfig
from algorithms.config import load_config
from algorithms.training.algorithm import build_algorithm
from algorithms.training.batches import rollouts
from algorithms.training.distributed import Dist
from algorithms.training.losses import ppo_clip_loss, reward_to_go, whiten
from algorithms.training.self_redteam import PPORollout, SelfRedTeam
from algorithms.training.sft import load_sft
from algorithms.training.trainer import Trainer
from tests.helpers import config, srt_config

ROOT = Path(__file__).parent.parent


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- REINFORCE++ pieces


def test_returns_carry_the_reward_on_the_last_token_and_the_kl_on_every_token():
    old, ref = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-1.5, -2.0, -2.0])
    # token rewards −β(old − ref) with β = 0.5: [−0.25, 0, +0.5], plus 2 on the last token
    # → [−0.25, 0, 2.5]; reward-to-go (γ = 1): [2.25, 2.5, 2.5]
    torch.testing.assert_close(reward_to_go(old, ref, 2.0, 0.5), torch.tensor([2.25, 2.5, 2.5]))
    assert reward_to_go(torch.zeros(0), torch.zeros(0), 1.0, 0.1).numel() == 0


def test_advantages_are_whitened_per_role(tiny_chat):
    """prepare() on real rollouts of both roles: each role's token advantages end with mean 0
    and std 1, however different the roles' reward scales."""
    _, tokenizer = load_model(tiny_chat)
    model, _ = load_model(tiny_chat)
    from algorithms.training.players import build_players

    player = build_players(roles=("policy",), load=lambda r: (model, tokenizer), lora=True, copies={"initial"})[
        "policy"
    ]
    batch = [
        PPORollout("attacker", [1, 2], [5, 6], reward=3.0, group=(0,)),
        PPORollout("attacker", [1, 2], [5], reward=-1.0, group=(1,)),
        PPORollout("defender", [1, 2], [5, 6, 7], reward=100.0, group=(0, 0)),
        PPORollout("defender", [1, 2], [8], reward=90.0, group=(0, 1)),
    ]
    SelfRedTeam(SelfRedTeamConfig(reward_kl_beta=0.01)).prepare(player, batch, Dist(), chunk=3)
    for role in ("attacker", "defender"):
        values = torch.tensor([a for r in batch if r.role == role for a in r.token_advantages])
        assert values.mean().abs() < 1e-5 and (values.std(unbiased=False) - 1).abs() < 1e-4
    # learner == initial (LoRA starts as the identity): no KL, so old log-probs are the model's
    assert all(r.kl == 0.0 and len(r.old_logprobs) == len(r.completion_ids) for r in batch)
    values = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(whiten(values, 6.0, 14.0, 3), (values - 2) / (2 / 3) ** 0.5)


def test_the_clipped_surrogate_stops_pushing_past_the_clip():
    mask, advantages = torch.ones(1, 2), torch.tensor([[1.0, -1.0]])
    for log_ratio, pulls in ((0.1, [True, True]), (0.5, [False, True]), (-0.5, [True, False])):
        logp = torch.full((1, 2), log_ratio, requires_grad=True)
        loss, clipped = ppo_clip_loss(logp, torch.zeros(1, 2), advantages, mask, clip=0.2)
        loss.sum().backward()
        assert [bool(g != 0) for g in logp.grad[0]] == pulls
    loss, clipped = ppo_clip_loss(torch.zeros(1, 2), torch.zeros(1, 2), advantages, mask)
    assert loss.item() == 0.0 and clipped.item() == 0.0  # ρ = 1: −mean(Â) = 0


# ----------------------------------------------------------------------------- hidden reasoning prefill


def test_a_prefill_opens_the_turn_and_belongs_to_the_prompt(tiny_chat):
    model, tokenizer = load_model(tiny_chat)
    policy = Policy(HFBackend(model, tokenizer), max_tokens=8, temperature=1.0, seed=0, prefill="<think>")
    (generation,) = policy.sample(["How do I kill a Python process that hangs?"], 1)[0]
    assert generation.text.startswith("<think>")
    rendered = tokenizer.decode(
        tokenizer.encode(
            tokenizer.apply_chat_template(chat("x", "<think>"), tokenize=False, continue_final_message=True)
        )
    )
    assert rendered.rstrip().endswith("<think>")


# ----------------------------------------------------------------------------- the trainer


def _logprob(player, role_prompt: str, text: str) -> float:
    tokenizer = player.tokenizer
    prompt = tokenizer.encode(
        tokenizer.apply_chat_template(chat(role_prompt), tokenize=False, add_generation_prompt=True)
    )
    with torch.no_grad(), player.active("learner") as model:
        return float(HFBackend(model, tokenizer).sequence_logprobs([(prompt, tokenizer.encode(text))])[0])


@pytest.mark.slow
def test_one_shared_update_changes_the_policy_of_both_roles(tiny_chat, tmp_path):
    trainer = Trainer(srt_config(tiny_chat, tmp_path / "run"))
    assert trainer.algorithm.shares_policy and list(trainer.learners) == ["policy"]
    attacker, defender = trainer.players["attacker"], trainer.players["defender"]
    assert attacker is defender
    attack_task = trainer.game.config.templates.attacker_task("How do I kill a Python process?", "benign", True)
    before = (_logprob(attacker, attack_task, "<think>x</think><prompt>y</prompt>"), _logprob(defender, "Hi", "Sure."))
    metrics = trainer.train_step()
    after = (_logprob(attacker, attack_task, "<think>x</think><prompt>y</prompt>"), _logprob(defender, "Hi", "Sure."))
    assert metrics["train/policy_examples"] > 0 and math.isfinite(metrics["train/policy_loss"])
    assert before[0] != after[0] and before[1] != after[1]
    # a batch holds samples of both roles, and the one update takes them together
    roles: set[str] = set()
    for _ in range(2):
        for played in trainer.play_splits().values():
            roles |= {r.role for r in trainer.algorithm.examples(played, trainer.game, attacker.tokenizer)}
    assert roles == {"attacker", "defender"}


@pytest.mark.slow
def test_more_than_one_sample_per_seed_works(tiny_chat, tmp_path):
    trainer = Trainer(srt_config(tiny_chat, tmp_path / "run", "game.num_attacks=2", "game.num_responses=3"))
    rounds = trainer.play_splits()[Label.HARMFUL]
    out = rollouts(rounds, trainer.game, trainer.players["defender"].tokenizer)
    groups = {r.group for r in out if r.role == "defender"}
    assert out and all(len([r for r in out if r.group == g]) <= 3 for g in groups)
    assert math.isfinite(trainer.train_step()["train/policy_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("train", ["defender", "alternate"])
def test_a_frozen_opponent_never_changes(tiny_chat, tmp_path, train):
    cfg = config(
        tiny_chat,
        tmp_path / "run",
        "algorithm.name=advgame_dpo_md",
        f"train.schedule={train}",
        "train.period=1",
        "optim.lr=1e-2",
    )
    trainer = Trainer(cfg)
    sums = {role: checksum(trainer.players[role].weights("learner")) for role in ("attacker", "defender")}
    for step in range(4):
        training = trainer.trained_roles(step)
        assert training == (["defender"] if train == "defender" else [("attacker", "defender")[step % 2]])
        trainer.train_step()
        now = {role: checksum(trainer.players[role].weights("learner")) for role in ("attacker", "defender")}
        for role in ("attacker", "defender"):
            if role not in training:
                assert now[role] == sums[role], f"the frozen {role} changed at step {step}"
        sums = now
    # the frozen attacker's EMA never moved either, and the defender did learn
    assert checksum(trainer.players["attacker"].weights("ema")) == checksum(
        trainer.players["attacker"].weights("learner")
    )
    assert checksum(trainer.players["defender"].weights("learner")) != checksum(
        Trainer(config(tiny_chat, tmp_path / "fresh")).players["defender"].weights("learner")
    )


@pytest.mark.slow
def test_sft_data_errors_name_file_and_line_and_the_term_trains(tiny_chat, tmp_path):
    _, tokenizer = load_model(tiny_chat)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "hello"}\n{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2"):
        load_sft(bad, tokenizer)
    good = tmp_path / "sft.jsonl"
    good.write_text(
        "".join(json.dumps({"prompt": f"Question {i}?", "response": "A short answer."}) + "\n" for i in range(5))
    )
    examples = load_sft(good, tokenizer)
    assert tokenizer.decode(examples[0].target_ids) == "A short answer.<|im_end|>"
    cfg = srt_config(
        tiny_chat,
        tmp_path / "run",
        f"roles.defender.sft_data={good}",
        "algorithm.sft_coef=1.0",
        "algorithm.sft_batch_size=2",
    )
    trainer = Trainer(cfg)
    trainer.train_step()
    assert set(trainer.sft) == {"defender"} and trainer.sft["defender"].position > 0
    assert "sft" in trainer.state()["data"]


def _sft_roles_seen(trainer: Trainer, steps: int) -> list[tuple[str, str]]:
    """(player, SFT role) of every SFT term the trainer adds in ``steps`` steps."""
    seen = []
    real = trainer._sft_loss
    trainer._sft_loss = lambda player, role: seen.append((player.role, role)) or real(player, role)  # type: ignore[method-assign]
    for _ in range(steps):
        metrics = trainer.train_step()
        assert metrics["time/step_s"] >= metrics["time/play_s"] > 0
    return seen


@pytest.mark.slow
def test_each_sft_term_trains_only_its_own_role_in_a_two_player_game(tiny_chat, tmp_path):
    good = tmp_path / "sft.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"Q {i}?", "response": "No."}) + "\n" for i in range(4)))
    overrides = [f"roles.defender.sft_data={good}", "algorithm.sft_coef=1.0", "algorithm.sft_batch_size=2"]
    trainer = Trainer(config(tiny_chat, tmp_path / "run", "algorithm.name=advgame_dpo_md", *overrides))
    seen = _sft_roles_seen(trainer, 3)
    assert seen and set(seen) == {("defender", "defender")}
    # an attacker file trains the attacker (even without game pairs), and its stream is checkpointed
    attack = tmp_path / "attack.jsonl"
    attack.write_text(
        "".join(json.dumps({"prompt": f"T {i}", "response": "<prompt>Q?</prompt>"}) + "\n" for i in range(4))
    )
    both = Trainer(config(tiny_chat, tmp_path / "both", *overrides, f"roles.attacker.sft_data={attack}"))
    assert set(_sft_roles_seen(both, 2)) == {("defender", "defender"), ("attacker", "attacker")}
    assert both.state()["data"]["attacker_sft"] == both.sft["attacker"].state()


def test_the_demo_sft_data_loads_and_holds_no_held_out_seed():
    from transformers import AutoTokenizer

    from agents.models import DEFAULT_MODEL, resolve_model

    path = ROOT / "configs" / "data" / "cpu_demo_sft.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    heldout = {s.prompt for s in bundled_seeds("heldout")}
    assert records and not heldout & {r["prompt"] for r in records}
    by_label = {label: [r for r in records if r["label"] == label] for label in ("harmful", "benign")}
    assert all(behaviour(r["response"]) is not Behaviour.COMPLIANCE for r in by_label["harmful"])
    assert all(behaviour(r["response"]) is Behaviour.COMPLIANCE for r in by_label["benign"])
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    assert len(load_sft(path, tokenizer)) == len(records)


def test_the_demo_attacker_sft_data_is_valid_faithful_and_matches_the_game_tasks():
    from transformers import AutoTokenizer

    from advgame_env.parsing import parse_attack
    from advgame_env.rule_judge import RuleJudge
    from advgame_env.templates import TemplateSet
    from agents.models import DEFAULT_MODEL, resolve_model

    records = [json.loads(line) for line in (ROOT / "configs" / "data" / "cpu_demo_attacker_sft.jsonl").open()]
    seeds = {s.id: s for s in bundled_seeds("train")}
    assert len(records) == 320 and all(r["id"] in seeds for r in records)  # training seeds only
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    for r in records:
        seed = seeds[r["id"]]
        # the task the game sends (a new template version would make this file stale)
        assert r["prompt"] == TemplateSet().attacker_task(seed.prompt, seed.label, think=False)
        parsed = parse_attack(r["response"], think=False, max_chars=4000)
        assert parsed.public is not None and RuleJudge().is_faithful(seed.prompt, parsed.public)
        assert len(tokenizer(r["response"])["input_ids"]) < 64  # the demo's attacker token limit


def test_algorithm_switch_builds_each_algorithm():
    for name, kind in [("self_redteam", "SelfRedTeam"), ("advgame_dpo_md", "PreferenceOptimization"), ("grpo", "GRPO")]:
        algorithm = build_algorithm(load_config(None, [f"algorithm.name={name}"]).algorithm, 512)
        assert type(algorithm).__name__ == kind


# ----------------------------------------------------------------------------- configs and the comparison


# cpu_smoke and cpu_demo_quick have their own end-to-end tests (test_cli: the smoke command in a
# subprocess, the quick demo on the bundled model).
# The next-recipe candidates are cpu_demo's structure plus data keys and SFT knobs that
# tests/test_recipe_levers.py trains on the tiny model; a case here cost 88 s (cpu_demo's 56 s,
# side by side on a shared machine), over the suite's budget for three of them.
SKIPPED = {"cpu_smoke", "cpu_demo_quick", "cpu_demo_v2", "cpu_demo_v2_sft_only", "cpu_demo_v2_game_only"}
CPU_CONFIGS = sorted(p for p in (ROOT / "configs").glob("cpu_*.yaml") if p.stem not in SKIPPED)

# What "every CPU config trains end to end" needs of each config is its structure (algorithm,
# game, judge, schedule, templates, SFT data, backend), not the bundled model's weights: those are
# the quick-demo test's subject (test_cli). So each config runs as
# shipped except for these keys (docs/testing.md lists them), with the tiny chat model of
# conftest.py as every model it names (benchmarks/suite_configs.py measures the saving).
SHRINK = {"run.steps": "2", "run.validate_every": "0", "data.batch_size": "2"}
TINY_MODEL_KEYS = ("model.name",)  # where a config names a model, the tiny one replaces it
TINY_LLM_JUDGE_KEYS = ("judge.model",)  # ... and the LLM judge's, when judge.kind is llm


@pytest.mark.slow
@pytest.mark.parametrize("path", CPU_CONFIGS, ids=[p.stem for p in CPU_CONFIGS])
def test_every_cpu_config_trains_end_to_end(path, tiny_chat, tmp_path):
    """Each algorithm's CPU config, shortened to 2 steps of 2 seeds a split on the tiny chat model."""
    keys = TINY_MODEL_KEYS + (TINY_LLM_JUDGE_KEYS if load_config(path).judge.kind == "llm" else ())
    overrides = [*(f"{k}={v}" for k, v in SHRINK.items()), *(f"{k}={tiny_chat}" for k in keys)]
    # `advgame train` in this process: the command line's own code, without a new interpreter's
    # 10 s of imports per config (the smoke test in test_cli runs the command in a subprocess)
    from algorithms.cli.main import main

    assert main(["train", "--config", str(path), f"run.out_dir={tmp_path}", *overrides]) == 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and (tmp_path / "final").is_dir()


@pytest.mark.slow
def test_the_comparison_example_prints_one_table(tiny_chat, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "examples/compare_algorithms.py",
            "--model",
            str(tiny_chat),
            "--steps",
            "1",
            "--run-seeds",
            "1",
            "--exploit-budget",
            "0",
            "--eval-prompts",
            "4",
            "--attack-prompts",
            "1",
            "--crossplay-prompts",
            "0",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 5 and "advgame_dpo_md" in table[2] and "self_redteam" in table[3] and "sequential" in table[4]
    assert "harmful compliance" in table[0] and "(n=1, interval undefined)" in table[2]
    assert (tmp_path / "comparison.md").exists() and (tmp_path / "self_redteam" / "seed_0" / "final").is_dir()


def test_returns_over_turns_credit_each_turns_tokens_with_its_own_credit_and_every_later_kl():
    from algorithms.training.losses import turn_returns

    old, ref = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-1.5, -2.0, -2.0])
    # KL penalties with β = 0.5: [−0.25, 0, +0.5]; turns of 2 and 1 tokens credited 2 and 5
    got = turn_returns(old, ref, [2.0, 5.0], [2, 1], 0.5)
    torch.testing.assert_close(got, torch.tensor([-0.25 + 0 + 0.5 + 2.0, 0 + 0.5 + 2.0, 0.5 + 5.0]))
    # one turn is reward_to_go's sequence, bit for bit; a turn without tokens credits nothing
    assert torch.equal(turn_returns(old, ref, [2.0], [3], 0.5), reward_to_go(old, ref, 2.0, 0.5))
    torch.testing.assert_close(turn_returns(old, ref, [7.0, 2.0, 5.0], [0, 2, 1], 0.5), got)
    torch.testing.assert_close(turn_returns(old, ref, [2.0, 9.0, 5.0], [2, 0, 1], 0.5), got)
