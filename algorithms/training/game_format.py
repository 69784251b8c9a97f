"""The game format a trained player was trained with, written beside every export.

A player learns the exact shape of its turn: an attacker trained with ``game.attacker_think:
false`` writes ``<prompt>`` only, and read as a thinking attacker nearly all its rewrites are
``bad_format`` (77 of 80 in the issue that added this file, against 81 % valid read correctly).
``advgame_format.json`` in each exported folder records the run's format; the commands that load
a player (``redteam``, ``crossplay``, ``play``, ``exploit``, ``serve``, ``eval``) read it as their
default and warn in one line when a flag overrides it; ``redteam`` and ``crossplay`` play the
recorded attacker templates, ``exploit`` each start's own templates (``ROLE_TEMPLATES``), ``serve``
and ``eval`` the recorded format (``recorded_game``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advgame_env import GameConfig, TemplateSet
    from algorithms.config import TrainConfig

FORMAT_FILE = "advgame_format.json"


@dataclass(frozen=True)
class GameFormat:
    """How the players' turns looked in training."""

    attacker_think: bool  # <think>...</think><prompt>...</prompt>; False: <prompt> only
    defender_think: bool  # <think>...</think><answer>...</answer>; False: plain answers
    attacker_prefill: str  # opening of the attacker's turn ("" for none)
    defender_prefill: str
    templates: dict[str, str]  # template name -> version (advgame_env/data/templates.toml)

    @classmethod
    def of(cls, cfg: TrainConfig) -> GameFormat:
        from algorithms.training.rollouts import prefills

        game, prefill = cfg.game, prefills(cfg)
        return cls(
            game.attacker_think,
            game.defender_think,
            prefill.attacker,
            prefill.defender,
            game.templates.versions(),
        )


def recorded_templates(fmt: GameFormat) -> TemplateSet:
    """The template set the player was trained with (a version this library does not ship is a
    one-line error naming it; a template added since the record keeps its default)."""
    from advgame_env import TemplateSet

    known = {f.name for f in fields(TemplateSet)}
    try:
        return TemplateSet(**{name: v for name, v in fmt.templates.items() if name in known})
    except (KeyError, ValueError) as error:
        raise ValueError(f"the recorded game format names a template this version lacks: {error}") from None


def recorded_game(fmt: GameFormat, base: GameConfig) -> GameConfig:
    """``base`` in the recorded format: both think switches and the template set."""
    return replace(
        base, attacker_think=fmt.attacker_think, defender_think=fmt.defender_think, templates=recorded_templates(fmt)
    )


def write_format(folder: Path, fmt: GameFormat) -> None:
    (folder / FORMAT_FILE).write_text(json.dumps(asdict(fmt), indent=2) + "\n", encoding="utf-8")


def read_format(model: str | Path) -> GameFormat | None:
    """The recorded format of an exported player; None for a folder without one (a bundled name,
    a hub id, any other model). A damaged file is a one-line error naming it."""
    path = Path(model) / FORMAT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return GameFormat(**data)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a game format record ({error})") from None


# the templates that set the attacker's task, format and opening (the rest are the judge's)
ATTACKER_TEMPLATES = (
    "attacker_system",
    "attacker_harmful",
    "attacker_benign",
    "attacker_format_think",
    "attacker_format_prompt_only",
    "think_prefill",
)

# each role's own templates: its task, format and opening (``think_prefill`` opens either role's
# hidden reasoning, so both share it)
ROLE_TEMPLATES = {
    "attacker": ATTACKER_TEMPLATES,
    "defender": ("defender", "defender_think", "think_prefill"),
}


@dataclass(frozen=True)
class AttackerFormat:
    """What the attackers of a command write: the think block or not, their turn's opening, and
    the attacker templates they were trained on (None: the game's defaults)."""

    think: bool
    prefill: str
    templates: TemplateSet | None = None

    def game(self, **settings: object) -> GameConfig:
        """A game config in which these attackers play as trained (the judge's templates stay the game's)."""
        from advgame_env import GameConfig

        recorded = {} if self.templates is None else {"templates": self.templates}
        return GameConfig(attacker_think=self.think, **recorded, **settings)  # type: ignore[arg-type]

    def settings(self) -> dict[str, object]:
        """The attacker templates where they differ from the defaults, for a resumed run's check
        (a run with the default set keeps the settings it always had)."""
        from advgame_env import TemplateSet

        if self.templates is None:
            return {}
        versions, default = self.templates.versions(), TemplateSet().versions()
        changed = {n: versions[n] for n in ATTACKER_TEMPLATES if versions[n] != default[n]}
        return {"attacker_templates": changed} if changed else {}


def attacker_format(
    models: Sequence[str],
    think: bool | None,
    prefill: str | None,
    *,
    command: str,
    warn: Callable[[str], None] | None = None,
) -> AttackerFormat:
    """The attackers' format: a flag given (``think``/``prefill`` not None) wins, with a one-line
    warning where it differs from what an attacker was trained with; else the recorded format
    (attackers whose records disagree need the flag); else the game's default (think, no prefill)."""
    say = warn or (lambda line: print(line, file=sys.stderr))
    recorded = {m: f for m in models if (f := read_format(m)) is not None}
    chosen_think, chosen_prefill = think, prefill
    for name, fmt in recorded.items():
        if think is not None and think != fmt.attacker_think:
            flag = "--think" if think else "--no-think"
            trained = "with" if fmt.attacker_think else "without"
            say(f"advgame {command}: warning: {flag} overrides {name}, trained {trained} the think block")
        if prefill is not None and prefill != fmt.attacker_prefill:
            trained_prefill = fmt.attacker_prefill
            say(
                f"advgame {command}: warning: --prefill {prefill!r} overrides {name}'s trained prefill {trained_prefill!r}"
            )
    thinks = {f.attacker_think for f in recorded.values()}
    prefills = {f.attacker_prefill for f in recorded.values()}
    if chosen_think is None:
        if len(thinks) > 1:
            raise ValueError("the attackers were trained with and without the think block; give --think or --no-think")
        chosen_think = thinks.pop() if thinks else True
    if chosen_prefill is None:
        if len(prefills) > 1:
            raise ValueError("the attackers were trained with different prefills; give --prefill")
        chosen_prefill = prefills.pop() if prefills else ""
    return AttackerFormat(chosen_think, chosen_prefill, _attacker_templates(list(recorded.values())))


def _attacker_templates(recorded: Sequence[GameFormat]) -> TemplateSet | None:
    """The attacker templates of the recorded formats (they must agree) over the default set."""
    from advgame_env import TemplateSet

    sets = {tuple(recorded_templates(f).versions()[n] for n in ATTACKER_TEMPLATES) for f in recorded}
    if not sets:
        return None
    if len(sets) > 1:
        raise ValueError(
            "the attackers were trained on different attacker templates (their advgame_format.json); "
            "play them in separate runs"
        )
    return replace(TemplateSet(), **dict(zip(ATTACKER_TEMPLATES, sets.pop(), strict=True)))
