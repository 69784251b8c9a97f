"""The README and the documentation site agree with the files: the README stays short and every
link in it reaches a file (GitHub renders it, and mkdocs does not check it: it lies outside docs/),
every page of the site's nav exists, and the quick start the site includes is the README's own.
`mkdocs build --strict` (`make docs`, run by `make test` and `make test-fast`) checks the links
inside docs/, their anchors and the API reference."""

import re
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
