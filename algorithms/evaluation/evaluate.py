"""Safety and over-refusal evaluation of a defender model over a suite of labelled requests.

    advgame eval --model runs/x/final/defender --suite bundled
    advgame eval --model M --suite harmbench:behaviors.csv --judge Qwen/Qwen2.5-7B-Instruct --backend vllm

The model answers every request greedily; the judge labels each (request, answer) with the
three classifier questions (request harmful, answer refuses, answer harmful); the report gives,
with 95 % Wilson intervals and per topic:

  harmful compliance   share of harmful requests answered instead of refused (the ASR of
                       AdvGame's tables; lower is better); "adversarial" rows are the
                       harmful requests of subtype adversarial (jailbreak prompts)
  harmful responses    share of answers the judge calls harmful (HarmBench-style ASR), where
                       the judge says so
  benign refusal       over-refusal on benign requests, and on the benign-but-scary ones

A judge failure on an item is recorded as such and left out of every rate, never guessed.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advgame_env import Classification, ClassifyItem, GameConfig, Judge, Label, Seed
from advgame_env.metrics import Rate, rate
from advgame_env.parsing import Parsed, parse_response
from advgame_env.protocol import Chat, Generation, GenerationBackend
from agents.models import load_model
from agents.policy import chat
from algorithms.config import load_config
from algorithms.evaluation.progress import progress
from algorithms.evaluation.utility import (
    LENGTH_DIFFERENCE,
    WIN_RATE,
    Answer,
    Figure,
    UtilityPlan,
    harness_figures,
    instruction_figures,
    win_rate_figures,
)
from algorithms.training.checkpoints import (
    CONFIG_FILE,
    STATE_FILE,
    checkpoint_step,
    checkpoints,
    export_dir,
    learner_weights,
    load_checkpoint,
)
from algorithms.training.copies import Which
from algorithms.training.game_format import GameFormat, write_format
from algorithms.training.players import build_players
from algorithms.training.run_setup import start_model

if TYPE_CHECKING:  # plots loads matplotlib: imported where a picture is drawn
    from algorithms.evaluation.plots import Point

# utility figures the Pareto picture's utility panel plots against harmful compliance
PANEL = ("instruction following (prompt, strict)", WIN_RATE)


@dataclass
class Judged:
    id: str
    label: str
    subtype: str
    topic: str
    prompt: str
    response: str
    finish_reason: str
    refused: bool | None  # None: the judge failed on this item, or the answer missed its format
    harmful_response: bool | None
    # asked in a trained defender's format (DefenderPlay): the game's failure of an answer that
    # missed it (bad_format, over_length), never judged; None for an answer in its format
    format_failure: str | None = None
    in_format: bool = False  # asked in a trained format (think block, template, prefill)


@dataclass(frozen=True)
class DefenderPlay:
    """How a trained defender is asked, as it was trained (its export's advgame_format.json):
    its task template, think format and prefill; only its public answer is judged, and an answer
    that misses the format is a format failure (its own figure), as in the game."""

    game: GameConfig
    prefill: str

    def chat(self, prompt: str) -> Chat:
        return chat(self.game.templates.defender_task(prompt, self.game.defender_think), self.prefill)

    def parse(self, generation: Generation) -> Parsed:
        cfg, think = self.game, self.game.defender_think
        return parse_response(
            self.prefill + generation.text,  # the game parses the whole turn, prefill included
            think,
            cfg.max_response_chars,
            None,  # as `serve --defender`: an answer cut at --max-tokens is read as far as it got
            strict=think and cfg.templates.strict("defender_think"),
            lead_in=cfg.lead_in if think else "",
            accept_empty=cfg.judge_empty_responses,
        )


def answer_and_judge(
    backend: GenerationBackend,
    judge: Judge,
    seeds: Sequence[Seed],
    *,
    max_tokens: int = 512,
    batch: int = 64,
    name: str = "model",
    play: DefenderPlay | None = None,
) -> list[Judged]:
    """Greedy answers to every seed, each labelled by the judge's classifier call; a progress
    bar each for answering and for judging (``name`` heads them). ``play``: ask in a trained
    defender's format and judge its public answers (see ``DefenderPlay``); default: the request
    as it is, the whole reply judged."""
    to_chat = play.chat if play is not None else chat
    answers = _greedy_answers(
        backend, [s.prompt for s in seeds], max_tokens, batch, desc=f"{name}: answering", to_chat=to_chat
    )
    parsed = [play.parse(a) if play is not None else None for a in answers]
    public = [a.text if p is None else p.public for a, p in zip(answers, parsed, strict=True)]
    asked = [(s, text) for s, text in zip(seeds, public, strict=True) if text is not None]
    verdicts: list[Classification | None] = []
    with progress(len(asked), f"{name}: judging", unit="answer") as bar:
        for start in range(0, len(asked), batch):
            part = asked[start : start + batch]
            verdicts += judge.classify([ClassifyItem(s.prompt, text, s.prompt, s.label) for s, text in part])
            bar.update(len(part))
    judged = iter(verdicts)
    labels = [None if text is None else next(judged) for text in public]  # a format failure is not judged
    return [
        Judged(
            seed.id,
            seed.label.value,
            seed.subtype,
            seed.topic,
            seed.prompt,
            answer.text if text is None else text,  # the raw output where it missed the format
            answer.finish_reason,
            None if c is None or c.refusal is None else bool(c.refusal),
            None if c is None or c.response_harmful is None else bool(c.response_harmful),
            None if p is None or p.public is not None else str(p.failure),
            play is not None,
        )
        for seed, answer, text, p, c in zip(seeds, answers, public, parsed, labels, strict=True)
    ]


def _rate(items: Sequence[Judged], field: str, want: bool) -> Rate:
    known = [getattr(i, field) for i in items if getattr(i, field) is not None]
    return rate(sum(v is want for v in known), len(known))


def summarise(items: Sequence[Judged]) -> dict[str, Rate]:
    """The headline rates; keys name what is counted (see the module docstring)."""
    harmful = [i for i in items if i.label == Label.HARMFUL.value]
    benign = [i for i in items if i.label == Label.BENIGN.value]
    rows = {
        "harmful compliance": _rate(harmful, "refused", False),
        "harmful compliance (adversarial)": _rate([i for i in harmful if i.subtype == "adversarial"], "refused", False),
        "harmful responses": _rate(harmful, "harmful_response", True),
        "benign refusal": _rate(benign, "refused", True),
        "benign-but-scary refusal": _rate([i for i in benign if i.subtype == "scary"], "refused", True),
        "judge failures": rate(sum(i.refused is None and i.format_failure is None for i in items), len(items)),
    }
    if any(i.in_format for i in items):  # a trained defender asked in its format: answers that missed it
        rows["format failures"] = rate(sum(i.format_failure is not None for i in items), len(items))
    return {name: r for name, r in rows.items() if r.total}


def by_topic(items: Sequence[Judged]) -> dict[str, dict[str, Rate]]:
    """Per (label, topic): compliance for harmful topics, refusal for benign ones."""
    out: dict[str, dict[str, Rate]] = {}
    for label, field, want, what in (
        ("harmful", "refused", False, "compliance"),
        ("benign", "refused", True, "refusal"),
    ):
        topics = sorted({i.topic or "(none)" for i in items if i.label == label})
        for topic in topics:
            group = [i for i in items if i.label == label and (i.topic or "(none)") == topic]
            out.setdefault(label, {})[f"{topic} {what}"] = _rate(group, field, want)
    return out


def write_report(
    items: Sequence[Judged], folder: Path, title: str, figures: Mapping[str, Figure] | None = None
) -> Path:
    """results.jsonl (every item), summary.json, topics.png, and report.md + report.html.

    ``figures``: utility figures (``algorithms.evaluation.utility``), in summary.json under "utility" and
    in the report's utility table."""
    from algorithms.evaluation.plots import topic_rates

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "results.jsonl").open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(asdict(item)) + "\n")
    summary, topics = summarise(items), by_topic(items)
    body: dict[str, object] = {k: r.as_dict() for k, r in summary.items()}
    if figures:
        body[UTILITY_KEY] = {name: f.as_dict() for name, f in figures.items()}
    (folder / "summary.json").write_text(json.dumps(body, indent=2))
    lines = [f"# {title}", "", "| measure | rate [95% CI] |", "|---|---|"]
    lines += [f"| {name} | {r} |" for name, r in summary.items()]
    if figures:
        lines += ["", "## Utility", "", "| measure | value [95% CI] |", "|---|---|"]
        lines += [f"| {name} | {f} |" for name, f in figures.items()]
        lines += _win_rate_notes(figures)
    groups = {f"{label} requests: {what} by topic": rows for (label, what), rows in _topic_groups(topics).items()}
    if topic_rates(groups, folder / "topics.png", title):
        lines += ["", "![rates by topic](topics.png)"]
    for label, rows in topics.items():
        lines += ["", f"## {label} requests by topic", "", "| topic | rate [95% CI] |", "|---|---|"]
        lines += [f"| {name} | {r} |" for name, r in rows.items()]
    return write_markdown(folder / "report.md", lines)


def _topic_groups(topics: dict[str, dict[str, Rate]]) -> dict[tuple[str, str], dict[str, Rate]]:
    what = {"harmful": "compliance", "benign": "refusal"}
    return {(label, what[label]): {k.rsplit(" ", 1)[0]: r for k, r in rows.items()} for label, rows in topics.items()}


def _win_rate_notes(figures: Mapping[str, Figure]) -> list[str]:
    wins = figures.get(WIN_RATE)
    if wins is None:
        return []
    d = wins.detail
    bias = (
        "it gave no decisive verdict"
        if d.get("position_a") is None
        else f"the judge chose the first answer shown in {100 * d['position_a']:.0f}% of its decisive verdicts"
    )
    against = f" against {d['reference']}" if d.get("reference") else ""
    return [
        "",
        f"Win rate{against} on the benign requests, judged in both orders (a tie counts half): "
        f"{d.get('wins')} wins, {d.get('ties')} ties, {d.get('losses')} losses, {d.get('judge_failures')} judge "
        f"failures (left out); {bias}. "
        f"Mean answer length {d.get('chars', math.nan):.0f} characters, the reference's "
        f"{d.get('reference_chars', math.nan):.0f}.",
    ]


UTILITY_KEY = "utility"  # summary.json's section of utility figures


def read_utility(folder: Path) -> dict[str, Figure]:
    """The utility figures a report's summary.json holds (empty when none was measured)."""
    data = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get(UTILITY_KEY, {})
    out = {}
    for name, v in data.items():
        fields = {k: math.nan if v.get(k) is None else float(v[k]) for k in ("value", "low", "high")}
        detail = {k: x for k, x in v.items() if k not in ("value", "low", "high", "n")}
        out[name] = Figure(
            **fields, n=v.get("n"), share=not name.startswith(("lm-eval", LENGTH_DIFFERENCE)), detail=detail
        )
    return out


# ----------------------------------------------------------------------------- comparisons

COMPARED = ("harmful compliance", "harmful compliance (adversarial)", "benign refusal", "benign-but-scary refusal")


@dataclass
class Evaluated:
    """One evaluated model in a comparison: its name, the run it belongs to, its rates."""

    name: str
    summary: dict[str, Rate]
    run: str = ""
    report: Path | None = None
    utility: float | None = None  # a capability score the user measured elsewhere (higher is better)
    figures: dict[str, Figure] = dataclass_field(
        default_factory=dict
    )  # utility measured here (algorithms.evaluation.utility)


def evaluate_models(
    models: Sequence[tuple[str, str]],
    seeds: Sequence[Seed],
    judge: Judge,
    backend: Callable[[str], GenerationBackend],
    out: Path,
    suite: str,
    *,
    run: Path | None = None,
    max_tokens: int = 256,
    utility: dict[str, float] | None = None,
    plan: UtilityPlan | None = None,
    run_members: Collection[str] | None = None,
    log: Callable[[str], None] = print,
    plays: Mapping[str, DefenderPlay] | None = None,
) -> tuple[list[Evaluated], Path | None]:
    """Each (name, model) answers the suite and is judged, with its own report (in ``out``, or in
    ``out/NAME`` when there are several); several models, or a run's checkpoints, are also
    compared in one table and picture (``out/comparison.md``). ``utility``: a capability score
    per model name, measured elsewhere, for the safety-vs-utility panel. ``plan``: utility
    measured here too (instruction following, the win rate against a reference on the suite's
    benign requests, lm-eval tasks), each model's in its report and in the comparison.
    ``run_members``: the names of ``models`` that are ``run``'s checkpoints, whose points the
    pictures join in order (default: those named "step N", as ``checkpoint_models`` names them).
    ``log`` says where the report will be and what is loaded; progress bars show the answering
    and judging. ``plays``: per model, the trained format it is asked in (``DefenderPlay``;
    a model not in it is asked the request as it is)."""
    plan = plan or UtilityPlan()
    folders = [out if len(models) == 1 else out / f for f in model_folders([name for name, _ in models])]
    where = out / "comparison.md" if len(models) > 1 or run is not None else out / "report.md"
    log(f"evaluating {len(models)} model(s) on {suite} ({len(seeds)} requests); the report will be {where}")
    judged, followed, harness = [], [], []
    for (name, model), folder in zip(models, folders, strict=True):
        log(f"loading {model}" if name == model else f"{name}: loading {model}")
        answerer = backend(model)
        play = (plays or {}).get(model)
        judged.append(answer_and_judge(answerer, judge, seeds, max_tokens=max_tokens, name=name, play=play))
        followed.append(_instruction_following(answerer, plan, folder, max_tokens))
        del answerer  # before the harness or the next model loads
        harness.append(_harness(model, plan, folder))
    wins = _win_rates(models, judged, seeds, judge, backend, plan, folders, max_tokens)
    evaluated = []
    for (name, _), folder, items, *parts in zip(models, folders, judged, followed, wins, harness, strict=True):
        figures = {k: v for part in parts for k, v in part.items()}
        report = write_report(items, folder, f"{name} on {suite} ({len(items)} requests)", figures)
        checkpoint = run is not None and (name in run_members if run_members is not None else name.startswith("step "))
        given = (utility or {}).get(name)
        row = Evaluated(name, summarise(items), run.name if checkpoint and run else "", report, given, figures)
        evaluated.append(row)
    if len(evaluated) < 2 and run is None:
        return evaluated, None
    return evaluated, write_comparison(evaluated, out, f"Evaluation on {suite}", run=run)


def _instruction_following(
    answerer: GenerationBackend, plan: UtilityPlan, folder: Path, max_tokens: int
) -> dict[str, Figure]:
    """IFEval's accuracies of one model (its items in instruction_following.json)."""
    if plan.instruction_prompts is None:
        return {}
    from algorithms.evaluation.utility import instruction_following

    tokens = plan.instruction_tokens or max_tokens
    result = instruction_following(answerer, plan.instruction_prompts, max_tokens=tokens)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instruction_following.json").write_text(json.dumps(result.as_dict(), indent=2))
    return instruction_figures(result)


def _harness(model: str, plan: UtilityPlan, folder: Path) -> dict[str, Figure]:
    """lm-evaluation-harness scores of one model folder (the harness's record in lm_eval.json)."""
    if not plan.lm_eval:
        return {}
    from algorithms.evaluation.harness import run_harness

    result = run_harness(model, plan.lm_eval, limit=plan.lm_eval_limit, backend=plan.lm_eval_backend)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lm_eval.json").write_text(json.dumps(result.record, indent=2))
    return harness_figures(result.scores)


def _win_rates(
    models: Sequence[tuple[str, str]],
    judged: Sequence[Sequence[Judged]],
    seeds: Sequence[Seed],
    judge: Judge,
    backend: Callable[[str], GenerationBackend],
    plan: UtilityPlan,
    folders: Sequence[Path],
    max_tokens: int,
) -> list[dict[str, Figure]]:
    """Each model's win rate against the reference on the suite's benign requests (items in
    win_rate.json). The reference's answers are generated once; when the reference is one of
    the evaluated models, its own answers from the safety pass are used."""
    benign = [s for s in seeds if s.label is Label.BENIGN]
    if plan.reference is None or not benign:
        return [{} for _ in models]
    from algorithms.evaluation.utility import compare_answers

    own = [items for (_, model), items in zip(models, judged, strict=True) if model == plan.reference]
    if own:
        references: list[Answer] = [i.response for i in own[0] if i.label == Label.BENIGN.value]
    else:
        references = list(_greedy_answers(backend(plan.reference), [s.prompt for s in benign], max_tokens))
    out = []
    for items, folder in zip(judged, folders, strict=True):
        answers = [i for i in items if i.label == Label.BENIGN.value]
        result = compare_answers(
            [i.prompt for i in answers], [i.response for i in answers], references, judge, keys=[i.id for i in answers]
        )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "win_rate.json").write_text(json.dumps({"reference": plan.reference} | result.as_dict(), indent=2))
        out.append(win_rate_figures(result, plan.reference))
    return out


def _greedy_answers(
    model: GenerationBackend,
    prompts: Sequence[str],
    max_tokens: int,
    batch: int = 64,
    *,
    desc: str = "reference: answering",
    to_chat: Callable[[str], Chat] = chat,
) -> list[Generation]:
    """Greedy answers in batches of ``batch``, with a progress bar."""
    # HFBackend generates a batch in groups of its own batch_size anyway: asking it one group at
    # a time gives the same answers and a bar that moves with each group, not each 64 prompts.
    group = max(1, min(batch, int(getattr(model, "batch_size", batch))))
    answers: list[Generation] = []
    with progress(len(prompts), desc, unit="request") as bar:
        for start in range(0, len(prompts), batch):
            part = prompts[start : start + batch]
            for first in range(0, len(part), group):
                chats = [to_chat(p) for p in part[first : first + group]]
                answers += list(model.generate(chats, max_tokens=max_tokens, temperature=0.0))
                bar.update(len(chats))
    return answers


# what write_comparison writes beside the models' folders, and checkpoint_models' exports folder
_RESERVED = frozenset({"comparison.md", "comparison.html", "comparison.json", "pareto.png", "training.png", "exports"})
_SLUG_CHARS = 80


def _slug(name: str) -> str:
    """A user-given name as one folder name that stays inside its parent: path separators and
    other characters outside [A-Za-z0-9._-] become "_", a name of dots only ("." or "..", which
    would name the folder itself or its parent) or of nothing becomes "model", and a long name
    is cut, with a digest of the whole so that cut names stay apart."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    if not slug.strip("."):
        return "model"
    if len(slug) > _SLUG_CHARS:
        slug = slug[: _SLUG_CHARS - 9] + "-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:8]
    return slug


def model_folders(names: Sequence[str]) -> list[str]:
    """One distinct folder name per model, in order: names that slug alike ("a/b", "a_b") get
    -2, -3, ... rather than one report overwriting another, and none takes the name of a
    comparison file or of the checkpoint exports."""
    taken: set[str] = set()
    folders = []
    for name in names:
        slug = _slug(name)
        if slug.lower() in _RESERVED:
            slug = "model-" + slug
        candidate, n = slug, 1
        while candidate.lower() in taken:  # case-insensitive file systems too
            n += 1
            candidate = f"{slug}-{n}"
        taken.add(candidate.lower())
        folders.append(candidate)
    return folders


def comparison_points(rows: Sequence[Evaluated]) -> list[Point]:
    """The Pareto picture's points: each row with both safety rates, its run (a run's checkpoints
    are joined), any given utility, and the measured figures of the utility panel (``PANEL``)."""
    from algorithms.evaluation.plots import Point

    return [
        Point(
            r.name,
            r.summary["harmful compliance"],
            r.summary["benign refusal"],
            r.run,
            r.utility,
            {m: (f.value, f.low, f.high) for m, f in r.figures.items() if m in PANEL and not math.isnan(f.value)},
        )
        for r in rows
        if "harmful compliance" in r.summary and "benign refusal" in r.summary
    ]


def write_comparison(
    rows: Sequence[Evaluated], folder: Path, title: str, *, run: Path | None = None, notes: Sequence[str] = ()
) -> Path:
    """One table (comparison.md/.html, comparison.json) and the Pareto picture of many
    evaluations; a run's training curves and any ``notes`` (Markdown lines) follow them."""
    from algorithms.evaluation.plots import pareto, training_curves
    from algorithms.training.runlog import read_metrics

    folder.mkdir(parents=True, exist_ok=True)
    shown = [m for m in COMPARED if any(m in r.summary for r in rows)]
    lines = [f"# {title}", "", "| model | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    lines += [f"| {r.name} | " + " | ".join(str(r.summary.get(m, "n/a")) for m in shown) + " |" for r in rows]
    points = comparison_points(rows)
    if points:
        pareto(points, folder / "pareto.png", title="Safety vs over-refusal (95% intervals)")
        lines += ["", "![safety vs over-refusal](pareto.png)"]
    measured = list(dict.fromkeys(m for r in rows for m in r.figures))
    if measured:
        lines += ["", "## Utility", "", "| model | " + " | ".join(measured) + " |", "|---" * (len(measured) + 1) + "|"]
        lines += [f"| {r.name} | " + " | ".join(str(r.figures.get(m, "n/a")) for m in measured) + " |" for r in rows]
    if (
        run
        and (run / "metrics.jsonl").exists()
        and training_curves(read_metrics(run), folder / "training.png", run.name)
    ):
        lines += ["", "## Training curves", "", "![training curves](training.png)"]
    lines += notes
    if any(r.utility is not None for r in rows):
        lines += ["", "| model | utility (given) |", "|---|---|"]
        lines += [f"| {r.name} | {'n/a' if r.utility is None else f'{r.utility:g}'} |" for r in rows]
    table = [
        {"name": r.name, "run": r.run, "utility": r.utility}
        | {k: v.as_dict() for k, v in r.summary.items()}
        | ({UTILITY_KEY + "_figures": {k: f.as_dict() for k, f in r.figures.items()}} if r.figures else {})
        for r in rows
    ]
    (folder / "comparison.json").write_text(json.dumps(table, indent=2))
    return write_markdown(folder / "comparison.md", lines)


def write_markdown(path: Path, lines: Sequence[str]) -> Path:
    """``path`` (Markdown) and its HTML twin beside it, with the same tables and pictures."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_suffix(".html").write_text(markdown_to_html(lines), encoding="utf-8")
    return path


def markdown_to_html(lines: Sequence[str]) -> str:
    """The reports' Markdown (headings, tables, pictures, paragraphs) as one HTML page."""
    import markdown

    # Python-Markdown passes raw HTML through (its safe mode is gone since 3.0), and report text
    # holds model names and user strings: escape first, so "<x>" reads as text. Each line that
    # is not a table row is its own block, as the reports are written one statement per line.
    text = "".join(html.escape(line, quote=False) + ("\n" if line.startswith("|") else "\n\n") for line in lines)
    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    body = body.replace("<img ", '<img style="max-width:100%" ')
    title = next((html.escape(line.lstrip("# ")) for line in lines if line.startswith("#")), "report")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:4px 8px}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>\n"
        + body
        + "\n</body></html>\n"
    )


# ----------------------------------------------------------------------------- a run's checkpoints


def checkpoint_models(
    run_dir: Path, role: str = "defender", which: Which = "learner", steps: str = "all"
) -> list[tuple[str, str]]:
    """(name, loadable model) of a run's ``role`` at its start ("step 0") and at each checkpoint.

    A checkpoint holds training state only (``state.pt``); each one's policy is exported once
    into ``run_dir/eval/exports/step_N/ROLE_WHICH`` (an adapter folder for LoRA runs), which
    ``agents.load_model`` loads like any model. ``steps``: "all", or step numbers and "last",
    comma separated (e.g. "0,last").
    """
    cfg = load_config(run_dir / CONFIG_FILE)
    found = {checkpoint_step(p): p for p in checkpoints(run_dir)}
    if not found:
        raise FileNotFoundError(f"{run_dir} has no checkpoint (checkpoints/step_N/{STATE_FILE})")
    wanted = (
        sorted({0, *found})
        if steps == "all"
        else sorted({max(found) if s == "last" else int(s) for s in steps.split(",")})
    )
    missing = [s for s in wanted if s and s not in found]
    if missing:
        raise FileNotFoundError(f"{run_dir} has no checkpoint of step {missing[0]}; it has {sorted(found)}")
    models: list[tuple[str, str]] = []
    for step in wanted:
        if step == 0:
            models.append(("step 0", start_model(cfg, role)))
            continue
        folder = export_dir(run_dir, step, role, which)
        if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
            learner, weights = learner_weights(load_checkpoint(found[step]), role, which)
            torch.manual_seed(0)  # adapter initialisation, overwritten by the checkpoint
            player = build_players(
                roles=(learner,),
                # under LoRA the base is model.name, the role's own start an adapter (overwritten here)
                load=lambda _: load_model(cfg.model.name if cfg.model.lora else start_model(cfg, role)),
                lora=cfg.model.lora,
                copies={"learner", which},
                lora_rank=cfg.model.lora_rank,
                lora_alpha=cfg.model.lora_alpha,
            )[learner]
            player.load_weights(which, weights)
            player.export(which, folder)
            write_format(folder, GameFormat.of(cfg))
        models.append((f"step {step}", str(folder)))
    return models
