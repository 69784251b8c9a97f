"""The envs' typed ``**switches`` (``GameSwitches``) name every ``GameConfig`` field, with its type."""

import dataclasses
import inspect
import typing

from advgame_env import GameConfig
from advgame_env.env import AdvGameEnv, EnvArguments
from advgame_env.game import GameSwitches


def test_switches_are_the_config_fields_with_their_types():
    assert typing.get_type_hints(GameSwitches) == typing.get_type_hints(GameConfig)
    assert set(GameSwitches.__annotations__) == {f.name for f in dataclasses.fields(GameConfig)}
    assert not GameSwitches.__required_keys__  # every switch has a default


def test_env_arguments_are_the_env_keywords_and_the_switches():
    own = set(inspect.signature(AdvGameEnv).parameters) - {"switches"}
    assert own == {"judge", "seeds", "render_mode", "config"}
    assert set(typing.get_type_hints(EnvArguments)) == own | set(typing.get_type_hints(GameSwitches))
