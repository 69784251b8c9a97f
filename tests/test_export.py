"""``advgame export``: a trained LoRA policy as a folder plain transformers loads (merged into its
base, or an adapter naming a base plain tools resolve), with the same outputs as advgame's own
loading of the adapter. The tiny model stands in for the bundled one in a cache of the test's own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from agents.models import DEFAULT_MODEL, load_model, tiny_model
from algorithms.cli.main import main
from algorithms.training.players import build_players

PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture
def trained_adapter(tmp_path, monkeypatch) -> Path:
    """A run folder whose final/attacker is a trained (non-identity) LoRA adapter of the "bundled" model."""
    model, tokenizer = tiny_model(seed=0)
    cache = tmp_path / "cache"
    model.save_pretrained(cache / "models" / DEFAULT_MODEL)
    tokenizer.save_pretrained(cache / "models" / DEFAULT_MODEL)
    monkeypatch.setenv("ADVGAME_CACHE", str(cache))
    base, _ = load_model(DEFAULT_MODEL)
    torch.manual_seed(0)
    player = build_players(roles=("attacker",), load=lambda _: (base, tokenizer), lora=True, copies={"learner"})[
        "attacker"
    ]
    with torch.no_grad():
        for param in player.trainable():
            param.add_(0.05 * torch.randn_like(param))
    run = tmp_path / "run"
    player.export("learner", run / "final" / "attacker")
    (run / "config.yaml").write_text("model:\n  lora: true\n")
    return run


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(input_ids=ids["input_ids"]).logits


def test_a_merged_export_loads_with_plain_transformers_as_advgame_loads_the_adapter(trained_adapter, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = trained_adapter / "final" / "attacker"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_MODEL
    out = tmp_path / "merged"
    assert main(["export", str(trained_adapter), "--merged", str(out)]) == 0
    assert not (out / "adapter_config.json").exists()
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()

    ours, tokenizer = load_model(adapter)
    plain = AutoModelForCausalLM.from_pretrained(out)
    plain_tokenizer = AutoTokenizer.from_pretrained(out)
    assert plain_tokenizer.chat_template == tokenizer.chat_template
    expected = _logits(ours, tokenizer)
    assert torch.allclose(_logits(plain, plain_tokenizer), expected, atol=1e-4)
    base, _ = load_model(DEFAULT_MODEL)
    assert not torch.allclose(_logits(base, tokenizer), expected, atol=1e-3)  # the adapter is really in it


def test_an_adapter_export_names_a_base_plain_transformers_resolves(trained_adapter, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    assert main(["export", str(trained_adapter / "final" / "attacker"), str(out)]) == 0
    named = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert named == str((tmp_path / "cache" / "models" / DEFAULT_MODEL).resolve())
    ours, tokenizer = load_model(trained_adapter / "final" / "attacker")
    monkeypatch.chdir(tmp_path)  # an absolute base: not resolved against the working folder
    plain = AutoModelForCausalLM.from_pretrained(out)  # transformers' own adapter loading (peft)
    assert torch.allclose(_logits(plain, tokenizer), _logits(ours, tokenizer), atol=1e-4)


def test_a_hub_base_stays_a_hub_id(tmp_path):
    from algorithms.export import export

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct"}))
    done = export(adapter, tmp_path / "out", merged=False)
    assert done.base == "Qwen/Qwen2.5-7B-Instruct"
    written = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == "Qwen/Qwen2.5-7B-Instruct"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "is neither a model or adapter folder"),
        ("unfinished", "has no final/attacker (unfinished run?)"),
        ("occupied", "exists and is not empty"),
    ],
)
def test_bad_sources_and_outputs_are_one_line_and_exit_2(case, message, trained_adapter, tmp_path, capsys):
    source, out = trained_adapter, tmp_path / "out"
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "unfinished":
        source = tmp_path / "unfinished"
        source.mkdir()
        (source / "config.yaml").write_text("{}\n")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert main(["export", str(source), "--merged", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("advgame export: ")
    if case == "occupied":
        assert (out / "keep.txt").read_text() == "mine"  # nothing overwritten
    else:
        assert not out.exists()


# a clean interpreter: transformers only, advgame never imported (the check below proves it)
PLAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = sys.argv[1]
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = json.loads(sys.argv[2])
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, do_sample=False, max_new_tokens=12)
    assert not any(m.split(".")[0] in ("agents", "advgame_env", "algorithms") for m in sys.modules), "advgame imported"
    print(json.dumps(out[0, ids["input_ids"].shape[1]:].tolist()))
    """
)


@pytest.mark.slow  # a subprocess
def test_a_merged_export_generates_in_a_clean_interpreter_as_advgame_does(trained_adapter, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", str(trained_adapter), "--merged", str(out)]) == 0
    ours, tokenizer = load_model(trained_adapter / "final" / "attacker")
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        expected = ours.generate(**ids, do_sample=False, max_new_tokens=12)[0, ids["input_ids"].shape[1] :].tolist()
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_SCRIPT)
    # -I: no PYTHONPATH (the worktree), no user site; run from a folder without advgame in it
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(out), json.dumps(PROMPT)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.slow  # a training run
def test_a_checkpoint_of_a_lora_run_exports_merged_as_its_final_adapter_loads(tiny_chat, tmp_path):
    from algorithms.training.trainer import train
    from tests.helpers import tiny_run

    run = train(tiny_run(tiny_chat, tmp_path / "run", "model.lora=true", "optim.lr=1e-3", "run.checkpoint_every=2"))
    out = tmp_path / "merged"
    assert main(["export", str(run / "checkpoints" / "step_0000002"), "--merged", str(out)]) == 0
    assert (run / "eval" / "exports" / "step_2" / "attacker_learner" / "adapter_config.json").is_file()
    ours, tokenizer = load_model(run / "final" / "attacker")  # the same weights: the run ends at step 2
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(out)
    assert torch.allclose(_logits(plain, tokenizer), _logits(ours, tokenizer), atol=1e-4)


@pytest.mark.slow  # a vLLM engine
def test_vllm_loads_a_merged_export_of_the_bundled_model_and_generates_as_advgame_does(tmp_path):
    pytest.importorskip("vllm")
    from agents import HFBackend
    from agents.vllm_backend import VLLMBackend

    base, tokenizer = load_model(DEFAULT_MODEL)
    torch.manual_seed(0)
    player = build_players(roles=("attacker",), load=lambda _: (base, tokenizer), lora=True, copies={"learner"})[
        "attacker"
    ]
    with torch.no_grad():
        for param in player.trainable():
            param.add_(0.02 * torch.randn_like(param))
    player.export("learner", tmp_path / "adapter")
    out = tmp_path / "merged"
    assert main(["export", str(tmp_path / "adapter"), "--merged", str(out)]) == 0
    chats = [
        PROMPT,
        [{"role": "user", "content": "Name a fruit."}],
        [{"role": "user", "content": "What is 12 times 7?"}],
    ]
    theirs = HFBackend(*load_model(tmp_path / "adapter")).generate(chats, max_tokens=16, temperature=0)
    engine = VLLMBackend(out, dtype="float32", kv_cache_gib=1)
    try:
        ours = engine.generate(chats, max_tokens=16, temperature=0)
    finally:
        engine.close()
    assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]


def test_a_run_folder_names_its_roles_copies_and_a_self_play_policy(tmp_path):
    from algorithms.export import policy_folder

    run = tmp_path / "run"
    for name in ("defender_ema", "policy"):
        (run / "final" / name).mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    assert policy_folder(run, "defender", "ema") == run / "final" / "defender_ema"
    assert policy_folder(run, "attacker") == run / "final" / "policy"  # one policy plays both roles
    with pytest.raises(FileNotFoundError, match="no final/attacker_ema"):
        policy_folder(run, "attacker", "ema")
    with pytest.raises(ValueError, match="role 'judge'"):
        policy_folder(run, "judge")


def test_merging_onto_a_hub_base_that_is_not_here_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline by default: never fetched
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "no-such-org/no-such-model"}))
    assert main(["export", str(adapter), "--merged", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("advgame export: the base no-such-org/no-such-model") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
