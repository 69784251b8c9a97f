"""Rollouts on ``vllm serve`` replicas fed through vLLM's weight-transfer API (agents.vllm_server).

Fast: the config rules, the batch split across replicas, and the file transport's trainer side
(what it writes is what the model holds). Slow: the session's real ``python -m agents.vllm_serve`` of
the bundled model on loopback (``vllm_server`` of tests/conftest.py: float32, LoRA on, the
``advgame_file`` transport), against which the trainer runs two steps with LoRA adapters and two with full
weights, the served weights probe-checked after every push.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from agents.hf import Generation
from algorithms.config import ConfigError, load_config

# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.backend=vllm_server"], "needs the servers' URLs"),
        (["rollout.backend=vllm_server", "rollout.urls=[http://a:1]", "model.lora=false"], "roles.attacker.urls"),
        (["rollout.backend=vllm_server", "model.lora=false"], "needs roles.attacker.urls"),
        (["rollout.backend=vllm_server", "rollout.urls=[http://a:1]", "roles.defender.urls=[http://b:1]"], "LoRA"),
        (["rollout.urls=[http://a:1]"], "only with rollout.backend vllm_server"),
        (["rollout.backend=vllm_server", "rollout.urls=http://a:1"], "expected a list"),
        (["rollout.backend=vllm_server", "rollout.urls=[http://a:1]", "rollout.weight_transport=ipc"], "not one of"),
    ],
)
def test_server_rollout_keys_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/cpu_smoke.yaml", overrides)


def test_server_rollout_keys_load():
    cfg = load_config(
        "configs/cpu_smoke.yaml",
        ["rollout.backend=vllm_server", "rollout.urls=[http://127.0.0.1:8000, http://127.0.0.1:8001]"],
    )
    assert cfg.rollout.urls == ("http://127.0.0.1:8000", "http://127.0.0.1:8001")
    assert cfg.rollout.weight_transport == "advgame_file"


# ----------------------------------------------------------------------------- generation split


class Echo:
    """A known-answer backend: each chat's text is its content, its replica and its seed."""

    def __init__(self, name):
        self.name, self.calls = name, []

    def generate(self, chats, *, max_tokens, temperature=1.0, top_p=1.0, seed=None):
        self.calls.append(len(chats))
        return [
            Generation(f"{c[0]['content']}|{self.name}|{None if seed is None else seed + i}")
            for i, c in enumerate(chats)
        ]


def test_a_batch_is_split_across_replicas_in_order_with_each_chats_own_seed():
    from agents.vllm_server import SplitBackend

    replicas = [Echo("a"), Echo("b"), Echo("c")]
    split = SplitBackend(replicas)
    chats = [[{"role": "user", "content": str(i)}] for i in range(7)]
    out = split.generate(chats, max_tokens=4, seed=100)
    assert [g.text.split("|")[0] for g in out] == [str(i) for i in range(7)]  # input order
    assert [g.text.split("|")[2] for g in out] == [str(100 + i) for i in range(7)]  # as from one backend
    assert sorted(r.calls[0] for r in replicas) == [2, 2, 3]
    assert split.generate(chats[:1], max_tokens=4)[0].text == "0|c|None"  # one chat: one replica
    split.close()


# ----------------------------------------------------------------------------- the file transport


class Recorder:
    """A known-answer control plane: keeps what each ``/update_weights`` file held."""

    def __init__(self):
        self.calls, self.files = [], []

    def init_weight_transfer_engine(self, init_info):
        self.calls.append("init")

    def start_weight_update(self):
        self.calls.append("start")

    def update_weights(self, update_info):
        from safetensors.torch import load_file

        self.calls.append("update")
        self.files.append(load_file(update_info["path"]))

    def finish_weight_update(self, weight_version=None):
        self.calls.append("finish")


def test_the_file_transport_sends_every_tensor_a_layer_group_at_a_time(tmp_path):
    pytest.importorskip("vllm")
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from agents.weight_transfer import FileTrainerInitInfo, StateSource

    state = {
        "model.embed_tokens.weight": torch.randn(8, 4),
        "model.layers.0.mlp.weight": torch.randn(4, 4),
        "model.layers.0.norm.weight": torch.randn(4),
        "model.layers.1.mlp.weight": torch.randn(4, 4),
        "model.norm.weight": torch.randn(4),
    }
    client = Recorder()
    info = FileTrainerInitInfo(rank=0, folder=str(tmp_path), chunk_bytes=1)  # every group its own file
    engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=StateSource(state))
    engine.send_weights()
    assert client.calls == ["init", "start", "update", "update", "update", "update", "finish"]
    assert [sorted(f) for f in client.files][1] == ["model.layers.0.mlp.weight", "model.layers.0.norm.weight"]
    sent = {k: v for f in client.files for k, v in f.items()}
    assert sent.keys() == state.keys() and all(torch.equal(sent[k], state[k]) for k in state)
    assert list(tmp_path.iterdir()) == []  # each file goes once the server has read it
    client.files.clear()
    engine.chunk_bytes = 10**9  # one file for the whole model
    engine.send_weights()
    assert len(client.files) == 1 and client.files[0].keys() == state.keys()


def test_a_non_sender_rank_drives_nothing(tmp_path):
    pytest.importorskip("vllm")
    from agents.weight_transfer import FileTrainerEngine, FileTrainerInitInfo, StateSource

    client = Recorder()
    engine = FileTrainerEngine.trainer_init(
        FileTrainerInitInfo(rank=1, folder=str(tmp_path)), client=client, source=StateSource({"w": torch.ones(2)})
    )
    engine.send_weights()
    assert client.calls == [] and list(tmp_path.iterdir()) == []


def test_a_server_url_must_be_http():
    from agents.vllm_server import ServerClient

    with pytest.raises(ValueError, match="http://"):
        ServerClient("127.0.0.1:8000")


# ----------------------------------------------------------------------------- a real server


@pytest.fixture
def server(vllm_server):
    """The session's `vllm serve` (tests/conftest.py), started with LoRA and our weight transport;
    every test here leaves the base model served, as it found it."""
    return vllm_server


def _smoke(tmp_path, *overrides):
    # 8-token turns (the smoke config's are 32): what these tests check (the pushes, versions and
    # probes of each step) happens once a step whatever the length of the samples
    tokens = ("roles.attacker.max_tokens=8", "roles.defender.max_tokens=8")
    return load_config(
        "configs/cpu_smoke.yaml",
        [
            *(f"run.out_dir={tmp_path}", "run.validate_every=0", "optim.lr=1e-2", "rollout.backend=vllm_server"),
            *tokens,
            *overrides,
        ],
    )


def _trainer(cfg):
    from algorithms.training.trainer import Trainer

    return Trainer(cfg)


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.slow
def test_lora_adapters_train_two_steps_on_a_real_server(server, tmp_path):
    """Two DPO-MD steps with LoRA players whose rollouts come from the server: each step loads
    both EMA adapters under new versioned names (the old ones unloaded) and checks the served
    probe log-prob against the trainer's; a stale adapter is caught."""
    from agents.vllm_backend import StaleWeightsError
    from agents.vllm_server import Served, ServerClient

    trainer = _trainer(_smoke(tmp_path, f"rollout.urls=[{server}]"))
    fleet = trainer.sampler.fleets["defender"]
    try:
        assert trainer.sampler.fleets["attacker"] is fleet  # one base serves both adapters
        for _ in range(2):
            trainer.train_step()
        assert trainer.step == 2
        assert fleet.adapters == {"attacker": "attacker-v3", "defender": "defender-v4"}
        served = ServerClient(server).models()
        assert {"attacker-v3", "defender-v4"} <= set(served) and "defender-v2" not in served
        policy = trainer.sampler.policy("defender", "ema", 0)
        assert isinstance(policy.backend, Served)
        (g,) = policy.backend.generate([[{"role": "user", "content": "Hi"}]], max_tokens=4, adapter="defender")
        assert g.token_ids and len(g.logprobs) == len(g.token_ids)
        trainer.sampler.sync(dict.fromkeys(("attacker", "defender"), "ema"))  # the EMA after step 2's update
        module, adapter = trainer.players["defender"].sampling("ema")
        fleet.check(module, adapter, served="defender-v6")  # what the server holds is the EMA adapter
        with pytest.raises(StaleWeightsError, match="defender-v6"):
            fleet.check(module, trainer.players["attacker"].sampling("ema")[1], served="defender-v6")
    finally:
        trainer.sampler.close()


@pytest.mark.slow
def test_full_weights_train_two_steps_on_a_real_server(server, tmp_path):
    """Two steps with full fine-tuning, the defender's rollouts on the server: each step pauses
    it, sends the EMA weights through /update_weights (the advgame_file engine), stamps and
    checks the weight version and the probe, and resumes; a push that did not land is caught."""
    from agents.vllm_backend import StaleWeightsError
    from agents.vllm_server import ServerClient

    trainer = _trainer(_smoke(tmp_path, "model.lora=false", f"roles.defender.urls=[{server}]"))
    fleet = trainer.sampler.fleets["defender"]
    client = ServerClient(server)
    try:
        assert set(trainer.sampler.fleets) == {"defender"}  # the attacker samples in process
        for _ in range(2):
            trainer.train_step()
        assert fleet.weights_version == 2 and client.weight_version() == "2"
        assert httpx.get(f"{server}/is_paused").json() == {"is_paused": False}
        trainer.sampler.sync(dict.fromkeys(("attacker", "defender"), "ema"))  # the EMA after step 2's update
        ema = trainer.players["defender"].sampling("ema")[0]
        learner = trainer.players["defender"].sampling("learner")[0]
        fleet.check(ema, None)  # the server holds the EMA weights (the MD recipe's sampler)
        with pytest.raises(StaleWeightsError, match="version 3"):
            fleet.check(_perturbed(learner), None)
        fleet.push_weights(learner)  # and now it holds these
        assert client.weight_version() == "4"
    finally:
        from agents.models import load_model

        fleet.push_weights(load_model()[0])  # leave the base model served, as it started
        trainer.sampler.close()
        client.close()


@pytest.mark.slow
def test_sharded_players_push_their_gathered_weights_to_a_real_server(server, tmp_path):
    """parallel.sharding=fsdp2 (the paper configs' setting) with the defender on the server: each
    push gathers the sharded EMA first, so the server gets full tensors and the probe (checked in
    every push) matches; after the run the players are shards again."""
    from agents.models import load_model
    from agents.vllm_server import ServerClient
    from algorithms.training.distributed import is_sharded
    from algorithms.training.rollouts import gathered

    cfg = _smoke(tmp_path, "model.lora=false", "parallel.sharding=fsdp2", f"roles.defender.urls=[{server}]")
    trainer = _trainer(cfg)
    fleet = trainer.sampler.fleets["defender"]
    try:
        for _ in range(2):
            trainer.train_step()
        assert fleet.weights_version == 2 and ServerClient(server).weight_version() == "2"
        ema = trainer.players["defender"].sampling("ema")[0]
        assert is_sharded(ema)
        trainer.sampler.sync(dict.fromkeys(("attacker", "defender"), "ema"))  # the EMA after step 2's update
        with gathered(trainer.players.values()):
            fleet.check(ema, None)
    finally:
        fleet.push_weights(load_model()[0])  # leave the base model served, as it started
        trainer.sampler.close()


def test_the_benchmark_table_reports_the_push_share():
    from tests.test_benchmarks import table

    push = {"config": "configs/cpu_smoke.yaml"}
    push["lora"] = {"push_s": 0.5, "step_s": 10.0, "ratio": 0.05}
    push["full"] = {"push_s": 2.0, "step_s": 10.0, "ratio": 0.2}
    lines = table({"weight_push": push}).splitlines()
    assert "| met |" in next(line for line in lines if "Weight push (lora)" in line)
    assert "**missed**" in next(line for line in lines if "Weight push (full)" in line)
