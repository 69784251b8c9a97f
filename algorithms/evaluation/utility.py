"""Utility: what safety training costs. Instruction following, scored programmatically and offline,
and the helpfulness win rate against a reference model, judged pairwise.

    from algorithms.evaluation.utility import instruction_following, win_rate
    result = instruction_following(backend_or_policy)          # the bundled 322-prompt suite
    print(result.prompt_strict, result.instruction_loose)
    wins = win_rate(backend, reference_backend, judge)         # the held-out benign seeds
    print(wins, wins.length_difference, wins.length_controlled)

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

Win rate: both models answer each benign request greedily; the judge (any judge of the project:
``RuleJudge`` offline, an ``LLMJudge`` over the bundled model or a served one) compares the two
answers under the compliance (helpfulness) rubric in both presentation orders, which cancels its
position bias; a tie counts half, an item the judge fails on in either order is counted apart and
never scored. Beside the win rate: the mean length of each side's answers (characters, and
tokens where the backends report them) and a length-controlled win rate (see
``length_controlled``: a logistic regression on the length difference read at zero difference,
AlpacaEval 2's idea, fitted with numpy alone).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advgame_env import (
    InstructionPrompt,
    Judge,
    Label,
    PairItem,
    Rubric,
    Seed,
    bundled_instruction_prompts,
    bundled_seeds,
    load_instruction_prompts,
)
from advgame_env.metrics import Z_95, Rate, rate, wilson
from advgame_env.protocol import Generation, GenerationBackend
from agents.policy import Policy
from algorithms.evaluation.progress import OnItem, items_done, progress

if TYPE_CHECKING:  # for annotations only: the harness is an optional extra, loaded where used
    from algorithms.evaluation.harness import HarnessBackend, HarnessScore

Answerer = GenerationBackend | Policy  # what answers the prompts: a backend, or a Policy (adapter, prefill)
Answer = str | Generation  # a given answer text, or a generation (its .token_ids give its length)

EXTRA = "utility"
NEEDS_PUNKT = ("length_constraints:number_sentences", "change_case:capital_word_frequency")


def _registry() -> Mapping[str, type]:
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

    def as_dict(self) -> dict[str, object]:
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


def _greedy_policy(model: Answerer, max_tokens: int) -> Policy:
    """A greedy policy over ``model``: a ``Policy`` (its adapter and prefill kept) or a bare backend."""
    if isinstance(model, Policy):
        return replace(model, temperature=0.0, top_p=1.0, max_tokens=max_tokens)
    return Policy(model, max_tokens=max_tokens, temperature=0.0)


def instruction_following(
    model: Answerer,
    prompts: Sequence[InstructionPrompt] | str | Path | None = None,
    *,
    max_tokens: int = 512,
    batch: int = 16,
    on_item: OnItem | None = None,
) -> InstructionFollowing:
    """Answer each prompt greedily with ``model`` (a generation backend or a ``Policy``) and score it.

    ``prompts``: the bundled suite by default, or prompts, or the path of an IFEval-format JSONL
    file; ``batch`` prompts go to the backend per call (16, the HF backend's own generate batch,
    so progress moves every 16 answers at no cost in throughput there). An answer cut at
    ``max_tokens`` is scored as it is (its ``finish_reason`` says "length"). ``on_item(done,
    total)`` after each scored answer; default: a progress bar on stderr.
    """
    if prompts is None:
        prompts = bundled_instruction_prompts()
    elif isinstance(prompts, str | Path):
        prompts = load_instruction_prompts(prompts)
    prompts = list(prompts)
    check_prompts(prompts)  # before any generation: a bad file fails fast
    policy = _greedy_policy(model, max_tokens)
    scored = []
    with items_done(len(prompts), "instruction following (answer, check)", on_item) as advance:
        for start in range(0, len(prompts), batch):
            part = prompts[start : start + batch]
            for prompt, (answer,) in zip(part, policy.sample([p.prompt for p in part], 1), strict=True):
                scored.append(score_response(prompt, answer.text, answer.finish_reason))
                advance(1)
    return summarise(scored)


# ----------------------------------------------------------------------------- helpfulness win rate


@dataclass(frozen=True)
class PairedItem:
    """One benign request, the model's and the reference's answers, and the judge's verdicts.

    ``forward`` and ``backward`` are the judge's (model, reference) scores with the model's answer
    shown first and second; None where the judge failed on that order. ``preference`` is the
    model's outcome averaged over the two orders (1 preferred, 0.5 tie, 0 not), None when either
    order failed: a one-order verdict would bring back the position bias both orders cancel.
    """

    key: str
    prompt: str
    response: str
    reference: str
    forward: tuple[float, float] | None
    backward: tuple[float, float] | None
    response_tokens: int | None = None
    reference_tokens: int | None = None

    @property
    def preference(self) -> float | None:
        if self.forward is None or self.backward is None:
            return None
        return (_outcome(self.forward) + _outcome(self.backward)) / 2


def _outcome(scores: tuple[float, float]) -> float:
    model, reference = scores
    return 1.0 if model > reference else 0.0 if model < reference else 0.5


@dataclass(frozen=True)
class WinRate:
    """The model's helpfulness win rate against a reference model on benign requests.

    ``value``: mean preference over the items judged in both orders (a tie counts half), with the
    95 % Wilson interval of that mean (conservative: scores in [0, 1] vary at most p (1 - p)).
    ``wins``/``ties``/``losses``: items whose preference is above, at or below one half.
    ``judge_failures``: items left out because the judge failed in either order (never scored).
    ``position_a``: share of the decisive one-order verdicts that chose the first answer shown
    (0.5: no position bias; both orders are judged, so the win rate does not carry it).
    Lengths are mean characters (and generated tokens, where the backends report them) of the
    judged items' answers. ``length_controlled``: the win rate at zero length difference, read
    from a logistic regression of the preference on tanh(length difference / its standard
    deviation) as AlpacaEval 2 does (intercept only; None where it cannot be fitted), with a
    95 % Wald interval.
    """

    value: float
    low: float
    high: float
    n: int
    wins: int
    ties: int
    losses: int
    judge_failures: int
    position_a: float | None
    chars: float
    reference_chars: float
    tokens: float | None
    reference_tokens: float | None
    length_controlled: float | None
    length_controlled_low: float | None
    length_controlled_high: float | None
    items: list[PairedItem]

    @property
    def length_difference(self) -> float:
        """Mean characters of the model's answers minus the reference's (positive: the model is longer)."""
        return self.chars - self.reference_chars

    def __str__(self) -> str:
        if not self.n:
            return f"n/a (0 items judged, {self.judge_failures} judge failures)"
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"

    def as_dict(self, items: bool = True) -> dict[str, object]:
        """JSON-ready: every field, the length difference, and (``items=True``) every item."""
        out = {k: v for k, v in asdict(self).items() if k != "items"} | {"length_difference": self.length_difference}
        return out | ({"items": [asdict(i) | {"preference": i.preference} for i in self.items]} if items else {})


def compare_answers(
    prompts: Sequence[str],
    responses: Sequence[Answer],
    references: Sequence[Answer],
    judge: Judge,
    *,
    keys: Sequence[str] | None = None,
    rubric: Rubric = Rubric.COMPLIANCE,
) -> WinRate:
    """Judge given answers pairwise against the reference's: the offline half of ``win_rate``.

    ``responses`` and ``references``: one per prompt, texts or generations (anything with ``.text``;
    its ``.token_ids`` give the token lengths). Every pair is judged in both orders in one batched
    ``judge.compare`` call (the judge's own ``both_orders`` is not needed, and would judge each
    order twice). A judge failure on either order leaves that item out, counted apart.
    """
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses, {len(references)} references")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(prompts))]
    texts, ref_texts = [_text(r) for r in responses], [_text(r) for r in references]
    pairs = [PairItem(rubric, p, a, b) for p, a, b in zip(prompts, texts, ref_texts, strict=True)]
    swapped = [PairItem(rubric, p, b, a) for p, a, b in zip(prompts, texts, ref_texts, strict=True)]
    verdicts = list(judge.compare([*pairs, *swapped])) if pairs else []
    if len(verdicts) != 2 * len(pairs):
        raise ValueError(f"the judge returned {len(verdicts)} verdicts for {2 * len(pairs)} pairs")
    forward, backward = verdicts[: len(pairs)], verdicts[len(pairs) :]
    items = [
        PairedItem(
            key,
            prompt,
            text,
            ref,
            None if f is None else (float(f[0]), float(f[1])),
            None if b is None else (float(b[1]), float(b[0])),  # back to (model, reference)
            _tokens(response),
            _tokens(reference),
        )
        for key, prompt, text, ref, f, b, response, reference in zip(
            keys, prompts, texts, ref_texts, forward, backward, responses, references, strict=True
        )
    ]
    return summarise_pairs(items)


def _text(answer: Answer) -> str:
    return answer if isinstance(answer, str) else str(answer.text)


def _tokens(answer: Answer) -> int | None:
    ids = getattr(answer, "token_ids", None)
    return len(ids) if ids else None


def summarise_pairs(items: Sequence[PairedItem]) -> WinRate:
    """The win rate, its interval, the counts, the position bias and the lengths of judged items."""
    judged = [i for i in items if i.preference is not None]
    prefs = [float(i.preference) for i in judged if i.preference is not None]
    n = len(prefs)
    value = sum(prefs) / n if n else math.nan
    low, high = wilson(value, n) if n else (math.nan, math.nan)
    # position A (the first answer shown) is the model's in the forward order, the reference's backward
    firsts = [1.0 - _outcome(i.forward) for i in judged if i.forward is not None and _outcome(i.forward) != 0.5]
    firsts += [_outcome(i.backward) for i in judged if i.backward is not None and _outcome(i.backward) != 0.5]
    chars = [len(i.response) for i in judged]
    ref_chars = [len(i.reference) for i in judged]
    tokens = [i.response_tokens for i in judged]
    ref_tokens = [i.reference_tokens for i in judged]
    lc = length_controlled(prefs, [c - r for c, r in zip(chars, ref_chars, strict=True)])
    return WinRate(
        value=value,
        low=low,
        high=high,
        n=n,
        wins=sum(p > 0.5 for p in prefs),
        ties=sum(p == 0.5 for p in prefs),
        losses=sum(p < 0.5 for p in prefs),
        judge_failures=len(items) - n,
        position_a=1.0 - sum(firsts) / len(firsts) if firsts else None,
        chars=_mean(chars),
        reference_chars=_mean(ref_chars),
        tokens=_mean(tokens) if tokens and None not in tokens else None,
        reference_tokens=_mean(ref_tokens) if ref_tokens and None not in ref_tokens else None,
        length_controlled=None if lc is None else lc[0],
        length_controlled_low=None if lc is None else lc[1],
        length_controlled_high=None if lc is None else lc[2],
        items=list(items),
    )


def _mean(values: Sequence[float | None]) -> float:
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else math.nan


def length_controlled(
    preferences: Sequence[float], length_differences: Sequence[float], *, ridge: float = 1e-3
) -> tuple[float, float, float] | None:
    """(win rate at zero length difference, 95 % low, high), or None where it cannot be read.

    A logistic regression of the preference (in [0, 1], ties as halves: a fractional-response
    fit) on an intercept and x = tanh(d / sd(d)), d the length difference, the length feature of
    AlpacaEval 2's length-controlled win rate; read at x = 0, sigmoid(intercept). Fitted by
    Newton's method with a small ridge penalty (finite at a clean sweep); the interval is Wald's
    on the intercept, with the binomial variance (conservative where there are ties; wide, up to
    [0, 1], where the fit separates, e.g. when the model wins every item). None for
    fewer than two items, or when every difference is the same non-zero number (then the
    length effect and the intercept cannot be told apart).
    """
    y = np.asarray(preferences, dtype=float)
    d = np.asarray(length_differences, dtype=float)
    if len(y) != len(d):
        raise ValueError(f"{len(y)} preferences but {len(d)} length differences")
    if len(y) < 2:
        return None
    spread = float(d.std())
    if spread == 0 and np.any(d != 0):
        return None
    x = np.tanh(d / spread) if spread > 0 else np.zeros_like(d)
    features = np.column_stack([np.ones_like(x), x])
    penalty = ridge * np.eye(2)
    beta = np.zeros(2)
    for _ in range(100):
        mu = 1 / (1 + np.exp(-features @ beta))
        gradient = features.T @ (y - mu) - penalty @ beta
        hessian = features.T @ (features * (mu * (1 - mu))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    mu = 1 / (1 + np.exp(-features @ beta))
    hessian = features.T @ (features * (mu * (1 - mu))[:, None]) + penalty
    se = float(np.sqrt(np.linalg.inv(hessian)[0, 0]))

    def sigmoid(v: float) -> float:
        return float(1 / (1 + math.exp(-v)))

    return sigmoid(beta[0]), sigmoid(beta[0] - Z_95 * se), sigmoid(beta[0] + Z_95 * se)


def benign_prompts(prompts: Sequence[Seed] | Sequence[str] | str | Path | None = None) -> list[Seed]:
    """The requests a win rate is measured on: the held-out benign seeds by default, or the
    benign seeds of given seeds or of a suite (``advgame_env.suites.load_suite``: a file, or
    FORMAT:file), or plain prompts. Harmful seeds are left out: on a harmful request the better
    answer is a refusal, which is the safety figures' question, not helpfulness."""
    from advgame_env.suites import load_suite

    if prompts is None:
        return bundled_seeds("heldout", Label.BENIGN)
    if isinstance(prompts, str | Path):
        prompts = load_suite(str(prompts))
    seeds = [p if isinstance(p, Seed) else Seed(str(i), str(p), Label.BENIGN) for i, p in enumerate(prompts)]
    return [s for s in seeds if s.label is Label.BENIGN]


def win_rate(
    model: Answerer,
    reference: Answerer,
    judge: Judge,
    prompts: Sequence[Seed] | Sequence[str] | str | Path | None = None,
    *,
    max_tokens: int = 256,
    batch: int = 16,
    rubric: Rubric = Rubric.COMPLIANCE,
) -> WinRate:
    """``model``'s greedy answers against ``reference``'s (each a backend or a ``Policy``), judged
    pairwise in both orders by ``judge`` (any judge of the project) under ``rubric``.

    ``prompts``: see ``benign_prompts`` (default: the held-out benign seeds).
    """
    seeds = benign_prompts(prompts)
    if not seeds:
        raise ValueError("no benign request to measure a win rate on")
    texts = [s.prompt for s in seeds]
    responses, references = (
        _answers(m, texts, max_tokens, batch, who) for m, who in ((model, "model"), (reference, "reference"))
    )
    return compare_answers(texts, responses, references, judge, keys=[s.id for s in seeds], rubric=rubric)


def _answers(model: Answerer, prompts: Sequence[str], max_tokens: int, batch: int, who: str) -> list[Answer]:
    policy = _greedy_policy(model, max_tokens)
    out: list[Answer] = []
    with progress(len(prompts), f"win rate: the {who} answering") as bar:
        for start in range(0, len(prompts), batch):
            for (answer,) in policy.sample(prompts[start : start + batch], 1):
                out.append(answer)
                bar.update(1)
    return out


# ----------------------------------------------------------------------------- figures for reports


@dataclass(frozen=True)
class Figure:
    """One utility figure of a report: a value, its 95 % interval (nan where there is none), the
    items behind it, and what goes with it (``detail``: counts, lengths, the reference)."""

    value: float
    low: float = math.nan
    high: float = math.nan
    n: int | None = None
    share: bool = True  # a share in [0, 1], shown in %; otherwise shown as a number
    detail: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.n == 0 or math.isnan(self.value):
            return "n/a" + (f" ({self.n} items)" if self.n is not None else "")
        shown = (lambda v: f"{100 * v:.1f}") if self.share else (lambda v: f"{v:.4g}")
        text = shown(self.value) + ("%" if self.share else "")
        if not math.isnan(self.low):
            text += f" [{shown(self.low)}, {shown(self.high)}]"
        notes = [f"n={self.n}"] if self.n is not None else []
        if self.detail.get("judge_failures"):
            notes.append(f"{self.detail['judge_failures']} judge failures")
        return text + (f" ({', '.join(notes)})" if notes else "")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (nan written as null)."""
        out = {"value": self.value, "low": self.low, "high": self.high, "n": self.n} | self.detail
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def rate_figure(r: Rate) -> Figure:
    return Figure(r.value, r.low, r.high, r.total, detail={"successes": r.successes})


def instruction_figures(result: InstructionFollowing) -> dict[str, Figure]:
    """IFEval's four accuracies under report names ("instruction following (prompt, strict)", ...)."""
    return {name: rate_figure(r) for name, r in result.summary().items()}


WIN_RATE, LC_WIN_RATE, LENGTH_DIFFERENCE = "win rate", "win rate (length-controlled)", "length vs reference (chars)"


def win_rate_figures(result: WinRate, reference: str = "") -> dict[str, Figure]:
    """The win rate (with its counts, judge failures, position bias and lengths), the
    length-controlled win rate, and the length difference, under report names."""
    detail = {k: v for k, v in result.as_dict(items=False).items() if k not in ("value", "low", "high", "n")}
    detail = {"reference": reference, **detail} if reference else detail
    lc = result.length_controlled
    return {
        WIN_RATE: Figure(result.value, result.low, result.high, result.n, detail=detail),
        LC_WIN_RATE: Figure(
            math.nan if lc is None else lc,
            math.nan if result.length_controlled_low is None else result.length_controlled_low,
            math.nan if result.length_controlled_high is None else result.length_controlled_high,
            result.n,
        ),
        LENGTH_DIFFERENCE: Figure(
            result.length_difference,
            n=result.n,
            share=False,
            detail={"chars": result.chars, "reference_chars": result.reference_chars},
        ),
    }


def harness_figures(scores: Sequence[HarnessScore]) -> dict[str, Figure]:
    """lm-evaluation-harness scores (``algorithms.evaluation.harness.HarnessScore``) as "lm-eval TASK METRIC"."""
    return {
        f"lm-eval {s.name}": Figure(s.value, s.low, s.high, s.n, share=False, detail={"stderr": s.stderr})
        for s in scores
    }


@dataclass(frozen=True)
class UtilityPlan:
    """What ``algorithms.evaluation.evaluate.evaluate_models`` measures of utility beside safety.

    ``instruction_prompts``: instruction following on these prompts (None: not measured).
    ``reference``: the helpfulness win rate against this model (None: not measured), on the
    suite's benign requests, judged by the evaluation's judge. ``lm_eval``: harness tasks (names
    or task YAML paths), ``lm_eval_limit`` documents each. ``instruction_tokens``: the answer
    length of instruction following (None: the evaluation's own ``max_tokens``); a budget apart
    because IFEval's prompts ask for paragraphs, sections and postscripts that a safety
    evaluation's short answers (the demo's 64 tokens) cut off. ``lm_eval_backend``: the
    harness's model type, ``hf`` or ``vllm``.
    """

    instruction_prompts: Sequence[InstructionPrompt] | None = None
    reference: str | None = None
    lm_eval: Sequence[str] = ()
    lm_eval_limit: int | None = None
    instruction_tokens: int | None = None
    lm_eval_backend: HarnessBackend = "hf"

    @property
    def empty(self) -> bool:
        return self.instruction_prompts is None and self.reference is None and not self.lm_eval


def plan_from_options(
    instruction_following: int | None = None,
    reference: str | None = None,
    lm_eval: str | None = None,
    lm_eval_limit: int | None = None,
    instruction_tokens: int | None = None,
    lm_eval_backend: HarnessBackend = "hf",
) -> UtilityPlan:
    """The plan of ``advgame eval``'s utility options, checked before anything is generated.

    ``instruction_following``: None (not measured), 0 (the bundled suite) or N (its first N
    prompts); ``reference``: the win rate's reference model; ``lm_eval``: comma-separated task
    names or YAML paths; ``instruction_tokens``: the instruction-following answer length (None:
    the evaluation's); ``lm_eval_backend``: the harness's model type (hf, or vllm where installed).
    Raises ValueError, FileNotFoundError, or ImportError (a missing extra).
    """
    prompts = None
    if instruction_following is not None:
        if instruction_following < 0:
            raise ValueError(f"--instruction-following takes a number of prompts, not {instruction_following}")
        _registry()  # the utility extra is installed
        prompts = bundled_instruction_prompts()
        prompts = prompts[:instruction_following] if instruction_following else prompts
    tasks = tuple(t.strip() for t in (lm_eval or "").split(",") if t.strip())
    if lm_eval is not None and not tasks:
        raise ValueError("--lm-eval takes task names or task YAML paths, comma separated")
    if tasks:
        from algorithms.evaluation.harness import EXTRA as HARNESS_EXTRA
        from algorithms.evaluation.harness import available, vllm_available

        if not available():
            raise ImportError(f"--lm-eval needs lm-evaluation-harness: pip install 'advgame[{HARNESS_EXTRA}]'")
        if lm_eval_backend == "vllm" and not vllm_available():
            raise ImportError("--lm-eval with --backend vllm needs vLLM installed (or use --backend hf)")
        for task in tasks:
            if task.endswith((".yaml", ".yml")) and not Path(task).is_file():
                raise FileNotFoundError(f"lm-eval task file {task} does not exist")
    if lm_eval_limit is not None and lm_eval_limit < 1:
        raise ValueError(f"--lm-eval-limit must be at least 1, not {lm_eval_limit}")
    if instruction_tokens is not None and instruction_tokens < 1:
        raise ValueError(f"--instruction-tokens must be at least 1, not {instruction_tokens}")
    return UtilityPlan(prompts, reference, tasks, lm_eval_limit, instruction_tokens, lm_eval_backend)
