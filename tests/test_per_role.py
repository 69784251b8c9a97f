"""PerRole: the trainer's one value per role, by field or by role name."""

import pytest

from algorithms.training.per_role import PerRole


def test_a_per_role_value_reads_by_field_and_by_role_in_the_roles_order():
    limits = PerRole(attacker=256, defender=512)
    assert (limits.attacker, limits["defender"]) == (256, 512)
    assert list(limits) == ["attacker", "defender"] and dict(limits) == {"attacker": 256, "defender": 512}
    assert len(limits) == 2 and "defender" in limits and "policy" not in limits
    assert limits == {"attacker": 256, "defender": 512} == PerRole(attacker=256, defender=512) != {"attacker": 256}


def test_a_role_that_is_not_one_is_a_key_error_naming_the_roles():
    with pytest.raises(KeyError, match="the roles are attacker, defender"):
        PerRole(attacker=1, defender=2)["policy"]
    assert PerRole(attacker=1, defender=2).get("policy") is None
