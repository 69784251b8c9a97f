"""Evaluation suites: labelled requests from the standard benchmark files, as seeds.

The project ships no third-party benchmark data: point ``load_suite`` at a local copy. The
format is recognised from the file's fields, or named explicitly (``"xstest:path.csv"``):

  harmbench       HarmBench behaviours CSV (Behavior, SemanticCategory, ContextString, BehaviorID): harmful
  jailbreakbench  JBB-Behaviors CSV (Goal, Category, Behavior): harmful, or benign for a file named *benign*
  xstest          XSTest prompts, CSV or JSON (prompt, type, label safe/unsafe or contrast_* types):
                  safe prompts are benign-but-scary, unsafe ones harmful
  orbench         OR-Bench CSV (prompt, category): benign-but-scary, or harmful for a file named *toxic*
  wildjailbreak   WildJailbreak JSONL/CSV/TSV (vanilla, adversarial, data_type)
  plain           advgame seed files: JSONL/CSV with prompt + category harmful|benign
  bundled         the bundled held-out seeds (the default suite)

A malformed file raises ``SeedFormatError`` naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from advgame_env.seeds import Label, Seed, SeedFormatError, bundled_seeds, read_records, seed_from_record

Record = Mapping[str, Any]


def _text(record: Record, field: str, where: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise SeedFormatError(f"{where}: field {field!r} must be a non-empty string")
    return value.strip()


def _harmbench(record: Record, where: str, n: int, path: Path) -> Seed:
    behaviour = _text(record, "Behavior", where)
    context = str(record.get("ContextString") or "").strip()
    # contextual behaviours are asked about a given text: the context comes first
    prompt = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
    topic = str(record.get("SemanticCategory") or record.get("FunctionalCategory") or "")
    return Seed(str(record.get("BehaviorID") or n), prompt, Label.HARMFUL, topic)


def _jailbreakbench(record: Record, where: str, n: int, path: Path) -> Seed:
    label = Label.BENIGN if "benign" in path.name.lower() else Label.HARMFUL
    return Seed(str(record.get("Index") or n), _text(record, "Goal", where), label, str(record.get("Category") or ""))


def _xstest(record: Record, where: str, n: int, path: Path) -> Seed:
    kind = str(record.get("type") or "")
    raw = str(record.get("label") or "").strip().lower()
    if raw and raw not in ("safe", "unsafe"):
        raise SeedFormatError(f"{where}: field 'label' is {raw!r}, expected 'safe' or 'unsafe'")
    unsafe = raw == "unsafe" if raw else kind.startswith("contrast")
    label, subtype = (Label.HARMFUL, "vanilla") if unsafe else (Label.BENIGN, "scary")
    return Seed(str(record.get("id") or n), _text(record, "prompt", where), label, kind, subtype)


def _orbench(record: Record, where: str, n: int, path: Path) -> Seed:
    toxic = "toxic" in path.name.lower()
    label, subtype = (Label.HARMFUL, "vanilla") if toxic else (Label.BENIGN, "scary")
    return Seed(str(n), _text(record, "prompt", where), label, str(record.get("category") or ""), subtype)


def _plain(record: Record, where: str, n: int, path: Path) -> Seed:
    return seed_from_record(record, where, f"{path.stem}-{n}")  # AdvGame and WildJailbreak fields


FORMATS: dict[str, Callable[[Record, str, int, Path], Seed]] = {
    "harmbench": _harmbench,
    "jailbreakbench": _jailbreakbench,
    "xstest": _xstest,
    "orbench": _orbench,
    "wildjailbreak": _plain,
    "plain": _plain,
}


def detect_format(record: Record) -> str:
    keys = set(record)
    if "Behavior" in keys and ({"BehaviorID", "SemanticCategory", "FunctionalCategory"} & keys):
        return "harmbench"
    if "Goal" in keys:
        return "jailbreakbench"
    if "data_type" in keys or "vanilla" in keys:
        return "wildjailbreak"
    if "prompt" in keys and "type" in keys:
        return "xstest"
    category = str(record.get("category", "")).strip().lower()
    if "prompt" in keys and category and category not in ("harmful", "benign"):
        return "orbench"
    return "plain"


def load_suite(spec: str = "bundled") -> list[Seed]:
    """The requests of a suite: ``bundled``, a file path, or ``FORMAT:path``."""
    if spec == "bundled":
        return bundled_seeds("heldout")
    prefix, sep, rest = spec.partition(":")
    kind: str | None = prefix if sep and prefix in FORMATS else None
    path = Path(rest) if kind else Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"suite file {path} does not exist (the project ships no benchmark data)")
    seeds = []
    for n, (_, where, record) in enumerate(read_records(path), start=1):
        kind = kind or detect_format(record)
        seeds.append(FORMATS[kind](record, where, n, path))
    if not seeds:
        raise SeedFormatError(f"{path}: no records")
    return seeds
