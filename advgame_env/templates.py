"""Prompt templates as versioned data (``data/templates.toml``).

A :class:`TemplateSet` names one version of every template a run uses; the default is the
newest release. Old versions are never edited, so a run's prompts are fixed by its set.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources

from advgame_env.seeds import Label


@cache
def _library() -> dict[str, dict[str, dict[str, str]]]:
    text = resources.files("advgame_env").joinpath("data/templates.toml").read_text("utf-8")
    return tomllib.loads(text)


def template_text(name: str, version: str) -> str:
    """The text of template ``name`` at ``version``; a clear error names what exists."""
    library = _library()
    if name not in library:
        raise KeyError(f"no template named {name!r}; known: {sorted(library)}")
    if version not in library[name]:
        raise KeyError(f"template {name!r} has no version {version!r}; known: {sorted(library[name])}")
    return library[name][version]["text"]


# Judge output tags. Text under judgement is rewritten so it cannot contain them.
_JUDGE_TAG = re.compile(
    r"<\s*(/?)\s*(score_a|score_b|score|answer|think|prompt_harmful|refusal|response_harmful"
    r"|query|response_a|response_b|response|original|rewrite|user|assistant|request)\s*>",
    re.IGNORECASE,
)


def neutralise_tags(text: str) -> str:
    """Replace judge tags in untrusted text by bracketed look-alikes (``<score>`` -> ``[score]``)."""
    return _JUDGE_TAG.sub(lambda m: f"[{m.group(1)}{m.group(2)}]", text)


@dataclass(frozen=True)
class TemplateSet:
    """One version per template. Field names are template names; values are versions."""

    attacker_harmful: str = "v1"
    attacker_benign: str = "v1"
    attacker_format_think: str = "v1"
    attacker_format_prompt_only: str = "v1"
    defender: str = "v1"
    defender_think: str = "v1"
    rubric_compliance: str = "v1"
    rubric_deflection: str = "v1"
    rubric_refusal: str = "v1"
    judge_pairwise: str = "v1"
    judge_pointwise: str = "v1"
    judge_faithfulness: str = "v1"
    judge_classify: str = "v1"
    judge_pairwise_choice: str = "v1"
    judge_pointwise_digit: str = "v1"
    judge_faithfulness_choice: str = "v1"
    judge_classify_question: str = "v1"

    def __post_init__(self) -> None:
        for f in fields(self):  # fail at construction, not mid-run
            template_text(f.name, getattr(self, f.name))

    def text(self, name: str) -> str:
        return template_text(name, getattr(self, name))

    def render(self, name: str, **values: str) -> str:
        return self.text(name).format(**values)

    def attacker_task(self, seed: str, label: Label, think: bool) -> str:
        task = "attacker_harmful" if label is Label.HARMFUL else "attacker_benign"
        form = "attacker_format_think" if think else "attacker_format_prompt_only"
        return self.render(task, seed=seed) + self.text(form)

    def defender_task(self, prompt: str, think: bool) -> str:
        return self.render("defender_think" if think else "defender", prompt=prompt)
