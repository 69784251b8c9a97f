"""Packaging: the shipped configs are package data (``algorithms.recipes``), found from any
working directory; a built wheel, installed into a fresh venv without the source tree, resolves
every config and data file the demo and the recipes need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from algorithms.config import load_config
from algorithms.recipes import configs_dir, find_config, recipe, shipped

ROOT = Path(__file__).resolve().parent.parent


def test_the_root_configs_folder_is_a_link_to_the_packaged_one():
    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == configs_dir().resolve()
    mode = subprocess.run(["git", "ls-files", "-s", "configs"], cwd=ROOT, capture_output=True, text=True).stdout
    if mode:  # a git checkout: the link is stored as a link, not as a copy of the folder
        assert mode.startswith("120000 ")


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert "cpu_smoke.yaml" in shipped() and "paper/qwen25_dpo_md.yaml" in shipped()
    assert find_config("configs/cpu_smoke.yaml") == recipe("cpu_smoke") == configs_dir() / "cpu_smoke.yaml"
    cfg = load_config("configs/cpu_demo.yaml")  # as the README writes it; base: and data files resolve
    sft = cfg.roles.defender.sft_data
    assert sft is not None and Path(sft).is_file() and Path(sft).is_relative_to(configs_dir())
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cpu_smoke.yaml").write_text("run:\n  steps: 7\n")
    assert load_config("configs/cpu_smoke.yaml").run.steps == 7  # a file that exists is the file meant
    with pytest.raises(FileNotFoundError, match=r"not a shipped config; the shipped ones are: cpu_demo\.yaml"):
        recipe("cpu_smokee")


# The venv sees the installed wheel first, then the project venv's other packages (torch, ...)
# through a mirror of its site-packages without the editable install of advgame (its finder
# hook and dist-info), so nothing can import the source tree.
RESOLVE_EVERYTHING = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import advgame_env, agents, algorithms
    from advgame_env import bundled_seeds
    from algorithms.cli.demo import DEMO, QUICK, heldout
    from algorithms.config import FILE_KEYS, load_config
    from algorithms.recipes import recipe, shipped

    prefix = Path(sys.prefix).resolve()
    for module in (advgame_env, agents, algorithms):
        assert Path(module.__file__).resolve().is_relative_to(prefix), module.__file__
    files = []
    for name in shipped():
        cfg = load_config(recipe(name))
        for *sections, key in FILE_KEYS:
            part = cfg
            for section in sections:
                part = getattr(part, section)
            value = getattr(part, key)
            if value and value.endswith(".jsonl"):  # a file, not a named set ("bundled")
                assert Path(value).is_file() and Path(value).resolve().is_relative_to(prefix), (name, key, value)
                files.append(value)
    assert load_config("configs/cpu_demo_quick.yaml") == load_config(QUICK)  # the documented spelling
    assert DEMO.resolve().is_relative_to(prefix) and heldout(None) and bundled_seeds("all")
    print(len(shipped()), "configs", len(set(files)), "data files", algorithms.__file__)
    """
)


@pytest.mark.slow
def test_a_built_wheel_runs_the_demo_configs_without_the_source_tree(tmp_path):
    source = tmp_path / "source"  # a copy: pip builds in place and would leave build/ in the checkout
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_symlink() or (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name, follow_symlinks=False)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist"]
    subprocess.run([*build, source], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("advgame-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "algorithms/configs/cpu_demo_quick.yaml" in names and "algorithms/configs/data/cpu_demo_sft.jsonl" in names
    assert "algorithms/configs/paper/ablations/small_judge.yaml" in names and "algorithms/training/trainer.py" in names
    assert not any(n.startswith(("configs/", "tests/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel]
    subprocess.run(install, check=True, capture_output=True)  # before the mirror: pip sees an empty venv
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if not entry.name.startswith(("__editable__", "advgame-")):
            (mirror / entry.name).symlink_to(entry)
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(purelib, "project-packages.pth").write_text(f"import site; site.addsitedir({str(mirror)!r})\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    work = tmp_path / "elsewhere"
    work.mkdir()  # no configs/ and no source tree here
    done = subprocess.run([python, "-c", RESOLVE_EVERYTHING], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    data_files = len(list((configs_dir() / "data").glob("*.jsonl")))  # every shipped file is some config's
    assert f"{len(shipped())} configs {data_files} data files {venv}" in done.stdout
    helped = subprocess.run(
        [venv / "bin" / "advgame", "demo", "--help"], cwd=work, env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--quick" in helped.stdout, helped.stderr[-3000:]
