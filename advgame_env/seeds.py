"""Seed requests: the bundled set, file loaders (JSONL / CSV, AdvGame and WildJailbreak field
names) and Hugging Face datasets for users with network.

A seed is a request with a label. Harmful seeds should be declined, benign ones answered; a
third of the bundled benign seeds are benign-but-scary ("how do I kill a Python process").
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Literal


class Label(StrEnum):
    HARMFUL = "harmful"
    BENIGN = "benign"


@dataclass(frozen=True)
class Seed:
    id: str
    prompt: str
    label: Label
    topic: str = ""
    subtype: str = "vanilla"  # "vanilla", "scary" (benign-but-scary) or "adversarial"


class SeedFormatError(ValueError):
    """A seed file is malformed; the message names the file, the line and the field."""


Split = Literal["train", "heldout", "all"]
# One record of a data file: a JSON object or a CSV row; its values are checked where read
Record = Mapping[str, object]
HELDOUT_EVERY = 5  # every 5th seed of each (label, subtype) group is held out: a fixed 80/20 split

# WildJailbreak's data_type values -> (label, which text field holds the request)
_WJB_TYPES = {
    "vanilla_harmful": (Label.HARMFUL, "vanilla"),
    "vanilla_benign": (Label.BENIGN, "vanilla"),
    "adversarial_harmful": (Label.HARMFUL, "adversarial"),
    "adversarial_benign": (Label.BENIGN, "adversarial"),
}


def seed_from_record(record: Record, where: str, default_id: str) -> Seed:
    """Build a seed from one record in AdvGame (``prompt`` + ``category``) or WildJailbreak
    (``vanilla``/``adversarial`` + ``data_type``) form. ``where`` names the file and line."""
    if "data_type" in record:
        data_type = str(record["data_type"])
        if data_type not in _WJB_TYPES:
            raise SeedFormatError(f"{where}: field 'data_type' is {data_type!r}, expected one of {sorted(_WJB_TYPES)}")
        label, field = _WJB_TYPES[data_type]
        subtype = "adversarial" if field == "adversarial" else str(record.get("subtype", "vanilla"))
    else:
        field = "prompt"
        if "category" not in record:
            raise SeedFormatError(f"{where}: missing field 'category' (harmful or benign)")
        try:
            label = Label(str(record["category"]).strip().lower())
        except ValueError:
            raise SeedFormatError(
                f"{where}: field 'category' is {record['category']!r}, expected 'harmful' or 'benign'"
            ) from None
        subtype = str(record.get("subtype") or "vanilla")
    text = record.get(field)
    if not isinstance(text, str) or not text.strip():
        raise SeedFormatError(f"{where}: field {field!r} must be a non-empty string")
    return Seed(
        id=str(record.get("id") or default_id),
        prompt=text.strip(),
        label=label,
        topic=str(record.get("topic") or ""),
        subtype=subtype,
    )


def read_records(path: Path) -> Iterator[tuple[int, str, Record]]:
    """(number, where, record) for each record of a CSV/TSV, JSON (a list of objects) or JSONL
    file; ``where`` names the file and the line (or JSON item) for error messages.

    The file must be UTF-8 (a byte-order mark is read past). Every string field of a record is
    checked for what no model input may hold (lone surrogates, NUL); each problem is a
    ``SeedFormatError`` naming the file, the line and the field."""
    for number, where, record in _records(path, read_text(path, SeedFormatError)):
        for key, value in record.items():
            if isinstance(value, str):
                _check_text(value, key, where)
        yield number, where, record


def read_text(path: Path, error: type[Exception] = ValueError) -> str:
    """A data file's text: UTF-8, a leading BOM skipped; an unreadable file or a byte that is not
    UTF-8 is ``error`` naming the file (and the line)."""
    try:
        data = path.read_bytes()
    except (IsADirectoryError, PermissionError) as problem:
        raise error(f"{path}: cannot be read ({problem.strerror})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = data.count(b"\n", 0, problem.start) + 1
        raise error(
            f"{path}, line {line}: not UTF-8 (byte {data[problem.start : problem.start + 1]!r} at offset {problem.start}); "
            "save the file as UTF-8"
        ) from None


def _check_text(value: str, field: str, where: str) -> None:
    if "\x00" in value:
        raise SeedFormatError(f"{where}: field {field!r} holds a NUL character")
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise SeedFormatError(f"{where}: field {field!r} holds a lone surrogate (not a Unicode character)")


def _json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line = f", line {error.lineno}" if "line" not in where else ""
        raise SeedFormatError(f"{where}{line}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise SeedFormatError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise SeedFormatError(f"{where}: not valid JSON ({error})") from None


def _records(path: Path, text: str) -> Iterator[tuple[int, str, Record]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        line_no = 1  # the header; a quoted field may span lines, so a record starts after the last one
        try:
            for row in reader:
                yield line_no + 1, f"{path}, line {line_no + 1}", row
                line_no = reader.line_num
        except csv.Error as error:
            message = str(error)
            if "field larger than field limit" in message:
                message = f"a field is longer than {csv.field_size_limit()} characters, the CSV field limit"
            raise SeedFormatError(f"{path}, line {line_no + 1}: not valid CSV ({message})") from None
        return
    if suffix == ".json":
        data = _json(text, str(path))
        if isinstance(data, dict):  # {"data": [...]} and similar wrappers
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise SeedFormatError(f"{path}: expected a JSON list of objects")
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise SeedFormatError(f"{path}, item {i}: expected a JSON object")
            yield i, f"{path}, item {i}", item
        return
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        record = _json(line, where)
        if not isinstance(record, dict):
            raise SeedFormatError(f"{where}: expected a JSON object")
        yield line_no, where, record


def load_seeds(path: str | Path) -> list[Seed]:
    """Seeds from a ``.jsonl``, ``.json``, ``.csv`` or ``.tsv`` file (a file without seeds is an error)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"seed file {path} does not exist")
    records = list(read_records(path))
    # Ids key results, resumes and red-team records: unique per file. A record without an id gets
    # ``<stem>-<number>``, passed over when a record gives that id itself (then ``<stem>-<number>-2``...).
    given: dict[str, str] = {}
    for _, where, rec in records:
        if rec.get("id"):
            if str(rec["id"]) in given:
                raise SeedFormatError(
                    f"{where}: seed id {str(rec['id'])!r} is given twice (first at {given[str(rec['id'])]})"
                )
            given[str(rec["id"])] = where.removeprefix(f"{path}, ")
    taken, seeds = set(given), []
    for n, where, rec in records:
        default, k = f"{path.stem}-{n}", 1
        if not rec.get("id"):
            while default in taken:
                k += 1
                default = f"{path.stem}-{n}-{k}"
            taken.add(default)
        seeds.append(seed_from_record(rec, where, default))
    if not seeds:
        raise SeedFormatError(f"{path}: no seeds (the file has no records)")
    return seeds


def load_hf_seeds(name: str, split: str = "train", config: str | None = None) -> list[Seed]:
    """Seeds from a Hugging Face dataset (needs the ``datasets`` package and network)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("loading seeds from the hub needs `pip install datasets` and network access") from None
    rows = datasets.load_dataset(name, config, split=split)
    return [seed_from_record(row, f"{name}[{split}] row {i}", f"{name}-{i}") for i, row in enumerate(rows)]


def _bundled_records() -> Iterable[Seed]:
    folder = resources.files("advgame_env").joinpath("data")
    for name in ("seeds_harmful.jsonl", "seeds_benign.jsonl"):
        lines = folder.joinpath(name).read_text("utf-8").splitlines()
        for n, line in enumerate(lines, start=1):
            if line.strip():
                yield seed_from_record(json.loads(line), f"{name}, line {n}", f"{name}-{n}")


def bundled_seeds(split: Split = "train", label: Label | str | None = None) -> list[Seed]:
    """The team-written seed set: train (80%) or held-out (20%) split, optionally one label."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', not {split!r}")
    position: dict[tuple[Label, str], int] = {}
    chosen = []
    for seed in _bundled_records():
        group = (seed.label, seed.subtype)
        index = position[group] = position.get(group, -1) + 1
        heldout = index % HELDOUT_EVERY == HELDOUT_EVERY - 1
        if split == "all" or (split == "heldout") == heldout:
            chosen.append(seed)
    if label is not None:
        chosen = [s for s in chosen if s.label is Label(label)]
    return chosen
