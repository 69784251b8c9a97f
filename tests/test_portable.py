"""Portable run folders: an exported LoRA adapter names its base by the bundled name, so another
machine (another cache folder) loads it."""

from __future__ import annotations

import json
import shutil

import torch

from agents.models import DEFAULT_MODEL, load_model, portable_name, resolve_model, tiny_model
from algorithms.training.players import build_players


def test_an_exported_adapter_names_the_bundled_base_and_loads_from_another_cache(tmp_path, monkeypatch):
    model, tokenizer = tiny_model(seed=0)  # the bundled tokenizer, from this machine's cache
    # two machines' caches, each holding "the bundled model" (the tiny model stands in for it)
    here, there = tmp_path / "here", tmp_path / "there"
    for cache in (here, there):
        model.save_pretrained(cache / "models" / DEFAULT_MODEL)
        tokenizer.save_pretrained(cache / "models" / DEFAULT_MODEL)
    monkeypatch.setenv("ADVGAME_CACHE", str(here))
    base, _ = load_model(DEFAULT_MODEL)
    torch.manual_seed(0)
    player = build_players(roles=("defender",), load=lambda _: (base, tokenizer), lora=True, copies={"learner"})[
        "defender"
    ]
    with torch.no_grad():
        for param in player.trainable():
            param.add_(0.01 * torch.randn_like(param))  # a trained adapter, not the identity
    run = tmp_path / "run" / "defender"
    player.export("learner", run)
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEFAULT_MODEL  # not str(here / "models" / ...)

    moved = tmp_path / "elsewhere" / "defender"
    shutil.copytree(run, moved)
    shutil.rmtree(here)  # the training machine's cache is gone
    monkeypatch.setenv("ADVGAME_CACHE", str(there))
    loaded, _ = load_model(moved)
    ids = torch.tensor([tokenizer.encode("Hello there, how are you?")])
    with player.active("learner") as module, torch.no_grad():
        expected = module(input_ids=ids).logits
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)


def test_a_base_named_by_another_machines_cache_path_resolves_here(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVGAME_CACHE", str(tmp_path))
    (tmp_path / "models" / DEFAULT_MODEL).mkdir(parents=True)
    (tmp_path / "models" / DEFAULT_MODEL / "config.json").write_text("{}")  # converted already
    foreign = f"/home/someone/.cache/advgame/models/{DEFAULT_MODEL}"
    assert resolve_model(foreign) == str(tmp_path / "models" / DEFAULT_MODEL)
    assert portable_name(tmp_path / "models" / DEFAULT_MODEL) == DEFAULT_MODEL
    assert portable_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert portable_name(tmp_path) == str(tmp_path)  # a folder of one's own stays as given
