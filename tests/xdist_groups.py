"""Which tests share one pytest-xdist worker (``make test`` and ``make test-fast`` run ``-n 2 --dist
loadgroup``), the mark that selects the vLLM ones (``-m vllm``, ``-m "not vllm"``), and the fix-up that makes
pytest-xdist honour the group under pytest 9.2.

The slow tests that start a vLLM engine or a ``vllm serve`` (their own, or the session's
``vllm_server`` of ``tests/conftest.py``) form the group ``vllm``: on one worker they run one at a
time, as in one process, so the session server starts once and two engines never load 2 cores
at once (on a clean clone, two workers each started a session server and the run stalled).

pytest-xdist 3.8.0 sends a group to the scheduler as an ``@group`` suffix written into
``item._nodeid``; pytest 9.2 keeps the node id in a structured ``item._id`` instead, so the write
is lost and every group is silently spread over all workers (pytest-xdist issue 1386).
``suffix_groups`` writes the suffix where this pytest keeps it, only where it is missing.
"""

from __future__ import annotations

import pytest

VLLM_GROUP = "vllm"


def needs_vllm(item: pytest.Item) -> bool:
    """A slow test with ``vllm`` in its id, or one that asks for the session's ``vllm serve``."""
    engine = "vllm" in item.nodeid.lower() or "vllm_server" in getattr(item, "fixturenames", ())
    return engine and item.get_closest_marker("slow") is not None


def group_of(item: pytest.Item) -> str | None:
    """The xdist group names of ``item`` joined as pytest-xdist joins them, or None."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) if names else None


def suffix_groups(items: list[pytest.Item]) -> None:
    """Give each grouped item the ``@group`` node-id suffix that ``--dist loadgroup`` schedules by,
    unless pytest-xdist's own hook already did (pytest before 9.2)."""
    for item in items:
        group = group_of(item)
        if group is None or item.nodeid.endswith(f"@{group}"):
            continue
        nodeid = f"{item.nodeid}@{group}"
        if hasattr(item, "_id"):
            from _pytest.nodeid import NodeId  # pytest 9.2's structured node id

            item._id = NodeId.parse(nodeid)
        else:
            item._nodeid = nodeid


# What a test reads when the session's server died under it: its requests refused or cut off
# (tests/conftest.py reports the death, the engine's traceback included, and starts it anew).
SERVER_GONE = [r"Connection ?refused", r"ConnectError", r"RemoteProtocolError", r"ReadError", r"EngineDeadError"]


def mark_vllm(item: pytest.Item) -> None:
    """Mark a vLLM test: its group puts every one on one worker under ``--dist loadgroup``, and
    ``vllm`` selects them (``-m vllm``; ``-m "not vllm"`` on a machine without vLLM). A test of
    the session's ``vllm serve`` runs once more (pytest-rerunfailures) if it failed because the
    server died under it: three times in ~20 runs of the whole suite its engine core died between
    requests while the other worker loaded both cores (never when the vLLM tests ran alone); any
    other failure, and a second death, fail the test."""
    if needs_vllm(item):
        item.add_marker(pytest.mark.xdist_group(VLLM_GROUP))
        item.add_marker(pytest.mark.vllm)
        if "vllm_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=SERVER_GONE))


# The two hooks, imported by tests/conftest.py (and by the suite test_parallel_workers.py builds).
def pytest_itemcollected(item: pytest.Item) -> None:
    """Marked as each item is collected, before pytest's own ``-m`` selection reads the marks."""
    mark_vllm(item)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, whose group suffix pytest 9.2 drops
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config.option, "loadgroup", False):  # set by pytest-xdist on its workers only
        suffix_groups(items)
