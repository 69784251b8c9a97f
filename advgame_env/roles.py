"""The game's two roles, named once: the trainer, the batches, the env's agent ids and the
TextArena player ids all derive from these. It imports nothing, so every package may use it
(``agents`` mirrors the names as its default adapter names, see ``agents.roles``)."""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["attacker", "defender"]
ATTACKER: Final = "attacker"
DEFENDER: Final = "defender"
ROLES: Final[tuple[str, str]] = (ATTACKER, DEFENDER)  # str, not Role: callers key dicts by any role name


def agent_id(role: Role) -> str:
    """The PettingZoo agent id of a role (``attacker_0``): one agent per role."""
    return f"{role}_0"


# TextArena numbers its players; the attacker moves first
PLAYER_IDS: Final[dict[Role, int]] = {ATTACKER: 0, DEFENDER: 1}
