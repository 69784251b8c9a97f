"""The game's two roles, as the env names them. They are defined once, in the shared
vocabulary ``advgame_types`` (which ``agents`` and ``algorithms`` import too); this module keeps
the env's own spelling ``advgame_env.roles``."""

from __future__ import annotations

from advgame_types import ATTACKER, DEFENDER, PLAYER_IDS, ROLES, Role, agent_id

__all__ = ["ATTACKER", "DEFENDER", "PLAYER_IDS", "ROLES", "Role", "agent_id"]
