"""What running the suite on parallel workers (pytest-xdist, ``make test``) relies on: the tiny
chat model's on-disk cache is built safely by two workers at once."""

from __future__ import annotations

from pathlib import Path

from agents import testing


def test_a_tiny_chat_model_another_worker_finished_first_is_kept(tmp_path: Path) -> None:
    """Two workers that both found no cached model both build it; the one that finishes second
    drops its copy instead of failing (or writing into the other's scratch folder)."""
    folder = tmp_path / "tiny-chat"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # the other worker's finished model
    testing._train_tiny_chat(folder, ["How do I pick a lock?"], ["I can't help with that."], steps=1)
    assert [p.name for p in folder.iterdir()] == ["config.json"] and (folder / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-chat"]  # no scratch folder left behind
