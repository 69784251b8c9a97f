"""Prompt templates as versioned data (``data/templates.toml``).

A :class:`TemplateSet` names one version of every template a run uses; the default is the
newest release. Old versions are never edited, so a run's prompts are fixed by its set.
"""

from __future__ import annotations

import html
import re
import tomllib
import unicodedata
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources

from advgame_env.parsing import valid_unicode
from advgame_env.seeds import Label


@cache
def _library() -> dict[str, dict[str, dict[str, str | bool]]]:
    text = resources.files("advgame_env").joinpath("data/templates.toml").read_text("utf-8")
    return tomllib.loads(text)


def template_text(name: str, version: str) -> str:
    """The text of template ``name`` at ``version``; a clear error names what exists."""
    library = _library()
    if name not in library:
        raise KeyError(f"no template named {name!r}; known: {sorted(library)}")
    if version not in library[name]:
        raise KeyError(f"template {name!r} has no version {version!r}; known: {sorted(library[name])}")
    text = library[name][version]["text"]
    assert isinstance(text, str)
    return text


def template_field(name: str, version: str, key: str, default: str | bool) -> str | bool:
    """An extra field of a template version (``tag``, ``strict``), ``default`` when absent."""
    template_text(name, version)  # the same clear error for an unknown name or version
    return _library()[name][version].get(key, default)


# ----------------------------------------------------------------------------- untrusted text
# Text under judgement (players' outputs, target answers, seeds) is cleaned, then every judge
# tag in it is rewritten, so that no reader -- literal, normalising, or one that takes
# bracket look-alikes for brackets -- finds a verdict tag in it.


@cache
def _drop_table() -> dict[int, None]:
    """Format (Cf: zero-width characters, soft hyphen, BOM, bidi controls, tag characters) and
    control (Cc) characters, except tab and newline: invisible, they only hide a tag."""
    # Cf and Cc characters lie in planes 0 and 1 and in the tag block of plane 14 only.
    candidates = [*range(0x20000), *range(0xE0000, 0xE1000)]
    return {cp: None for cp in candidates if unicodedata.category(chr(cp)) in ("Cf", "Cc") and chr(cp) not in "\t\n"}


_PASSES = 4  # rounds of decoding: double or triple encodings are undone; deeper ones are broken


def clean_untrusted(text: str) -> str:
    """Untrusted text as a normalising reader would read it, and a fixed point of that reading.

    One round: NFKC (fullwidth and small-form look-alikes become ASCII: ``＜`` -> ``<``),
    drop format and control characters, decode HTML entities (``&lt;`` -> ``<``). Decoding
    can uncover more (``&#xFF1C;``, ``&amp;lt;``), so rounds repeat until nothing changes.
    Entities still decoding after ``_PASSES`` rounds are nested on purpose: every ``&`` is
    then followed by a blank, which no decoder reads as an entity. Each round is linear. Lone
    surrogates become U+FFFD first (``valid_unicode``), and decoding cannot make new ones
    (``html.unescape`` turns ``&#xD800;`` into U+FFFD).
    """
    text = valid_unicode(text)
    for _ in range(_PASSES):
        cleaned = html.unescape(unicodedata.normalize("NFKC", text).translate(_drop_table()))
        if cleaned == text:
            return text
        text = cleaned
    if html.unescape(unicodedata.normalize("NFKC", text).translate(_drop_table())) == text:
        return text
    return unicodedata.normalize("NFKC", text.replace("&", "& ")).translate(_drop_table())


# Brackets that a reader might take for < and > (after NFKC, which already folds the
# fullwidth and small forms): single guillemets, angle brackets, ornaments, modifier and
# syllabics look-alikes. In a tag they are rewritten like the ASCII ones.
_OPEN, _CLOSE = "<\u2039\u2329\u3008\u27e8\u276e\u02c2\u1438\u300a", ">\u203a\u232a\u3009\u27e9\u276f\u02c3\u1433\u300b"
# Possessive blanks (``\s*+``): a blank run is never handed back and forth between the runs
# around the optional ``/``, which made ``<`` + n blanks cost n**2 steps (18.6 s at n = 16,000);
# the texts matched are the same, as blanks can only be blanks (tests/test_templates.py).
_JUDGE_TAG = re.compile(
    rf"[{_OPEN}]\s*+(/?)\s*+(score_a|score_b|score|answer|think|prompt_harmful|refusal|response_harmful"
    rf"|query|response_a|response_b|response|original|rewrite|user|assistant|request)\s*+[{_CLOSE}]",
    re.IGNORECASE,
)


def neutralise_tags(text: str) -> str:
    """Untrusted text with its judge tags defused: cleaned (``clean_untrusted``), then every
    judge tag, in ASCII or look-alike brackets, rewritten in square brackets
    (``<score>`` -> ``[score]``)."""
    return _JUDGE_TAG.sub(lambda m: f"[{m.group(1)}{m.group(2)}]", clean_untrusted(text))


@dataclass(frozen=True)
class TemplateSet:
    """One version per template. Field names are template names; values are versions."""

    attacker_system: str = "v1"  # the attacker's system message ("" in v1: none is sent)
    attacker_harmful: str = "v1"
    attacker_benign: str = "v1"
    attacker_format_think: str = "v1"
    attacker_format_prompt_only: str = "v1"
    defender: str = "v1"
    defender_think: str = "v1"
    think_prefill: str = "v1"  # assistant prefill of a hidden-reasoning turn ("" in v1)
    rubric_compliance: str = "v2"
    rubric_deflection: str = "v2"
    rubric_refusal: str = "v2"
    judge_pairwise: str = "v2"
    judge_pointwise: str = "v2"
    judge_faithfulness: str = "v2"  # v2: for harmful seeds only; v1: one template for both labels
    judge_faithfulness_benign: str = "v1"  # benign seeds, with the 15x length rule; "shared": judge_faithfulness
    judge_classify: str = "v1"
    judge_pairwise_choice: str = "v1"
    judge_pointwise_digit: str = "v1"
    judge_faithfulness_choice: str = "v1"
    judge_classify_question: str = "v1"

    def __post_init__(self) -> None:
        for f in fields(self):  # fail at construction, not mid-run
            template_text(f.name, getattr(self, f.name))

    @classmethod
    def self_redteam(cls) -> TemplateSet:
        """Self-RedTeam's own game: the revision task, its system message, the ``<answer>``
        format with the strict check, the paper's prefill, the R1-style defender and the
        tag-less no-CoT attacker (``srt1``); the judge templates stay ours."""
        srt = ["attacker_system", "attacker_harmful", "attacker_benign", "attacker_format_think"]
        srt += ["attacker_format_prompt_only", "defender_think", "think_prefill"]
        return cls(**dict.fromkeys(srt, "srt1"))

    def versions(self) -> dict[str, str]:
        """Template name -> version: what a run's exports record as its game format."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

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

    def examples(self, rubric: str, task: str) -> str:
        """The worked examples of rubric template ``rubric`` for ``task`` ("pairwise" or
        "pointwise"); "" for a rubric version without them."""
        examples = template_field(rubric, getattr(self, rubric), f"{task}_examples", "")
        assert isinstance(examples, str)
        return examples

    def faithfulness_template(self, label: Label) -> str:
        """The faithfulness check's template for a seed of ``label`` (AdvGame has one per label)."""
        if label is Label.BENIGN and self.text("judge_faithfulness_benign"):
            return "judge_faithfulness_benign"
        return "judge_faithfulness"

    def attacker_tag(self, think: bool) -> str:
        """The attacker's public tag: "prompt" (AdvGame), "answer" (Self-RedTeam), or "" for a
        format whose whole output is the prompt (Self-RedTeam's no-CoT attacker)."""
        name = "attacker_format_think" if think else "attacker_format_prompt_only"
        tag = template_field(name, getattr(self, name), "tag", "prompt")
        assert isinstance(tag, str)
        return tag

    def strict(self, name: str) -> bool:
        """Whether format ``name`` asks for non-empty reasoning and nothing after its closing tag."""
        return bool(template_field(name, getattr(self, name), "strict", False))

    @property
    def prefill(self) -> str:
        return self.text("think_prefill")
