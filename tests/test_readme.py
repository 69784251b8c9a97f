"""The README's (and docs/') Python blocks: every ```python block runs as written, and what it prints
says something; ```py blocks are sketches that name objects the reader brings (a trained model, a
server), so they are only parsed."""

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(python|py)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == kind:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{document.relative_to(ROOT)}:{line}", match.group(2)))
    return found


RUNNABLE = blocks("python")


def test_the_readme_has_a_runnable_quick_start():
    assert RUNNABLE and RUNNABLE[0][0].startswith("README.md")


@pytest.mark.parametrize(("where", "code"), RUNNABLE, ids=[w for w, _ in RUNNABLE])
def test_every_python_block_runs_and_prints_something(where, code):
    out = io.StringIO()
    namespace: dict[str, object] = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, where, "exec"), namespace)
    lines = [line.strip() for line in out.getvalue().splitlines() if line.strip()]
    assert lines, f"{where} prints nothing"
    empty = {"[]", "{}", "()", "None", "[] []"}
    assert not [line for line in lines if line in empty], f"{where} prints an empty value:\n{out.getvalue()}"


def test_the_quick_start_plays_a_real_round():
    """Rewrites valid and faithful, both players paid, a pair for each side (the issue's snippet
    printed {'attacker_0': -1.0, 'defender_0': 0.0} [])."""
    where, code = RUNNABLE[0]
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, where, "exec"), namespace)
    infos = namespace["infos"]
    assert isinstance(infos, dict)
    assert all(sample["failure"] is None for sample in infos["attacker_0"]["samples"])
    assert infos["attacker_0"]["pairs"] and infos["defender_0"]["pairs"]
    rewards = namespace["rewards"]
    assert isinstance(rewards, dict) and all(value > 0 for value in rewards.values())
    assert "[ok]" in out.getvalue() and "excluded" not in out.getvalue()


@pytest.mark.parametrize(("where", "code"), blocks("py"), ids=[w for w, _ in blocks("py")])
def test_every_sketch_parses(where, code):
    ast.parse(code, where)
