"""Instruction-following prompts in IFEval's format: the bundled team-written suite, or any such file.

A record is one JSON object per line with ``key``, ``prompt``, ``instruction_id_list`` (IFEval
instruction ids such as ``"punctuation:no_comma"``) and ``kwargs`` (one dict of checker arguments per
instruction). Google's own ``input_data.jsonl`` has this format too, so a local copy of IFEval loads
with ``load_instruction_prompts(path)``; arguments that are ``None`` (IFEval's files carry every
argument name, unused ones as null) are dropped.

The bundled suite (``bundled_instruction_prompts()``, 322 prompts over 23 instruction types) is
written by ``scripts/make_instruction_suite.py`` from the team's own tasks and instruction wordings;
no prompt of it is a training or held-out seed. Scoring lives in ``algorithms.evaluation.utility``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from advgame_env.seeds import SeedFormatError

BUNDLED_FILE = "instruction_following.jsonl"


@dataclass(frozen=True)
class InstructionPrompt:
    key: str
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[Mapping[str, object], ...]  # one per instruction, None-valued arguments dropped

    def as_record(self) -> dict[str, object]:
        """The IFEval-format record (what the JSONL file holds)."""
        return {
            "key": self.key,
            "prompt": self.prompt,
            "instruction_id_list": list(self.instruction_ids),
            "kwargs": [dict(k) for k in self.kwargs],
        }


def instruction_prompt_from_record(record: object, where: str) -> InstructionPrompt:
    """One record, checked; a malformed one raises ``SeedFormatError`` naming ``where`` and the field."""
    if not isinstance(record, Mapping):
        raise SeedFormatError(f"{where}: expected a JSON object")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise SeedFormatError(f"{where}: field 'prompt' must be a non-empty string")
    ids = record.get("instruction_id_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise SeedFormatError(f"{where}: field 'instruction_id_list' must be a non-empty list of strings")
    kwargs = record.get("kwargs", [{} for _ in ids])
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, Mapping) for k in kwargs):
        raise SeedFormatError(f"{where}: field 'kwargs' must be a list of objects, one per instruction")
    key = record.get("key", where)
    return InstructionPrompt(
        str(key),
        prompt,
        tuple(ids),
        tuple({name: value for name, value in k.items() if value is not None} for k in kwargs),
    )


def _parse(text: str, source: str) -> list[InstructionPrompt]:
    prompts = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SeedFormatError(f"{source}, line {n}: not JSON ({e.msg})") from None
        prompts.append(instruction_prompt_from_record(record, f"{source}, line {n}"))
    if not prompts:
        raise SeedFormatError(f"{source}: no records")
    keys = [p.key for p in prompts]
    if len(set(keys)) != len(keys):
        raise SeedFormatError(f"{source}: duplicate keys")
    return prompts


def load_instruction_prompts(path: str | Path) -> list[InstructionPrompt]:
    """The prompts of an IFEval-format JSONL file (the team's suite, or a local copy of IFEval)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"instruction-following file {path} does not exist")
    return _parse(path.read_text("utf-8"), str(path))


def bundled_instruction_prompts() -> list[InstructionPrompt]:
    """The team-written suite shipped with the package (see the module docstring)."""
    text = resources.files("advgame_env").joinpath("data", BUNDLED_FILE).read_text("utf-8")
    return _parse(text, BUNDLED_FILE)
