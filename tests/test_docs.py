"""The README and the documentation site agree with the files: the README stays short and every
link in it reaches a file (GitHub renders it, and mkdocs does not check it: it lies outside docs/),
every page of the site's nav exists, and the quick start the site includes is the README's own.
`mkdocs build --strict` (`make docs`, run by `make test` and `make test-fast`) checks the links
inside docs/, their anchors and the API reference."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's and Python-Markdown's toc anchor of a heading: lower case, punctuation dropped."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"[ ]+", "-", text)


def anchors(markdown: str) -> set[str]:
    prose = FENCE.sub("", markdown)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose, re.MULTILINE)}


def relative_links(markdown: str) -> list[str]:
    prose = FENCE.sub("", markdown)
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+:", target)]


def nav_pages(entries: object) -> list[str]:
    if isinstance(entries, str):
        return [entries]
    if isinstance(entries, list):
        return [page for entry in entries for page in nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in nav_pages(value)]
    return []


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 300


@pytest.mark.parametrize("target", relative_links(README))
def test_every_readme_link_reaches_a_file_and_its_heading(target):
    path, _, anchor = target.partition("#")
    document = ROOT / path if path else ROOT / "README.md"
    assert document.is_file(), f"README links to {target}, which does not exist"
    if anchor and document.suffix == ".md":
        assert anchor in anchors(document.read_text(encoding="utf-8")), f"no heading #{anchor} in {path or 'README.md'}"


def test_the_readme_points_at_every_page_of_the_site():
    linked = {target.partition("#")[0] for target in relative_links(README)}
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {f"docs/{page}" for page in nav_pages(config["nav"])}
    top = {page for page in pages if not page.startswith(("docs/api/", "docs/results/", "docs/algorithms/"))}
    top |= {"docs/results/index.md", "docs/algorithms/index.md"}
    assert top - {"docs/index.md"} <= linked, f"pages the README never links: {sorted(top - linked)}"


def test_every_nav_page_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    missing = [page for page in nav_pages(config["nav"]) if not (ROOT / "docs" / page).is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"


def test_the_site_home_includes_the_readme_quick_start():
    start, end = "<!-- --8<-- [start:quickstart] -->", "<!-- --8<-- [end:quickstart] -->"
    assert start in README and end in README
    section = README[README.index(start) : README.index(end)]
    assert "```python" in section and "advgame_env.parallel_env" in section
    assert '--8<-- "README.md:quickstart"' in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")


ALGORITHM_PAGES = {
    "advgame_dpo_md": "advgame-md.md",
    "advgame_ipo_md": "advgame-md.md",
    "dpo": "dpo-ipo.md",
    "ipo": "dpo-ipo.md",
    "grpo": "grpo.md",
    "self_redteam": "self-redteam.md",
    "nash_md": "nash-md.md",
    "spiral_rae": "spiral-rae.md",
}


def shown(value: object) -> str:
    """A default as the knob tables write it: YAML spelling for booleans, code for strings."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def test_every_builtin_algorithm_has_a_page_listing_each_knob_with_its_default_and_range():
    """A knob the docs leave out, or a default or range that moved in the config dataclass (where
    both are declared, ``ranged(default, rule)``) and not on the page, fails here."""
    import dataclasses

    from algorithms.config import RULE, AlgorithmConfig
    from algorithms.training.algorithm import builtin_configs

    common = {field.name for field in dataclasses.fields(AlgorithmConfig)}
    configs = {config.name: config for config in builtin_configs()}
    assert set(configs) == set(ALGORITHM_PAGES), "a built-in algorithm without a docs page (or a page for none)"
    index = (ROOT / "docs" / "algorithms" / "index.md").read_text(encoding="utf-8")
    for name, config in configs.items():
        assert re.search(rf"^\| [^|]*`{name}`", index, re.MULTILINE), f"{name} is missing from the algorithms table"
        page = (ROOT / "docs" / "algorithms" / ALGORITHM_PAGES[name]).read_text(encoding="utf-8")
        assert f"{name}`" in page, f"{ALGORITHM_PAGES[name]} does not name {name}"
        rows = {row.split("|")[1].strip(): row for row in page.splitlines() if row.startswith("| `")}
        for field in dataclasses.fields(config):
            if field.name in common:
                continue
            row = rows.get(f"`{field.name}`")
            assert row is not None, f"{ALGORITHM_PAGES[name]} has no row for {name}'s knob {field.name}"
            if field.default is not None and field.default is not dataclasses.MISSING:
                cell = row.split("|")[2].strip()
                assert cell == shown(field.default), (
                    f"{name}.{field.name}: the page says {cell}, the config {field.default!r}"
                )
            if (rule := field.metadata.get(RULE)) is not None:
                cell = row.split("|")[3].strip()
                assert cell == rule.allowed, (
                    f"{name}.{field.name}: the page's range is {cell!r}, the config's {rule.allowed!r}"
                )


def test_no_page_example_or_shipped_config_names_a_moved_key():
    """The per-role keys moved into ``roles.<role>`` (``algorithms.config.MOVED_KEYS``); a page, an
    example or a shipped config's comment that still writes an old one teaches a key that now stops
    the run. docs/roles.md alone names them, in its table of old -> new keys."""
    from algorithms.config import MOVED_KEYS

    spellings = set(MOVED_KEYS)  # the dotted keys, and the role-named leaves a page may write alone
    spellings |= {
        leaf
        for key in MOVED_KEYS
        if re.search("_(attacker|defender)|(attacker|defender)_", leaf := key.rsplit(".")[-1])
    }
    old = re.compile(r"(?<![\w.])(" + "|".join(sorted(map(re.escape, spellings), key=len, reverse=True)) + r")\b")
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").glob("*.py")]
    files += [*(ROOT / "algorithms" / "configs").rglob("*.yaml")]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {match.group(1)} -> {MOVED_KEYS.get(match.group(1), 'roles.<role>...')}"
        for path in files
        if path != ROOT / "docs" / "roles.md"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for match in old.finditer(line)
    ]
    assert not found, "old per-role keys:\n" + "\n".join(found)


def test_the_roles_page_lists_each_role_key_with_its_default():
    """docs/roles.md's table: a key added to ``RoleConfig``, or a default moved there and not on
    the page, fails here (defaults as YAML writes them: ``null``, ``[]``, ``true``)."""
    import dataclasses

    from algorithms.config import RoleConfig

    yaml_spelling = {None: "`null`", (): "`[]`"}
    page = (ROOT / "docs" / "roles.md").read_text(encoding="utf-8")
    rows = {row.split("|")[1].strip(): row.split("|")[2].strip() for row in page.splitlines() if row.startswith("| `")}
    for field in dataclasses.fields(RoleConfig):
        cell = rows.get(f"`roles.<role>.{field.name}`")
        assert cell is not None, f"docs/roles.md has no row for roles.<role>.{field.name}"
        default = field.default
        expected = yaml_spelling[default] if default is None or default == () else shown(default)
        assert cell.split(" (")[0] == expected, (
            f"roles.<role>.{field.name}: the page says {cell}, the config {default!r}"
        )


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``advgame ...`` command line in a ```bash block of the README and the pages (and
    ``... -m algorithms.cli ...`` under a launcher), as the argv the command receives."""
    found = []
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = document.read_text(encoding="utf-8")
        for block in re.finditer(r"^```(?:bash|sh|shell)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
            line_no = text[: block.start()].count("\n") + 2
            for offset, line in enumerate(block.group(1).replace("\\\n", " \n").splitlines()):
                if "advgame" not in line and "algorithms.cli" not in line:
                    continue
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:  # a line of a multi-line quoted argument (python -c "...", curl -d '...')
                    assert not line.lstrip().startswith("advgame "), f"{document.name}: cannot split {line!r}"
                    continue
                commands: list[list[str]] = [[]]
                for token in tokens:  # a line may chain commands
                    commands.append([]) if token in ("&&", "||", ";", "|", "&") else commands[-1].append(token)
                for command in commands:
                    if "algorithms.cli" in command:
                        command = ["advgame", *command[command.index("algorithms.cli") + 1 :]]
                    if command[:1] == ["advgame"] and not {"-h", "--help"} & set(command):
                        found.append((f"{document.relative_to(ROOT)}:{line_no + offset}", command[1:]))
    # the shipped configs' comments: "#   advgame train --config ...   (what it does)"
    for config in sorted((ROOT / "algorithms" / "configs").rglob("*.yaml")):
        for number, line in enumerate(config.read_text(encoding="utf-8").splitlines(), 1):
            shown = re.match(r"#\s+(?:Scale \([^)]*\): )?advgame (.*)", line)
            if shown and not line.rstrip().endswith("\\"):
                argv = shlex.split(re.split(r"\s{2,}[(#]", shown.group(1))[0])
                found.append((f"{config.relative_to(ROOT)}:{number}", argv))
    return found


COMMANDS = documented_commands()


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_documented_command_line_parses(where, argv, capsys, monkeypatch):
    """A flag renamed or removed in the CLI and not in the docs fails here (parsing only: nothing runs)."""
    from algorithms.cli.main import parse_command

    monkeypatch.delenv("ADVGAME_THREADS", raising=False)  # --threads sets it; restored after the test
    try:
        parse_command(argv)
    except SystemExit as stop:  # tyro's usage error
        message = " ".join(capsys.readouterr().err.split())
        pytest.fail(f"{where}: advgame {' '.join(argv)} does not parse (exit {stop.code}): {message[:400]}")
    except Exception as error:  # our own refusals before tyro (a renamed flag)
        pytest.fail(f"{where}: advgame {' '.join(argv)} is refused: {error}")


def test_the_trainer_page_shows_the_step_as_the_code_has_it():
    """docs/trainer.md quotes ``Trainer.train_step`` whole: an edit of the step that the page does
    not follow fails here."""
    import inspect
    import textwrap

    from algorithms.training.trainer import Trainer

    page = (ROOT / "docs" / "trainer.md").read_text(encoding="utf-8")
    quoted = re.search(r"^```py\n(def train_step.*?)^```$", page, re.MULTILINE | re.DOTALL)
    assert quoted, "docs/trainer.md no longer quotes train_step in a ```py block"
    assert quoted.group(1) == textwrap.dedent(inspect.getsource(Trainer.train_step))


def test_the_layout_page_names_every_module():
    """docs/layout.md has one line per module: a module added to a package and not to the page
    fails here."""
    layout = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    modules = [
        path
        for package in ("advgame_types", "advgame_env", "agents", "algorithms")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and "configs" not in path.parts
    ]
    missing = [str(path.relative_to(ROOT)) for path in modules if not re.search(rf"\b{re.escape(path.name)}\b", layout)]
    assert modules and not missing, f"modules docs/layout.md does not name: {missing}"


def test_the_loop_stays_a_module_one_reads_at_once():
    """Issue 30's bound: the loop module within 450 lines, no module of the trainer's package over
    600 (docs/trainer.md gives the counts); a loop that grows past them fails here."""
    sizes = {
        p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / "algorithms" / "training").glob("*.py")
    }
    assert sizes["trainer.py"] <= 450, sizes["trainer.py"]
    assert max(sizes.values()) <= 600, {name: n for name, n in sizes.items() if n > 600}
