"""algorithms: training (``algorithms.training``), evaluation (``algorithms.evaluation``) and the
``advgame`` command (``algorithms.cli``) over the game of ``advgame_env`` and the players of ``agents``."""

from advgame_env.distribution import check_top_level

# before any submodule imports agents: a clash there would otherwise surface as a puzzling ImportError
check_top_level("algorithms", "agents")
