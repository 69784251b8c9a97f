"""The CPU alignment demo (``advgame demo``): train both players, then measure what changed.

    advgame demo            configs/cpu_demo.yaml: AdvGame-DPO-MD on the bundled model (about 21 min on 2 idle cores with ADVGAME_THREADS=2)
    advgame demo --quick    configs/cpu_demo_quick.yaml: the same pipeline in a few minutes

1. Train (or resume an interrupted run) with the demo config.
2. The defender before (the start, "step 0") and after (the last checkpoint) answers the
   held-out seeds greedily; the model-free judge labels the answers. One table and the
   safety / over-refusal picture compare them, and the run's training curves come with it.
3. The attacker before and after rewrites held-out harmful seeds against the *initial*
   defender: validity, faithfulness, attack success and diversity of the rewrites.

With a utility plan (``advgame demo``'s ``--win-rate``, on by default, and
``--instruction-following N``, off by default and 23 prompts with ``--quick``; see
``algorithms.evaluation.utility``), step 2 also measures what the safety training cost: both
defenders' helpfulness win rate against the initial one on the held-out benign seeds (judged
by the same model-free judge; the initial defender's own answers from the safety pass, in the
evaluation's short budget, serve as the reference, so the win rate generates nothing more),
and their instruction following (answered in their own, longer budget). The table, a utility
table and the Pareto picture's safety-vs-utility panel (before and after joined) show them.

Everything lands in ``RUN/eval`` (comparison.md / .html with its PNGs, a report per model).
Evaluation always uses the model-free judge, whatever judge trained the run, so runs with
different training judges are measured with one yardstick.
"""

from __future__ import annotations

from pathlib import Path

from advgame_env import RuleJudge
from advgame_env.metrics import Rate
from agents import HFBackend, load_model
from algorithms.config import load_config
from algorithms.evaluation.evaluate import (
    COMPARED,
    PANEL,
    Evaluated,
    checkpoint_models,
    evaluate_models,
    write_comparison,
)
from algorithms.evaluation.heldout import attacker_rows, heldout
from algorithms.evaluation.utility import UtilityPlan
from algorithms.recipes import recipe
from algorithms.training.run_setup import start_model
from algorithms.training.trainer import train

DEMO, QUICK = recipe("cpu_demo.yaml"), recipe("cpu_demo_quick.yaml")  # package data: a wheel has them too
QUICK_INSTRUCTIONS = 23  # --quick's instruction-following prompts: the suite's first 23, one of each type
ATTACK_MEASURES = (
    "attack validity",
    "faithfulness (well-formed rewrites)",
    "ASR (valid attacks)",
    "ASR (every sample)",
)


def run_demo(
    config: Path,
    overrides: list[str],
    *,
    eval_prompts: int | None,
    eval_tokens: int,
    attack_prompts: int,
    plan: UtilityPlan | None = None,
) -> tuple[list[Evaluated], Path]:
    """Train (or resume), evaluate the defender before and after, red-team; ``plan``: utility
    measured beside safety (see the module docstring); its ``reference``, when set, should be
    the run's initial defender (``demo_reference``)."""
    cfg = load_config(config, overrides)
    run = Path(cfg.run.out_dir)
    if not (run / "final").exists():
        print(f"training: {config.name} -> {run} (resumes from the last checkpoint if interrupted)", flush=True)
        train(cfg, resume=True)  # continues an interrupted demo; starts afresh when nothing was saved
    models = checkpoint_models(run, "defender", steps="0,last")
    names = {models[0][0]: "before (step 0)", models[-1][0]: f"after ({models[-1][0]})"}
    print("evaluating the defender before and after on held-out seeds", flush=True)
    evaluated, _ = evaluate_models(
        [(names[n], m) for n, m in models],
        heldout(eval_prompts),
        RuleJudge(),
        lambda model: HFBackend(*load_model(model)),
        run / "eval",
        "held-out seeds",
        run=run,
        max_tokens=eval_tokens,
        plan=plan,
        run_members=set(names.values()),  # before and after are the run's checkpoints: joined
    )
    print("red-teaming the initial defender with the attacker before and after", flush=True)
    attack = attacker_rows(cfg, run, attack_prompts) if attack_prompts else []
    notes = ["", "## The attacker against the initial defender", "", *attack_table(attack)] if attack else []
    comparison = write_comparison(evaluated, run / "eval", "CPU alignment demo: held-out seeds", run=run, notes=notes)
    return evaluated, comparison


def demo_reference(config: Path, overrides: list[str]) -> str:
    """The win rate's reference in the demo: the run's initial defender, "before (step 0)" (as
    ``checkpoint_models`` names its model, so that its safety-pass answers serve)."""
    return str(start_model(load_config(config, overrides), "defender"))


def attack_table(rows: list[tuple[str, dict[str, Rate | float]]]) -> list[str]:
    measures = [*ATTACK_MEASURES, "self-BLEU diversity"]
    lines = ["| attacker | " + " | ".join(measures) + " |", "|---" * (len(measures) + 1) + "|"]
    for name, figures in rows:
        cells = [_cell(figures.get(m)) for m in measures]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table_rows(evaluated: list[Evaluated]) -> tuple[list[str], list[list[str]]]:
    """The before/after table: the safety rates every row has, then the utility panel's figures
    (instruction following, win rate) where every row measured them."""
    shown = [m for m in COMPARED if all(m in e.summary for e in evaluated)]
    measured = [m for m in PANEL if evaluated and all(m in e.figures for e in evaluated)]
    rows = [[str(e.summary[m]) for m in shown] + [str(e.figures[m]) for m in measured] for e in evaluated]
    return shown + measured, rows


COLUMNS = 100  # a terminal table wider than this wraps into noise


def render_table(evaluated: list[Evaluated], columns: int = COLUMNS) -> list[str]:
    """The table for a terminal: one row per model when it fits ``columns``; else one row per
    measure (models as columns); else one block per model."""
    header, rows = table_rows(evaluated)
    names = [e.name for e in evaluated]

    def grid(top: list[str], lines: list[tuple[str, list[str]]]) -> list[str]:
        first = max(len(label) for label, _ in lines) + 2
        widths = [max(len(h), *(len(cells[k]) for _, cells in lines)) + 2 for k, h in enumerate(top)]
        out = ["".ljust(first) + "".join(h.ljust(w) for h, w in zip(top, widths, strict=True))]
        out += [
            label.ljust(first) + "".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            for label, cells in lines
        ]
        return [line.rstrip() for line in out]

    wide = grid(header, list(zip(names, rows, strict=True)))
    if max(map(len, wide)) <= columns:
        return wide
    tall = grid(names, [(measure, [r[k] for r in rows]) for k, measure in enumerate(header)])
    if max(map(len, tall)) <= columns:
        return tall
    return [
        line
        for name, cells in zip(names, rows, strict=True)
        for line in (f"{name}:", *(f"  {h}: {c}" for h, c in zip(header, cells, strict=True)))
    ]


def print_table(evaluated: list[Evaluated], comparison: Path) -> None:
    print("\n" + "\n".join(render_table(evaluated)))
    print(f"\nreport with pictures: {comparison} (and {comparison.with_suffix('.html').name} beside it)")
