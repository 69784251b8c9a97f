"""What the players train on and what they are evaluated on never share a request.

Training prompts: the bundled training seeds and every shipped recipe's data (``data.seeds``,
``data.extra_benign_seeds``, the defender's and the attacker's SFT files, whose attacker prompts
carry the seed between ``<request>`` tags). Evaluation suites: the bundled held-out seeds (safety, over-refusal,
benign-but-scary, the win rate's benign requests) and the instruction-following suite. Texts are
compared after normalisation (case, punctuation, spacing), and a training request inside an
evaluation prompt counts (the instruction suite's prompts are a request plus a constraint).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from advgame_env import bundled_seeds, load_seeds
from advgame_env.instruction_suite import bundled_instruction_prompts
from algorithms.config import load_config
from algorithms.recipes import configs_dir

REQUEST = re.compile(r"<request>\s*(.*?)\s*</request>", re.DOTALL)


def normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def sft_requests(path: Path) -> list[str]:
    """The requests of an SFT chat file: the attacker's seed inside its task, else the prompt."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for row in rows:
        inside = REQUEST.search(row["prompt"])
        out.append(inside.group(1) if inside else row["prompt"])
    return out


def shipped_recipes() -> list[Path]:
    return sorted([*configs_dir().glob("*.yaml"), *(configs_dir() / "paper").glob("*.yaml")])  # not accelerate/


def training_prompts(recipes: list[Path] | None = None) -> dict[str, str]:
    """normalised request -> where it comes from."""
    found = {normal(s.prompt): f"bundled train seed {s.id}" for s in bundled_seeds("train")}
    for path in shipped_recipes() if recipes is None else recipes:
        cfg = load_config(path)
        if cfg.data.seeds != "bundled":
            found |= {normal(s.prompt): f"{path.name} data.seeds {s.id}" for s in load_seeds(cfg.data.seeds)}
        if cfg.data.extra_benign_seeds is not None:
            extra = load_seeds(cfg.data.extra_benign_seeds)
            found |= {normal(s.prompt): f"{path.name} data.extra_benign_seeds {s.id}" for s in extra}
        for role in ("attacker", "defender"):
            file = cfg.roles[role].sft_data
            if file:
                found |= {normal(p): f"{path.name} roles.{role}.sft_data" for p in sft_requests(Path(file))}
    return found


def evaluation_prompts() -> dict[str, str]:
    found = {normal(s.prompt): f"held-out seed {s.id}" for s in bundled_seeds("heldout")}
    found |= {normal(p.prompt): f"instruction suite {p.key}" for p in bundled_instruction_prompts()}
    return found


def test_the_sft_files_are_read_as_requests():
    # the check below is only as good as this extraction: every attacker SFT prompt holds its seed
    for path in sorted((configs_dir() / "data").glob("*sft*.jsonl")):  # not the seed files
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        requests = sft_requests(path)
        assert rows and len(requests) == len(rows)
        assert all(len(normal(r)) > 10 for r in requests)
        if "attacker" in path.name:
            assert all(REQUEST.search(row["prompt"]) for row in rows), path


def test_no_training_request_is_an_evaluation_prompt_or_inside_one(recipes: list[Path] | None = None):
    train, evaluation = training_prompts(recipes), evaluation_prompts()
    assert len(train) > 100 and len(evaluation) > 300  # the seeds, the SFT files and the 322-prompt suite
    same = sorted(f"{train[t]} = {evaluation[t]}" for t in train.keys() & evaluation.keys())
    assert not same, same[:10]
    inside = sorted(
        f"{train[t]} in {evaluation[e]}" for t in train for e in evaluation if len(t) > 20 and f" {t} " in f" {e} "
    )
    assert not inside, inside[:10]


@pytest.mark.parametrize("leak", ["heldout", "instruction"])
def test_the_check_finds_a_leak(leak, monkeypatch):
    # the same check with one evaluation prompt copied into the training seeds must fail
    import tests.test_data_disjoint as me

    prompt = bundled_seeds("heldout")[0].prompt if leak == "heldout" else bundled_instruction_prompts()[0].prompt
    original = me.training_prompts
    monkeypatch.setattr(me, "training_prompts", lambda recipes=None: original(recipes) | {normal(prompt): "planted"})
    with pytest.raises(AssertionError, match="planted"):
        me.test_no_training_request_is_an_evaluation_prompt_or_inside_one()


def test_the_extra_benign_seeds_are_read():
    # a recipe mixes ordinary instructions into its benign split; the check above sees every one
    chosen = [load_config(p) for p in shipped_recipes()]
    files = {c.data.extra_benign_seeds for c in chosen if c.data.extra_benign_seeds is not None}
    assert files, "no shipped recipe names data.extra_benign_seeds"
    train = training_prompts()
    for file in files:
        seeds = load_seeds(file)
        assert len(seeds) >= 200
        assert all(normal(s.prompt) in train for s in seeds)


@pytest.mark.parametrize("leak", ["heldout", "instruction task"])
def test_the_check_finds_a_leak_in_an_extra_benign_file(leak, tmp_path):
    # a recipe whose extra benign file holds a held-out seed, or an instruction-suite prompt's task
    # without its constraint (the first sentence), fails the check, named by the recipe and the id
    if leak == "heldout":
        prompt = bundled_seeds("heldout", "benign")[3].prompt
    else:
        prompt = bundled_instruction_prompts()[5].prompt.split(". ")[0] + "."
    seeds = tmp_path / "everyday.jsonl"
    rows = [{"id": "ok", "prompt": "Name a colour that rhymes with bread.", "category": "benign"}]
    rows.append({"id": "leaked", "prompt": prompt.upper(), "category": "benign"})  # normalised away
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = tmp_path / "mixed.yaml"
    recipe.write_text("data:\n  extra_benign_seeds: everyday.jsonl\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"mixed\.yaml data\.extra_benign_seeds leaked"):
        test_no_training_request_is_an_evaluation_prompt_or_inside_one([recipe])
