"""The weight copies a player keeps, named once (players, algorithms, checkpoints and the
config's ``sampler``/``reference`` use these). Imports nothing heavy, so the config may too."""

from __future__ import annotations

import typing
from typing import Literal

# learner: the weights being trained; ema: their moving average (the MD recipes' sampler and
# reference); initial: the frozen start (the on-policy recipes' reference)
Which = Literal["learner", "ema", "initial"]
WHICH: tuple[Which, ...] = typing.get_args(Which)
