"""Property-based tests of the loaders that read what users give: seed files, suite files and
run configs (files and ``key=value`` overrides). Whatever the input, the outcome is a result
that holds its promises or the loader's documented error (``SeedFormatError``,
``ConfigError``), never another exception.

The budget is fixed and the examples derandomised, so the default run is the same every time
(ADVGAME_FUZZ_EXAMPLES=N raises the budget for a longer hunt; the reliability figures of
docs/reliability.md come from such a run). Each test runs its hypothesis search, counts the inputs it tried in
``TRIED`` and asserts it tried the whole budget (``fuzzed``), printing the count when the
budget is raised.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advgame_env import Label, SeedFormatError, load_seeds
from advgame_env.suites import FORMATS, load_suite
from algorithms.config import RULES, ConfigError, TrainConfig, _walk, load_config, validate

EXAMPLES = int(os.environ.get("ADVGAME_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRIED: Counter[str] = Counter()  # inputs tried per loader (printed by -s runs for docs/reliability.md)


def fuzzed(name: str, search: Any) -> None:
    """Runs a hypothesis search (a ``@given`` function called without arguments) and checks that
    it tried ``EXAMPLES`` inputs: a search cut short, or a strategy that generates nothing, fails
    here instead of passing on fewer inputs than docs/reliability.md claims."""
    before = TRIED[name]
    search()
    tried = TRIED[name] - before
    assert tried == EXAMPLES, f"{name}: {tried} inputs tried, not {EXAMPLES}"
    if os.environ.get("ADVGAME_FUZZ_EXAMPLES"):
        print(f"\nfuzzed {name}: {tried} inputs; crashes: 0 (a crash fails its test)")


# ----------------------------------------------------------------------------- building blocks

# text with the characters that break loaders: quotes, separators, newlines, BOM, NUL, lone
# surrogates, look-alikes, long runs
HOSTILE = st.sampled_from(
    ['"', ",", "\t", "\n", "\r", "\ufeff", "\x00", "\ud800", "\udfff", "\u2028", "＜", "'", "\\", " ", "é", "harmful"]
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(HOSTILE, st.text(max_size=5)), max_size=12).map("".join),
    st.sampled_from(["harmful", "benign", "HARMFUL", " benign ", "violence", "deception", "safe", "unsafe"]),
    st.sampled_from(["vanilla_harmful", "adversarial_benign", "contrast_homonyms", "homonyms", "odd"]),
)
SCALAR = st.one_of(TEXT, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)
FIELDS = st.sampled_from(
    [
        "prompt",
        "category",
        "id",
        "topic",
        "subtype",
        "data_type",
        "vanilla",
        "adversarial",
        "Behavior",
        "BehaviorID",
        "SemanticCategory",
        "ContextString",
        "Goal",
        "Category",
        "Index",
        "type",
        "label",
    ]
)
LABEL = st.one_of(
    st.sampled_from(["harmful", "benign", "Harmful", " benign", "violence", "deception", "harmfull"]), TEXT
)
PROMPT = st.one_of(st.text(min_size=1, max_size=30), TEXT)
# records close to each format (most load), and records of anything at all
NEAR_FORMATS = (
    st.fixed_dictionaries(
        {"prompt": PROMPT, "category": LABEL}, optional={"id": SCALAR, "topic": TEXT, "subtype": TEXT}
    ),
    st.fixed_dictionaries(
        {
            "vanilla": PROMPT,
            "adversarial": PROMPT,
            "data_type": st.sampled_from(["vanilla_harmful", "adversarial_benign", "x"]),
        }
    ),
    st.fixed_dictionaries({"Behavior": PROMPT, "BehaviorID": TEXT}, optional={"ContextString": TEXT}),
    st.fixed_dictionaries({"Goal": PROMPT, "Category": TEXT}),
    st.fixed_dictionaries(
        {"prompt": PROMPT, "type": TEXT}, optional={"label": st.sampled_from(["safe", "unsafe", "x"])}
    ),
)
RECORD = st.dictionaries(st.one_of(FIELDS, TEXT), VALUE, max_size=6)
# a file of one format's records (most load), of mixed near records, or of anything at all
RECORDS = st.one_of(
    *(st.lists(near, max_size=5) for near in NEAR_FORMATS),
    st.lists(st.one_of(*NEAR_FORMATS), max_size=5),
    st.lists(RECORD, max_size=5),
)
SUFFIX = st.sampled_from([".jsonl", ".json", ".csv", ".tsv"])


def _write_records(records: list[dict[str, Any]], suffix: str) -> bytes:
    if suffix == ".jsonl":
        return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8", "surrogatepass")
    if suffix == ".json":
        return json.dumps(records).encode("utf-8", "surrogatepass")
    names = list(dict.fromkeys(k for r in records for k in r)) or ["prompt"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, delimiter="\t" if suffix == ".tsv" else ",")
    writer.writeheader()
    writer.writerows({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()} for r in records)
    return out.getvalue().encode("utf-8", "surrogatepass")


FILE = st.one_of(
    st.tuples(SUFFIX, st.binary(max_size=300)),  # any bytes at all
    st.tuples(SUFFIX, RECORDS).map(lambda t: (t[0], _write_records(t[1], t[0]))),
    st.tuples(SUFFIX, RECORDS.filter(bool)).map(  # with a BOM, or cut short
        lambda t: (t[0], b"\xef\xbb\xbf" + _write_records(t[1], t[0])[: max(1, len(_write_records(t[1], t[0])) - 3)])
    ),
)
NAME = st.sampled_from(["seeds", "or-bench-hard-1k", "or-bench-toxic", "benign-behaviors", "harmbench", "xstest"])


def _file(folder: Path, name: str, suffix: str, content: bytes) -> Path:
    path = folder / f"{name}{suffix}"
    path.write_bytes(content)
    return path


def _good_seeds(seeds: list[Any]) -> None:
    assert seeds, "a loader returned no seeds instead of an error"
    for seed in seeds:
        assert isinstance(seed.prompt, str) and seed.prompt.strip() and seed.label in (Label.HARMFUL, Label.BENIGN)
        for text in (seed.prompt, seed.id, seed.topic, seed.subtype):
            assert "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


# ----------------------------------------------------------------------------- seeds and suites


def test_seed_files_load_or_raise_seed_format_error():
    fuzzed("seeds", _seed_files)


@FUZZ
@given(FILE, NAME)
def _seed_files(file, name):
    TRIED["seeds"] += 1
    with tempfile.TemporaryDirectory() as folder:
        path = _file(Path(folder), name, *file)
        try:
            seeds = load_seeds(path)
        except SeedFormatError as error:
            assert str(path) in str(error)  # the message names the file
            return
        _good_seeds(seeds)


def test_suite_files_load_or_raise_seed_format_error():
    fuzzed("suites", _suite_files)


@FUZZ
@given(FILE, NAME, st.sampled_from([None, *FORMATS]))
def _suite_files(file, name, kind):
    TRIED["suites"] += 1
    with tempfile.TemporaryDirectory() as folder:
        path = _file(Path(folder), name, *file)
        try:
            seeds = load_suite(f"{kind}:{path}" if kind else str(path))
        except SeedFormatError as error:
            assert str(path) in str(error)
            return
        _good_seeds(seeds)


# ----------------------------------------------------------------------------- configs

DEFAULTS = dict(_walk(TrainConfig()))
KEYS = sorted(set(DEFAULTS) | set(RULES))
PLAUSIBLE = st.sampled_from([0, -1, 1, 2, 3, 0.5, 1e-5, -0.0, 0.999, 1e30, math.inf, "fast", "", "v1", "v9", "llm"])
CONFIG_VALUE = st.one_of(
    PLAUSIBLE,
    PLAUSIBLE,
    SCALAR,
    st.lists(st.one_of(st.floats(), st.integers(), TEXT), max_size=3),
)


@st.composite
def _near_default(draw: Any) -> tuple[str, Any]:
    """A key with a value of its own type near its default (most of these load)."""
    key = draw(st.sampled_from(sorted(DEFAULTS)))
    default = DEFAULTS[key]
    if isinstance(default, bool):
        return key, draw(st.booleans())
    if isinstance(default, int):
        return key, draw(st.integers(-2, 2 * default + 3))
    if isinstance(default, float):
        return key, draw(st.floats(-1.0, 2 * default + 1.0))
    if isinstance(default, tuple):
        return key, draw(st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=3))
    return key, draw(st.one_of(st.just(default), st.just(None), TEXT))


def _nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value
    return out


YAML_DOC = st.one_of(
    st.lists(
        st.one_of(_near_default(), _near_default(), st.tuples(st.one_of(st.sampled_from(KEYS), TEXT), CONFIG_VALUE)),
        max_size=6,
    ).map(
        lambda pairs: (
            yaml.safe_dump(_nest(pairs), allow_unicode=True).encode("utf-8", "surrogatepass")
            if all(not any("\ud800" <= c <= "\udfff" for c in str(p)) for p in pairs)
            else b"{}"
        )
    ),
    st.binary(max_size=200),
    st.lists(
        st.one_of(st.sampled_from(["run:\n", "  steps: ", "base: ", "[", "{", ": ", "- ", "&a ", "*a", "\n"]), TEXT),
        max_size=10,
    )
    .map("".join)
    .map(lambda s: s.encode("utf-8", "surrogatepass")),
)
OVERRIDE = st.one_of(
    _near_default().map(lambda kv: f"{kv[0]}={json.dumps(kv[1], allow_nan=True)}"),
    _near_default().map(lambda kv: f"{kv[0]}={json.dumps(kv[1], allow_nan=True)}"),
    st.tuples(st.sampled_from(KEYS), CONFIG_VALUE).map(lambda kv: f"{kv[0]}={json.dumps(kv[1], allow_nan=True)}"),
    st.tuples(st.sampled_from(KEYS), TEXT).map(lambda kv: f"{kv[0]}={kv[1]}"),
    TEXT,
)


def _good_config(cfg: TrainConfig) -> None:
    validate(cfg)  # every rule holds for what loaded
    for _, value in _walk(cfg):
        assert not (isinstance(value, float) and not math.isfinite(value))


def test_overrides_load_or_raise_config_error():
    fuzzed("config overrides", _overrides)


@FUZZ
@given(st.lists(OVERRIDE, max_size=4))
def _overrides(overrides):
    TRIED["config overrides"] += 1
    try:
        cfg = load_config(None, overrides)
    except ConfigError:
        return
    _good_config(cfg)


def test_config_files_load_or_raise_config_error():
    fuzzed("config files", _config_files)


@FUZZ
@given(YAML_DOC, st.lists(OVERRIDE, max_size=2))
def _config_files(content, overrides):
    TRIED["config files"] += 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_bytes(content)
        (Path(folder) / "other.yaml").write_text("run:\n  steps: 3\n")
        try:
            cfg = load_config(path, overrides)
        except ConfigError as error:
            assert str(error)
            return
        _good_config(cfg)


# ----------------------------------------------------------------------------- ids and duplicate keys

# ids a file may give, generated-looking ones among them (a record without an id is seeds-<line>)
SEED_ID = st.one_of(st.none(), st.just(""), st.sampled_from(["a", "b", "seeds-1", "seeds-2", "seeds-3", "seeds-2-2"]))


def test_seed_ids_are_unique_or_the_repeated_one_is_named():
    fuzzed("seed ids", _seed_ids)


@FUZZ
@given(st.lists(st.tuples(SEED_ID, st.sampled_from(["harmful", "benign"])), min_size=1, max_size=8), SUFFIX)
def _seed_ids(rows, suffix):
    TRIED["seed ids"] += 1
    records = [{"prompt": f"p{n}", "category": c} | ({} if i is None else {"id": i}) for n, (i, c) in enumerate(rows)]
    given_ids = [r["id"] for r in records if r.get("id")]
    with tempfile.TemporaryDirectory() as folder:
        path = _file(Path(folder), "seeds", suffix, _write_records(records, suffix))
        try:
            seeds = load_seeds(path)
        except SeedFormatError as error:
            assert len(set(given_ids)) < len(given_ids) and "is given twice" in str(error)
            return
    ids = [seed.id for seed in seeds]
    assert len(set(given_ids)) == len(given_ids) and len(set(ids)) == len(ids) == len(records)
    assert [i for i, r in zip(ids, records, strict=True) if r.get("id")] == given_ids  # given ids kept


SECTION_KEYS = [("run", "steps", "3"), ("run", "seed", "4"), ("optim", "lr", "1.0e-5"), ("game", "num_attacks", "2")]


def test_a_key_given_twice_is_always_named():
    fuzzed("duplicate keys", _duplicate_keys)


@FUZZ
@given(st.lists(st.sampled_from(SECTION_KEYS), min_size=1, max_size=6), st.booleans())
def _duplicate_keys(entries, flow):
    """Sections written block style (a section may come back) or flow style; whatever repeats, a
    key given twice in one mapping is a ConfigError naming it, and nothing else is."""
    TRIED["duplicate keys"] += 1
    if flow:  # run: {steps: 3, steps: 9} -- one mapping per section, keys as drawn
        sections = dict.fromkeys(section for section, _, _ in entries)
        text = "".join(
            f"{sec}: {{{', '.join(f'{k}: {v}' for s_, k, v in entries if s_ == sec)}}}\n" for sec in sections
        )
        repeated = [f"{sec}.{k}" for sec in sections for k in _repeats([k for s_, k, _ in entries if s_ == sec])]
    else:  # each entry its own block: a section that comes back is itself given twice
        text = "".join(f"{sec}:\n  {k}: {v}\n" for sec, k, v in entries)
        repeated = _repeats([sec for sec, _, _ in entries])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as error:
            assert repeated and "is given twice" in str(error) and str(path) in str(error)
            assert any(f"config.{key} is given twice" in str(error) for key in repeated)
            return
    assert not repeated


def _repeats(keys: list[str]) -> list[str]:
    return [k for k, n in Counter(keys).items() if n > 1]
