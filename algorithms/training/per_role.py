"""One value per role, typed: ``PerRole(attacker=..., defender=...)`` reads as ``x.attacker`` or,
where the role is a variable, ``x[role]``; it is a read-only mapping keyed by role name in the
order of ``ROLES``, so it goes wherever the trainer's role-keyed dicts went."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from advgame_env.roles import ATTACKER, DEFENDER, ROLES

T = TypeVar("T")


@dataclass(frozen=True, eq=False)  # equality is the mapping's: equal to a dict of the same items
class PerRole(Mapping[str, T]):
    attacker: T
    defender: T

    def __getitem__(self, role: str) -> T:
        if role == ATTACKER:
            return self.attacker
        if role == DEFENDER:
            return self.defender
        raise KeyError(f"no role {role!r}: the roles are {', '.join(ROLES)}")

    def __iter__(self) -> Iterator[str]:
        return iter(ROLES)

    def __len__(self) -> int:
        return len(ROLES)
