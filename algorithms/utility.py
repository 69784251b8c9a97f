"""Utility: what safety training costs. Instruction following, scored programmatically and offline.

    from algorithms.utility import instruction_following
    result = instruction_following(backend_or_policy)          # the bundled 322-prompt suite
    print(result.prompt_strict, result.instruction_loose)

The model answers every prompt greedily (temperature 0) through the generation protocol; each
answer is scored by IFEval's checkers as ``if-verifiable`` ships them (a maintained copy of Google's
IFEval code; the ``utility`` extra), with IFEval's definitions:

  prompt-level strict        share of prompts whose every instruction is followed by the answer as is
  instruction-level strict   share of all instructions (over all prompts) followed by the answer as is
  ... loose                  the same, where an instruction counts as followed when any of IFEval's
                             eight loosened variants of the answer follows it (first and/or last line
                             removed, markdown asterisks removed)

each with its 95 % Wilson interval (``advgame_env.metrics.rate``), per instruction type too. An empty
answer follows nothing. A ``<think>...</think>`` block at the start is removed before scoring (as the
library does). Language detection (``langdetect``) is seeded, so the scores are deterministic.

Which prompts: ``advgame_env.bundled_instruction_prompts()`` by default, or any IFEval-format file
(``advgame_env.load_instruction_prompts``), Google's own ``input_data.jsonl`` included. Two IFEval types
need NLTK's punkt data, a download at run time, and are not in the bundled suite:
``length_constraints:number_sentences`` and ``change_case:capital_word_frequency``; a file that uses
them scores only where that data is installed (``nltk.download("punkt_tab")`` ahead of time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from advgame_env import InstructionPrompt, bundled_instruction_prompts, load_instruction_prompts
from advgame_env.metrics import Rate, rate
from agents.policy import Policy

EXTRA = "utility"
NEEDS_PUNKT = ("length_constraints:number_sentences", "change_case:capital_word_frequency")


def _registry() -> Mapping[str, Any]:
    """IFEval's checker classes by instruction id (if-verifiable), with language detection seeded."""
    try:
        import langdetect
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError:
        raise ImportError(
            f"instruction-following scoring needs if-verifiable: pip install 'advgame[{EXTRA}]'"
        ) from None
    langdetect.DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes detection repeatable
    return INSTRUCTION_DICT


def check_prompts(prompts: Sequence[InstructionPrompt]) -> None:
    """Every instruction known to the checkers and given exactly its checker's arguments.

    The checkers fill a missing argument with a random value, and if-verifiable skips an unknown id:
    either would make a score silently mean something else, so both are errors here.
    """
    registry = _registry()
    for p in prompts:
        for instruction, kwargs in zip(p.instruction_ids, p.kwargs, strict=True):
            if instruction not in registry:
                raise ValueError(f"prompt {p.key}: unknown instruction id {instruction!r}")
            expected = set(registry[instruction](instruction).get_instruction_args_keys())
            if set(kwargs) != expected:
                raise ValueError(
                    f"prompt {p.key}: {instruction} takes arguments {sorted(expected)}, got {sorted(kwargs)}"
                )


@dataclass(frozen=True)
class FollowedItem:
    """One prompt, the model's answer, and each instruction's verdict (in ``instruction_ids`` order)."""

    key: str
    prompt: str
    response: str
    finish_reason: str
    instruction_ids: tuple[str, ...]
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)


@dataclass(frozen=True)
class InstructionFollowing:
    """The four IFEval accuracies with 95 % Wilson intervals, per instruction type, and every item."""

    prompt_strict: Rate
    prompt_loose: Rate
    instruction_strict: Rate
    instruction_loose: Rate
    by_instruction: dict[str, dict[str, Rate]]  # instruction id -> {"strict": Rate, "loose": Rate}
    items: list[FollowedItem]

    def summary(self) -> dict[str, Rate]:
        """The headline rates under report-style names."""
        return {
            "instruction following (prompt, strict)": self.prompt_strict,
            "instruction following (prompt, loose)": self.prompt_loose,
            "instruction following (instruction, strict)": self.instruction_strict,
            "instruction following (instruction, loose)": self.instruction_loose,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the rates as ``Rate.as_dict`` writes them, and the items."""
        return {
            "prompt_strict": self.prompt_strict.as_dict(),
            "prompt_loose": self.prompt_loose.as_dict(),
            "instruction_strict": self.instruction_strict.as_dict(),
            "instruction_loose": self.instruction_loose.as_dict(),
            "by_instruction": {
                name: {mode: r.as_dict() for mode, r in rates.items()} for name, rates in self.by_instruction.items()
            },
            "items": [asdict(i) for i in self.items],
        }


def score_response(prompt: InstructionPrompt, response: str, finish_reason: str = "stop") -> FollowedItem:
    """IFEval's strict and loose verdict on each instruction of ``prompt`` for this answer."""
    from if_verifiable.common import evaluate_instructions

    registry = _registry()
    results, _ = evaluate_instructions(
        response=response,
        instruction_id_list=list(prompt.instruction_ids),
        kwargs_list=[dict(k) for k in prompt.kwargs],
        prompt=prompt.prompt,
        instruction_registry=registry,
    )
    n = len(prompt.instruction_ids)
    if not results:  # an empty answer (or one that is all hidden thinking): nothing is followed
        strict, loose = (False,) * n, (False,) * n
    else:
        if [r.instruction_id for r in results] != list(prompt.instruction_ids):
            raise ValueError(f"prompt {prompt.key}: the checkers skipped an instruction (run check_prompts first)")
        strict = tuple(bool(r.strict_pass) for r in results)
        loose = tuple(bool(r.loose_pass) for r in results)
    return FollowedItem(prompt.key, prompt.prompt, response, finish_reason, prompt.instruction_ids, strict, loose)


def summarise(items: Sequence[FollowedItem]) -> InstructionFollowing:
    """The accuracies of scored items (prompt level: every instruction of a prompt followed)."""
    flat = [
        (i, s, lo) for item in items for i, s, lo in zip(item.instruction_ids, item.strict, item.loose, strict=True)
    ]
    by_instruction: dict[str, dict[str, Rate]] = {}
    for name in sorted({i for i, _, _ in flat}):
        group = [(s, lo) for i, s, lo in flat if i == name]
        by_instruction[name] = {
            "strict": rate(sum(s for s, _ in group), len(group)),
            "loose": rate(sum(lo for _, lo in group), len(group)),
        }
    return InstructionFollowing(
        prompt_strict=rate(sum(i.prompt_strict for i in items), len(items)),
        prompt_loose=rate(sum(i.prompt_loose for i in items), len(items)),
        instruction_strict=rate(sum(s for _, s, _ in flat), len(flat)),
        instruction_loose=rate(sum(lo for _, _, lo in flat), len(flat)),
        by_instruction=by_instruction,
        items=list(items),
    )


def score_responses(
    prompts: Sequence[InstructionPrompt], responses: Sequence[str], finish_reasons: Sequence[str] | None = None
) -> InstructionFollowing:
    """Score given answers (one per prompt, in order): the offline half of ``instruction_following``."""
    if len(responses) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    reasons = list(finish_reasons) if finish_reasons is not None else ["stop"] * len(prompts)
    check_prompts(prompts)
    return summarise([score_response(p, r, f) for p, r, f in zip(prompts, responses, reasons, strict=True)])


def _greedy_policy(model: Any, max_tokens: int) -> Policy:
    """A greedy policy over ``model``: a ``Policy`` (its adapter and prefill kept) or a bare backend."""
    if isinstance(model, Policy):
        return replace(model, temperature=0.0, top_p=1.0, max_tokens=max_tokens)
    return Policy(model, max_tokens=max_tokens, temperature=0.0)


def instruction_following(
    model: Any,
    prompts: Sequence[InstructionPrompt] | str | Path | None = None,
    *,
    max_tokens: int = 512,
    batch: int = 64,
) -> InstructionFollowing:
    """Answer each prompt greedily with ``model`` (a generation backend or a ``Policy``) and score it.

    ``prompts``: the bundled suite by default, or prompts, or the path of an IFEval-format JSONL
    file; ``batch`` prompts go to the backend per call. An answer cut at ``max_tokens`` is scored
    as it is (its ``finish_reason`` says "length").
    """
    if prompts is None:
        prompts = bundled_instruction_prompts()
    elif isinstance(prompts, str | Path):
        prompts = load_instruction_prompts(prompts)
    prompts = list(prompts)
    check_prompts(prompts)  # before any generation: a bad file fails fast
    policy = _greedy_policy(model, max_tokens)
    responses, reasons = [], []
    for start in range(0, len(prompts), batch):
        part = prompts[start : start + batch]
        for (answer,) in policy.sample([p.prompt for p in part], 1):
            responses.append(answer.text)
            reasons.append(answer.finish_reason)
    return summarise([score_response(p, r, f) for p, r, f in zip(prompts, responses, reasons, strict=True)])
