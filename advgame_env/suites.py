"""Evaluation suites: labelled requests from the standard benchmark files, as seeds.

The project ships no third-party benchmark data: point ``load_suite`` at a local copy. The
format is recognised from all the records' fields and the file name, or named explicitly (``"xstest:path.csv"``):

  harmbench       HarmBench behaviours CSV (Behavior, SemanticCategory, ContextString, BehaviorID): harmful
  jailbreakbench  JBB-Behaviors CSV (Goal, Category, Behavior): harmful, or benign for a file named *benign*
  xstest          XSTest prompts, CSV or JSON (prompt, type, label safe/unsafe or contrast_* types):
                  safe prompts are benign-but-scary, unsafe ones harmful
  orbench         OR-Bench CSV (prompt, category): benign-but-scary, or harmful for a file named *toxic*;
                  recognised by its name (or-bench-*) or when every category is one of its topics
  wildjailbreak   WildJailbreak JSONL/CSV/TSV (vanilla, adversarial, data_type)
  plain           advgame seed files: JSONL/CSV with prompt + category harmful|benign (any other
                  category is an error naming its line)
  bundled         the bundled held-out seeds (the default suite)

A malformed file raises ``SeedFormatError`` naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from advgame_env.seeds import Label, Record, Seed, SeedFormatError, bundled_seeds, read_records, seed_from_record


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
    try:
        return seed_from_record(record, where, f"{path.stem}-{n}")  # AdvGame and WildJailbreak fields
    except SeedFormatError as error:
        if "'category' is" not in str(error):
            raise
        raise SeedFormatError(
            f"{error}; a benchmark whose categories are topics needs its format named, e.g. orbench:{path}"
        ) from None


FORMATS: dict[str, Callable[[Record, str, int, Path], Seed]] = {
    "harmbench": _harmbench,
    "jailbreakbench": _jailbreakbench,
    "xstest": _xstest,
    "orbench": _orbench,
    "wildjailbreak": _plain,
    "plain": _plain,
}


# OR-Bench's categories (its topic column; "harmful" is one of them, so a label alone tells nothing)
ORBENCH_CATEGORIES = frozenset(
    ("deception", "harassment", "harmful", "hate", "illegal", "privacy", "self-harm", "sexual", "unethical", "violence")
)
LABELS = frozenset(label.value for label in Label)


def detect_format(records: Record | Sequence[Record], name: str = "") -> str:
    """The format of a file, told from all its records (one record: a file of one record) and
    its name. OR-Bench and plain advgame files both have ``prompt`` + ``category``: a file is
    OR-Bench when it is named so (``or-bench-*``) or every category is one of OR-Bench's and
    not every one is a label; otherwise it is plain, and a category that is not a label is an
    error naming its line (never a silent benign seed)."""
    items: Sequence[Record] = [records] if isinstance(records, Mapping) else records
    keys = {key for record in items for key in record}
    if "Behavior" in keys and ({"BehaviorID", "SemanticCategory", "FunctionalCategory"} & keys):
        return "harmbench"
    if "Goal" in keys:
        return "jailbreakbench"
    if "data_type" in keys or "vanilla" in keys:
        return "wildjailbreak"
    if "prompt" in keys and "type" in keys:
        return "xstest"
    if "prompt" in keys and "category" in keys:
        if any(tag in name.lower().replace("_", "-") for tag in ("or-bench", "orbench")):
            return "orbench"
        categories = {str(r.get("category", "")).strip().lower() for r in items if "category" in r}
        complete = all("category" in r for r in items)
        if complete and categories and not categories <= LABELS and categories <= ORBENCH_CATEGORIES:
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
    records = list(read_records(path))
    if not records:
        raise SeedFormatError(f"{path}: no records")
    kind = kind or detect_format([record for _, _, record in records], path.name)
    return [FORMATS[kind](record, where, n, path) for n, (_, where, record) in enumerate(records, start=1)]


def first_seeds(suite: Sequence[Seed], count: int) -> list[Seed]:
    """The first ``count`` seeds, half harmful (the odd one too) and half benign, each in suite
    order (one label fills in when the other runs out): a small run that still measures both
    compliance and over-refusal. ``advgame eval --limit``, ``redteam --limit`` and cross-play."""
    if count < 0:
        raise ValueError(f"the number of seeds must be at least 0, not {count}")
    harmful = [s for s in suite if s.label is Label.HARMFUL]
    benign = [s for s in suite if s.label is Label.BENIGN]
    take_harmful = min(len(harmful), max((count + 1) // 2, count - len(benign)))
    take_benign = min(len(benign), count - take_harmful)
    return harmful[:take_harmful] + benign[:take_benign]
