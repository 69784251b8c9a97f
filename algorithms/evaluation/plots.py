"""Pictures of a run and of evaluations: PNG files meant to be looked at, not read.

* ``training_curves``: a run's ``metrics.jsonl`` as a grid of panels (held-out refusal,
  rewards, validity, losses), one line per logged figure, steps on the x axis.
* ``pareto``: evaluated models or checkpoints as points of safety (harmful compliance, lower is
  better) against over-refusal (benign refusal, lower is better), with 95 % intervals as
  whiskers; the best corner is the origin. Checkpoints of one run are joined in step order.
  A second panel plots utility against safety when any point carries a utility figure: the
  score given by hand and the figures advgame measures (instruction following, win rate; a
  dotted line marks the win rate's parity with the reference), each with its interval.
* ``topic_rates``: one evaluation's rates per topic as horizontal bars with intervals.
* ``rate_curves``: rates with intervals against training steps (``advgame exploit``'s curve).
* ``seed_means``: configs compared over seeds (``advgame compare``): each seed's point and the
  mean with its Student-t interval in the safety / over-refusal plane.

Figures are drawn with matplotlib's object API (no pyplot state, no display needed).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from advgame_env.metrics import Rate

# (panel title, y label, {metrics key: legend label}); a panel with no logged key is left out
CURVE_PANELS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "Held-out refusal (greedy, keyword detector)",
        "share refused",
        {"val/refusal_harmful": "harmful requests", "val/refusal_benign": "benign requests"},
    ),
    (
        "Refusal while training (sampled)",
        "share refused",
        {"game_harmful/refusal_harmful": "harmful split", "game_benign/refusal_benign": "benign split"},
    ),
    ("Game rewards", "mean reward", {"game/defender_reward": "defender", "game/attacker_reward": "attacker"}),
    (
        "Attack validity",
        "share of attacks",
        {
            "game/attacker_valid": "valid",
            "game/attacker_bad_format": "bad format",
            "game/attacker_unfaithful": "unfaithful",
            "game/attacker_over_length": "over length",
        },
    ),
    ("Training loss", "loss", {"train/defender_loss": "defender", "train/attacker_loss": "attacker"}),
    (
        "Training examples per step",
        "examples",
        {"train/defender_examples": "defender", "train/attacker_examples": "attacker"},
    ),
)


# Lines of one panel often coincide (valid and unfaithful both at 0 early on): each later line is
# drawn thinner, dashed differently and with its own marker, on top of the earlier ones, so a line
# under another still shows as a border around it.
LINE_STYLES = (("-", "o", 3.2), ("--", "s", 2.2), (":", "^", 1.6), ("-.", "v", 1.2))


def training_curves(records: Sequence[Mapping[str, float]], path: Path, title: str = "") -> Path | None:
    """The panels of ``CURVE_PANELS`` that have data; None when nothing was logged."""
    fig = curves_figure(records, title)
    return None if fig is None else _save(fig, path)


def curves_figure(records: Sequence[Mapping[str, float]], title: str = "") -> Figure | None:
    panels = [(t, y, {k: v for k, v in keys.items() if _series(records, k)[0]}) for t, y, keys in CURVE_PANELS]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    columns = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(6.4 * columns, 3.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (panel, ylabel, keys) in zip(axes.flat, panels, strict=False):
        for n, (key, label) in enumerate(keys.items()):
            steps, values = _series(records, key)
            style, marker, width = LINE_STYLES[n % len(LINE_STYLES)]
            few = len(steps) < 30
            ax.plot(steps, values, style, marker=marker if few else None, markersize=4, linewidth=width, label=label)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if ylabel.startswith("share"):
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, framealpha=0.6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def _series(records: Sequence[Mapping[str, float]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["step"]), float(r[key])) for r in records if key in r and r[key] is not None]
    pairs = [(s, v) for s, v in pairs if not math.isnan(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


@dataclass
class Point:
    """One evaluated model (or checkpoint) in the safety / over-refusal plane."""

    name: str
    harmful_compliance: Rate
    benign_refusal: Rate
    run: str = ""  # points of the same run are joined in order
    utility: float | None = None  # optional, e.g. a capability benchmark's score in [0, 1]
    # utility measured by advgame (e.g. instruction following, win rate): name -> (value, low, high) in [0, 1]
    measured: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def pareto(points: Sequence[Point], path: Path, title: str = "Safety vs over-refusal") -> Path:
    with_utility = [p for p in points if p.utility is not None or p.measured]
    fig = Figure(figsize=(13 if with_utility else 7, 6))
    axes = fig.subplots(1, 2 if with_utility else 1, squeeze=False)
    ax = axes[0][0]
    for run in dict.fromkeys(p.run for p in points):
        members = [p for p in points if p.run == run]
        xs = [100 * p.benign_refusal.value for p in members]
        ys = [100 * p.harmful_compliance.value for p in members]
        colour = ax.plot(xs, ys, "-" if run and len(members) > 1 else "", alpha=0.5)[0].get_color()
        ax.errorbar(xs, ys, xerr=_whiskers([p.benign_refusal for p in members]),
                    yerr=_whiskers([p.harmful_compliance for p in members]),
                    fmt="o", color=colour, capsize=3, label=run or None)  # fmt: skip
    # Labels are stacked top-down in the order of their points' heights, each tied to its point
    # by a thin line, so labels of close points neither overlap nor swap.
    for rank, p in enumerate(sorted(points, key=lambda p: -p.harmful_compliance.value)):
        xy = (100 * p.benign_refusal.value, 100 * p.harmful_compliance.value)
        ax.annotate(p.name, xy, textcoords="offset points", xytext=(22, 10 - 14 * (rank % 4)), fontsize=8,
                    va="center", arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6})  # fmt: skip
    ax.plot([0], [0], marker="*", markersize=14, color="gold", markeredgecolor="black", linestyle="")
    ax.annotate("ideal", (0, 0), textcoords="offset points", xytext=(8, -12), fontsize=8)
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("benign refusal, % (over-refusal; lower is better)")
    ax.set_ylabel("harmful compliance, % (attack success; lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(p.run for p in points):
        ax.legend(fontsize=8)
    if with_utility:
        _utility_panel(axes[0][1], with_utility)
    return _save(fig, path)


def _utility_panel(ax: Axes, points: Sequence[Point]) -> None:
    """Each utility figure (the given score, then each measured one) against harmful compliance:
    one colour and marker per figure, its interval as a vertical whisker, a run's points joined."""
    series = (["utility (given)"] if any(p.utility is not None for p in points) else []) + list(
        dict.fromkeys(m for p in points for m in p.measured)
    )
    for k, name in enumerate(series):
        marker = "osD^v<>"[k % 7]
        legend: str | None = name
        for run in dict.fromkeys(p.run for p in points):
            members = []
            for p in points:
                if p.run != run:
                    continue
                if name == "utility (given)" and p.utility is not None:
                    members.append((p, (p.utility, math.nan, math.nan)))
                elif name in p.measured:
                    members.append((p, p.measured[name]))
            if not members:
                continue
            xs = [100 * p.harmful_compliance.value for p, _ in members]
            ys = [v for _, (v, _, _) in members]
            below = [0.0 if math.isnan(lo) else v - lo for _, (v, lo, _) in members]
            above = [0.0 if math.isnan(hi) else hi - v for _, (v, _, hi) in members]
            ax.errorbar(xs, ys, xerr=_whiskers([p.harmful_compliance for p, _ in members]), yerr=[below, above],
                        fmt=("-" if run and len(members) > 1 else "") + marker, color=f"C{k % 10}", capsize=3,
                        alpha=0.8, label=legend)  # fmt: skip
            legend = None  # one legend entry per figure
    labelled = set()
    for p in points:  # each model's name once, at its highest figure
        ys = ([p.utility] if p.utility is not None else []) + [v for v, _, _ in p.measured.values()]
        if p.name not in labelled and ys:
            labelled.add(p.name)
            ax.annotate(p.name, (100 * p.harmful_compliance.value, max(ys)), xytext=(6, 6),
                        textcoords="offset points", fontsize=8)  # fmt: skip
    if any("win rate" in name for name in series):
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")  # parity with the reference
    shown = [
        v for p in points for v in ([p.utility] if p.utility is not None else []) + [m[0] for m in p.measured.values()]
    ]
    if all(0 <= v <= 1 for v in shown):
        ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(-3, 103)
    ax.set_xlabel("harmful compliance, % (lower is better)")
    ax.set_ylabel("utility, share (higher is better)")
    ax.set_title("Safety vs utility (95% intervals)")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8)


def _whiskers(rates: Sequence[Rate]) -> list[list[float]]:
    """Matplotlib's asymmetric error bars (below, above) from Wilson intervals, in %."""
    return [[100 * (r.value - r.low) for r in rates], [100 * (r.high - r.value) for r in rates]]


def topic_rates(groups: Mapping[str, Mapping[str, Rate]], path: Path, title: str) -> Path | None:
    """Horizontal bars, one panel per group (e.g. harmful compliance / benign refusal by topic)."""
    groups = {name: {k: r for k, r in rows.items() if r.total} for name, rows in groups.items()}
    groups = {name: rows for name, rows in groups.items() if rows}
    if not groups:
        return None
    height = max(len(rows) for rows in groups.values())
    fig = Figure(figsize=(6.5 * len(groups), 1.6 + 0.4 * height))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (name, rows) in zip(axes.flat, groups.items(), strict=True):
        labels = list(rows)[::-1]
        values = [100 * rows[k].value for k in labels]
        ax.barh(labels, values, xerr=_whiskers([rows[k] for k in labels]), capsize=3, color="tab:blue", alpha=0.75)
        for y, label in enumerate(labels):  # the figures sit right of the 100 % line, clear of the bars
            ax.text(102, y, f"{values[y]:.0f}% (n={rows[label].total})", va="center", fontsize=8)
        ax.set_xlim(0, 128)
        ax.set_xticks(range(0, 101, 20))
        ax.axvline(100, color="grey", linewidth=0.8)
        ax.set_xlabel("%")
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def rate_curves(series: Mapping[str, Sequence[tuple[int, Rate]]], path: Path, title: str) -> Path:
    """Rates against training steps (e.g. an exploit run's ASR and induced refusal), one line
    per series with its 95 % interval as whiskers; a point without items is left out."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, points in series.items():
        known = [(step, r) for step, r in points if r.total]
        if known:
            steps, rates = [s for s, _ in known], [r for _, r in known]
            ax.errorbar(steps, [100 * r.value for r in rates], yerr=_whiskers(rates), fmt="o-", capsize=3, label=name)
    ax.set_ylim(-3, 103)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step of the best response")
    ax.set_ylabel("%")
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)  # a title of two model paths is long
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


Spread = tuple[float, float, float]  # (mean, low, high) of a figure over seeds; nan: no interval


def seed_means(
    seeds: Mapping[str, Sequence[tuple[float, float]]],
    means: Mapping[str, tuple[Spread, Spread]],
    path: Path,
    title: str,
) -> Path | None:
    """``advgame compare``'s plane: per config, each seed's (harmful compliance, benign refusal)
    as a faint dot and the mean over seeds with its interval as whiskers (none where the
    interval is undefined, e.g. one seed); None when no config has both figures."""
    shown = [label for label, (h, b) in means.items() if not math.isnan(h[0]) and not math.isnan(b[0])]
    if not shown:
        return None
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    for k, label in enumerate(shown):
        colour = f"C{k % 10}"
        points = seeds.get(label, [])
        ax.plot([100 * b for _, b in points], [100 * h for h, _ in points], "o", color=colour, alpha=0.3, markersize=5)
        (h, h_low, h_high), (b, b_low, b_high) = means[label]
        xerr = [[0.0 if math.isnan(b_low) else 100 * (b - b_low)], [0.0 if math.isnan(b_high) else 100 * (b_high - b)]]
        yerr = [[0.0 if math.isnan(h_low) else 100 * (h - h_low)], [0.0 if math.isnan(h_high) else 100 * (h_high - h)]]
        ax.errorbar([100 * b], [100 * h], xerr=xerr, yerr=yerr, fmt="s", color=colour, capsize=4,
                    markersize=8, label=f"{label} (n={len(points)})")  # fmt: skip
    ax.plot([0], [0], marker="*", markersize=14, color="gold", markeredgecolor="black", linestyle="")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("benign refusal, % (over-refusal; lower is better)")
    ax.set_ylabel("harmful compliance, % (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def crossplay_heatmap(
    attackers: Sequence[str],
    defenders: Sequence[str],
    panels: Mapping[str, Sequence[Sequence[Rate]]],
    path: Path,
    title: str = "",
    *,
    attacker_weights: Sequence[float] | None = None,
    defender_weights: Sequence[float] | None = None,
) -> Path:
    """One heatmap per matrix of rates (rows attackers, columns defenders), each cell its rate and
    interval; the meta-Nash weights, when given, beside the members' names."""

    def named(names: Sequence[str], weights: Sequence[float] | None) -> list[str]:
        # long folder paths keep their ends (the part that tells exports apart); the report has them whole
        names = [n if len(n) <= 28 else "…" + n[-27:] for n in names]
        return [
            n if weights is None else f"{n}\n(w={w:.2f})"
            for n, w in zip(names, weights or [0.0] * len(names), strict=True)
        ]

    width = max(4.5, 2.0 + 1.6 * len(defenders))
    fig = Figure(figsize=(width * len(panels), max(4.0, 2.6 + 0.9 * len(attackers))))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, matrix) in zip(axes.flat, panels.items(), strict=True):
        values = [[math.nan if not r.total else r.value for r in row] for row in matrix]
        image = ax.imshow(values, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
        for i, row in enumerate(matrix):
            for j, r in enumerate(row):
                text = (
                    "n/a"
                    if not r.total
                    else f"{100 * r.value:.0f}%\n[{100 * r.low:.0f}, {100 * r.high:.0f}]\nn={r.total}"
                )
                dark = r.total and r.value > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        # slanted: long names of neighbouring columns would run into each other
        ax.set_xticks(range(len(defenders)), named(defenders, defender_weights), fontsize=8, rotation=25, ha="right")
        ax.set_yticks(range(len(attackers)), named(attackers, attacker_weights), fontsize=8)
        ax.set_xlabel("defender")
        ax.set_ylabel("attacker")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
