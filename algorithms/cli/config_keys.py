"""The run config's keys as ``advgame train --help`` lists them: each key with its default, its
allowed values (the strict reader's rule, or a Literal's choices) and its comment, generated from
the config dataclasses and ``algorithms.config.rule_of`` so the list cannot drift from the reader."""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from collections.abc import Iterator

from tyro._docstrings import get_field_docstring  # the field comments tyro shows as flag help

from algorithms.config import TrainConfig, rule_of

WIDTH = 100


@dataclasses.dataclass(frozen=True)
class Key:
    key: str  # dotted, as a key=value override names it
    default: object
    allowed: str  # the rule in words, a Literal's choices, or the type
    comment: str


def keys(cfg: object | None = None, prefix: str = "") -> Iterator[Key]:
    """Every leaf key of ``cfg`` (default: the defaults), depth first in declaration order; the
    ``algorithm`` section is the chosen algorithm's own dataclass, so its knobs are that algorithm's."""
    cfg = TrainConfig() if cfg is None else cfg
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from keys(value, f"{prefix}{f.name}.")
            continue
        rule = rule_of(cls, f)
        allowed = rule.allowed if rule is not None else _kind(hints[f.name])
        comment = _comment(cls, f.name)
        yield Key(f"{prefix}{f.name}", value, allowed, comment)


def _kind(hint: object) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(map(str, args))
    if args and type(None) in args:  # Optional: the inner kind, or none
        inner = [a for a in args if a is not type(None)]
        return f"{_kind(inner[0]) if len(inner) == 1 else ' | '.join(map(_name, inner))} or none"
    return _name(hint)


def _name(hint: object) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _comment(cls: type, name: str) -> str:
    for owner in cls.__mro__:  # the field's own class first, then where it was declared
        if dataclasses.is_dataclass(owner) and name in {f.name for f in dataclasses.fields(owner)}:
            found = get_field_docstring(owner, name, ())
            if found:
                return " ".join(found.split())
    return ""


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()  # as YAML writes it
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_shown, value)) + "]"
    if isinstance(value, str):
        return value or '""'
    return str(value)


def render(width: int = WIDTH) -> str:
    """The key list under ``advgame train --help``."""
    from algorithms.config import DEFAULT_ALGORITHM

    intro = (
        "run config keys (a YAML file's nested keys, or key=value after the flags): key = default, "
        "then the values allowed and what it does. Each value is checked when the config loads. The "
        f"algorithm.* keys are the chosen algorithm's own (shown: {DEFAULT_ALGORITHM}'s); another "
        "algorithm's knob is an error naming it."
    )
    lines = [*textwrap.wrap(intro, width), ""]
    for k in keys():
        head = f"  {k.key} = {_shown(k.default)}"
        text = "; ".join(part for part in (k.allowed, k.comment) if part)
        lines += textwrap.wrap(f"{head}  ({text})", width, subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)
