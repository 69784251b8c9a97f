"""Algorithms compared over seeds (``advgame compare``): train, evaluate alike, one table.

    advgame compare --config cpu_smoke.yaml --config cpu_dpo.yaml --run-seeds 3 --steps 10 --out runs/cmp

Method. Every config (a shipped recipe's name or a YAML file, with the same overrides for all and
optionally some of its own) is trained once per run seed, in ``OUT/<label>/seed_<s>`` (``run.seed``
= s, ``run.steps`` = ``steps`` where given). A finished run (``final/`` present, its config.yaml the
derived config up to output-only keys) is reused, an interrupted one resumed, a folder holding
another config refused. Then each run's final pair is measured the same way:

    harmful compliance   held-out harmful seeds the final defender answers (greedy) instead of
    benign refusal       refusing; held-out benign seeds it refuses (``evaluate_models``)
    attack success       the final attacker against the run's *initial* defender on held-out
                         harmful seeds, every sample counted (``heldout.attacker_rows``), and over
                         the valid attacks alone (what the rewrites achieve, beside the format)
    best-response ASR    exploitability: a fresh attacker trained for ``exploit_budget`` steps
                         against the frozen final defender (``exploit``): its final ASR (every
                         sample, valid attacks) and its gain over its step-0 ASR (what training
                         found; the final rate also counts what the untrained attacker could do)
    cross-play ratings   every run's final attacker against every run's final defender on the
                         same seeds (``crossplay``); a run's attacker rating is its success
                         against the meta-Nash mixture of defenders, its defender rating its
                         safety against the attackers' mixture
    utility              instruction following / win rate where asked (``UtilityPlan``)

Each part of a run is saved in ``RUN/compare/<part>-<digest of its settings>/result.json``, so a
rerun with the same settings skips it and a rerun with other settings measures afresh beside it.

Aggregation: per config and column, the mean over the seeds that measured it and a 95 % Student-t
interval, mean ± t(0.975, n-1)·s/√n (s the sample standard deviation), cut to [0, 1] for shares
(with two seeds t is 12.7, so the interval is wide). With one seed it is undefined and said to be. Writes
``OUT/comparison.md`` (+ .html), ``comparison.json`` and ``comparison.png`` (harmful compliance
against benign refusal per config, each seed faint, the mean with its interval bars).

Cost (CPU): seeds × configs training runs of ``steps``; per run greedy answers to ``eval_prompts``
requests, 2 × ``attack_prompts`` attacks, an exploit run of ``exploit_budget`` steps with 2 curve
points of ``exploit_prompts`` requests; a cross-play of (configs·seeds)² pairs on ``crossplay_prompts``
requests.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import tyro
from tyro.constructors import PrimitiveConstructorSpec

from algorithms.config import (
    RESUME_MAY_CHANGE,
    BackendKind,
    ConfigError,
    TrainConfig,
    at_least,
    config_changes,
    load_config,
    ranged,
    validate,
)
from algorithms.evaluation.progress import OnItem, items_done
from algorithms.recipes import find_config

if TYPE_CHECKING:
    from advgame_env import Judge, TemplateSet
    from advgame_env.protocol import GenerationBackend
    from algorithms.evaluation.crossplay import CrossPlay

HARMFUL, BENIGN = "harmful compliance", "benign refusal"
ATTACK = "attack success vs initial defender"
ATTACK_VALID = "attack success vs initial defender (valid attacks)"
EXPLOIT = "best-response ASR"
EXPLOIT_VALID = "best-response ASR (valid attacks)"
EXPLOIT_GAIN = "best-response ASR gain over step 0"
ATTACKER_RATING, DEFENDER_RATING = "cross-play attacker rating", "cross-play defender rating"
COLUMNS = (
    *(HARMFUL, BENIGN, ATTACK, ATTACK_VALID, EXPLOIT, EXPLOIT_VALID, EXPLOIT_GAIN),
    *(ATTACKER_RATING, DEFENDER_RATING),
)  # then utility, where measured
SIGNED = {EXPLOIT_GAIN}  # differences of shares: in [-1, 1], shown with their sign
LOWER_IS_BETTER = {
    **{HARMFUL: True, BENIGN: True, ATTACK: False, ATTACK_VALID: False},
    **{EXPLOIT: True, EXPLOIT_VALID: True, EXPLOIT_GAIN: True, ATTACKER_RATING: False},
}
PARTS = "compare"  # a run's folder of compare's measurements


@dataclass(frozen=True)
class Entry:
    """One compared config: a shipped recipe's name or a YAML file, its row label (default: the
    file's name without .yaml) and overrides of its own (after the comparison's shared ones)."""

    config: str
    label: str = ""
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.label or Path(self.config).name.removesuffix(".yaml").removesuffix(".yml")


# `advgame compare --config FILE` (repeatable): one Entry of the file's own label, no overrides of its own
ENTRY_FLAG = PrimitiveConstructorSpec(
    nargs=1,
    metavar="CONFIG",
    instance_from_str=lambda given: Entry(given[0]),
    is_instance=lambda value: isinstance(value, Entry),
    str_from_instance=lambda entry: [entry.config],
)


@dataclass(frozen=True)
class CompareConfig:
    """What ``advgame compare`` trains and measures; the command nests it, its flags are these fields."""

    configs: Annotated[
        tuple[Annotated[Entry, ENTRY_FLAG], ...], tyro.conf.UseAppendAction, tyro.conf.arg(name="config")
    ] = ()
    """a shipped config's name or a YAML file; repeat for each compared config (the row label: its file name)"""
    seeds: Annotated[int, tyro.conf.arg(name="run-seeds", metavar="N")] = ranged(2, at_least(1))
    """run seeds 0 .. N-1 (unless --seed-list)"""
    seed_list: tuple[int, ...] = ()  # explicit run seeds instead of --run-seeds
    steps: int | None = None  # every run's training budget (run.steps); None: each config's own
    # The budgets below count held-out requests (prompts), not seeds of randomness (those are --run-seeds).
    eval_prompts: int = ranged(24, at_least(2))  # held-out requests the final defender answers, half harmful
    attack_prompts: int = ranged(8, at_least(0))  # held-out harmful requests the final attacker rewrites (0: skip)
    exploit_budget: int = ranged(2, at_least(0))  # best-response training steps (0: skip)
    exploit_prompts: int = ranged(8, at_least(2))  # held-out requests of each exploit curve point
    exploit_algorithm: str = "advgame_dpo_md"  # the best response's algorithm, the same against every defender
    crossplay_prompts: int = ranged(16, at_least(0))  # requests of the cross-play of every final pair (0: skip)
    max_tokens: int = ranged(64, at_least(1))  # answer budget of the held-out evaluation and cross-play
    judge: str = "rule"  # the evaluations' judge: rule (model-free) or a judge model
    judge_backend: BackendKind = "hf"
    judge_url: str | None = None  # OpenAI-compatible server of the judge (--judge-backend openai); replicas: a,b,...
    instruction_following: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """utility: IFEval-style instruction following on the first N bundled prompts (0: all; off by default)"""
    # instruction following's answer length (None: --max-tokens); the suite's constraints (length,
    # paragraphs, a closing phrase) need more than the held-out evaluation's short answers
    instruction_tokens: int | None = ranged(None, at_least(1))
    win_rate: bool = False  # utility: win rate on benign requests against each run's initial defender
    out: str = "runs/compare"  # OUT/LABEL/seed_S hold the runs, OUT/comparison.md the table
    overrides: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="key=value")] = ()
    """overrides of every config, e.g. roles.attacker.max_tokens=32"""

    def __post_init__(self) -> None:
        validate(self, "compare")
        if not self.configs:
            raise ConfigError("compare needs at least one config (--config FILE, repeatable)")
        labels = [e.name for e in self.configs]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ConfigError(
                f"compare: two configs share the label {', '.join(twice)}; give each its own label (Entry.label)"
            )
        if len(set(self.seed_list)) != len(self.seed_list) or any(s < 0 for s in self.seed_list):
            raise ConfigError(f"compare seed_list: {list(self.seed_list)} must be distinct integers >= 0")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"compare steps: {self.steps} is not allowed; expected an integer >= 1 (or none)")
        if self.instruction_following is not None and self.instruction_following < 0:
            raise ConfigError(f"compare instruction_following: {self.instruction_following} must be >= 0")
        if self.judge != "rule" and self.judge_backend == "openai" and not self.judge_url:
            raise ConfigError("compare: judge backend openai needs the judge's URL (--judge-url)")

    @property
    def run_seeds(self) -> tuple[int, ...]:
        return self.seed_list or tuple(range(self.seeds))


# ----------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Summary:
    """A column's figure over a config's seeds: the mean and a 95 % Student-t interval."""

    values: tuple[float, ...]  # one per seed that measured it
    share: bool = True  # shown in %
    signed: bool = False  # a difference of shares: in [-1, 1], in points with its sign

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def interval(self) -> tuple[float, float] | None:
        """None where undefined (fewer than two seeds)."""
        if self.n < 2:
            return None
        from scipy.stats import t

        half = float(t.ppf(0.975, self.n - 1)) * statistics.stdev(self.values) / math.sqrt(self.n)
        if self.signed:
            return max(-1.0, self.mean - half), min(1.0, self.mean + half)
        if self.share:  # a share cannot leave [0, 1], however wide few seeds make the interval
            return max(0.0, self.mean - half), min(1.0, self.mean + half)
        return self.mean - half, self.mean + half

    def as_dict(self) -> dict[str, object]:
        low, high = self.interval or (None, None)
        return {
            "mean": None if not self.n else self.mean,
            "low": low,
            "high": high,
            "n": self.n,
            "values": list(self.values),
        }

    def __str__(self) -> str:
        if not self.n:
            return "n/a"
        shown = (lambda v: f"{100 * v:.1f}") if self.share else (lambda v: f"{v:.4g}")
        unit = "%" if self.share else ""
        if self.signed:
            shown, unit = (lambda v: f"{100 * v:+.1f}"), " pts"
        interval = self.interval
        if interval is None:
            return f"{shown(self.mean)}{unit} (n=1, interval undefined)"
        return f"{shown(self.mean)}{unit} [{shown(interval[0])}, {shown(interval[1])}] (n={self.n})"


def summarise_seeds(values: Sequence[float | None], share: bool = True, signed: bool = False) -> Summary:
    """The summary of per-seed values; a seed without a value (None, nan: not measured, or no
    judged item) is left out, never counted as zero. ``signed``: differences of shares."""
    return Summary(tuple(float(v) for v in values if v is not None and not math.isnan(v)), share, signed)


# ----------------------------------------------------------------------------- runs


def run_config(entry: Entry, seed: int, cc: CompareConfig) -> TrainConfig:
    """The derived config of one run: the entry's file, the shared then its own overrides, then
    the run's seed, folder and (where given) budget."""
    path = find_config(entry.config)
    if not path.is_file():
        raise ConfigError(f"compare: {entry.config}: no such config file or shipped recipe")
    mine = [f"run.seed={seed}", f"run.out_dir={run_folder(cc, entry, seed)}"]
    mine += [f"run.steps={cc.steps}"] if cc.steps is not None else []
    return load_config(path, [*cc.overrides, *entry.overrides, *mine])


def run_folder(cc: CompareConfig, entry: Entry, seed: int) -> Path:
    from algorithms.evaluation.evaluate import model_folders

    return Path(cc.out) / model_folders([entry.name])[0] / f"seed_{seed}"


def run_state(cfg: TrainConfig) -> str:
    """ "finished" (final/ present, same config), "interrupted" (same config, no final/) or "new";
    a ConfigError when the folder holds a run of another config."""
    folder = Path(cfg.run.out_dir)
    saved_path = folder / "config.yaml"
    if not saved_path.exists():
        return "new"
    try:
        saved = load_config(saved_path)
    except ConfigError as error:
        raise ConfigError(f"{folder}: its config.yaml does not load ({error}); use another --out") from None
    changed = {k: v for k, v in config_changes(saved, cfg).items() if k not in RESUME_MAY_CHANGE}
    if changed:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(f"{folder} holds a run of another config ({listed}); use another --out or remove it")
    return "finished" if (folder / "final").is_dir() else "interrupted"


def final_model(run: Path, role: str) -> str:
    """The run's exported final policy of ``role`` (the shared policy of a self-play run)."""
    from algorithms.training.checkpoints import SHARED_LEARNER

    for name in (role, SHARED_LEARNER):
        if (run / "final" / name).is_dir():
            return str(run / "final" / name)
    raise FileNotFoundError(f"{run}/final has no {role} (nor a shared policy); the run did not finish")


def _digest(settings: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def part(
    run: Path, name: str, settings: Mapping[str, object], measure: Callable[[Path], dict[str, float | None]]
) -> dict[str, float | None]:
    """A run's measurement ``name`` under ``settings``: read back from its result.json when that
    exists, else measured (``measure`` gets the part's folder) and saved with its wall time."""
    folder = run / PARTS / f"{name}-{_digest(settings)}"
    result = folder / "result.json"
    if result.exists():
        figures: dict[str, float | None] = json.loads(result.read_text(encoding="utf-8"))["figures"]
        return figures
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    figures = measure(folder)
    body = {"settings": settings, "figures": figures, "wall_s": round(time.perf_counter() - started, 1)}
    result.write_text(json.dumps(body, indent=2, default=str), encoding="utf-8")
    return figures


def _value(rate: object) -> float | None:
    value = getattr(rate, "value", None)
    return None if value is None or math.isnan(value) else float(value)


# ----------------------------------------------------------------------------- the comparison


@dataclass
class Comparison:
    labels: tuple[str, ...]
    seeds: tuple[int, ...]
    columns: tuple[str, ...]
    rows: dict[str, dict[str, Summary]]  # label -> column -> summary
    per_run: dict[str, dict[int, dict[str, float | None]]]  # label -> seed -> column -> value
    folder: Path
    settings: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "settings": self.settings,
            "seeds": list(self.seeds),
            "columns": list(self.columns),
            "rows": [
                {"config": label, **{c: self.rows[label][c].as_dict() for c in self.columns}} for label in self.labels
            ],
            "runs": {label: {str(s): v for s, v in runs.items()} for label, runs in self.per_run.items()},
        }


def _judge(cc: CompareConfig) -> Judge:
    from advgame_env import LLMJudge, RuleJudge

    if cc.judge == "rule":
        return RuleJudge()
    from agents.backends import build_backend

    return LLMJudge(build_backend(cc.judge_backend, cc.judge, cc.judge_url))


def _hf(model: str) -> GenerationBackend:
    from agents.backends import build_backend

    backend: GenerationBackend = build_backend("hf", model)
    return backend


def _measure_run(
    cfg: TrainConfig, cc: CompareConfig, judge: Judge, log: Callable[[str], None]
) -> dict[str, float | None]:
    """Every per-run column of one finished run (utility figures under their own names)."""
    from algorithms.evaluation.evaluate import evaluate_models
    from algorithms.evaluation.exploit import ExploitConfig, exploit
    from algorithms.evaluation.heldout import attacker_rows, heldout
    from algorithms.evaluation.utility import plan_from_options
    from algorithms.training.run_setup import start_model

    run = Path(cfg.run.out_dir)
    figures: dict[str, float | None] = {}
    reference = start_model(cfg, "defender") if cc.win_rate else None
    heldout_settings = {
        "eval_prompts": cc.eval_prompts,
        "max_tokens": cc.max_tokens,
        "judge": cc.judge,
        "instruction_following": cc.instruction_following,
        "reference": reference,
    } | ({"instruction_tokens": cc.instruction_tokens} if cc.instruction_tokens is not None else {})

    def safety(folder: Path) -> dict[str, float | None]:
        plan = plan_from_options(cc.instruction_following, reference, instruction_tokens=cc.instruction_tokens)
        defender = final_model(run, "defender")
        evaluated, _ = evaluate_models(
            [("final defender", defender)], heldout(cc.eval_prompts), judge, _hf, folder, "held-out seeds",
            max_tokens=cc.max_tokens, plan=plan, log=log,
        )  # fmt: skip
        row = evaluated[0]
        out = {HARMFUL: _value(row.summary.get(HARMFUL)), BENIGN: _value(row.summary.get(BENIGN))}
        return out | {f"utility: {k}": (None if math.isnan(f.value) else f.value) for k, f in row.figures.items()}

    figures |= part(run, "heldout", heldout_settings, safety)
    if cc.attack_prompts:

        def attack(folder: Path) -> dict[str, float | None]:
            rows = attacker_rows(cfg, run, cc.attack_prompts, steps="last", judge=judge, folder=folder)
            final = rows[-1][1]
            return {
                ATTACK: _value(final.get("ASR (every sample)")),
                ATTACK_VALID: _value(final.get("ASR (valid attacks)")),
            }

        figures |= part(run, "attack", {"attack_prompts": cc.attack_prompts, "judge": cc.judge}, attack)
    if cc.exploit_budget:
        ec_settings = {"budget": cc.exploit_budget, "prompts": cc.exploit_prompts, "algorithm": cc.exploit_algorithm}

        def best_response(folder: Path) -> dict[str, float | None]:
            ec = ExploitConfig(
                side="attacker",
                frozen=final_model(run, "defender"),
                budget=cc.exploit_budget,
                seeds=cc.exploit_prompts,
                algorithm=cc.exploit_algorithm,
                config=str(run / "config.yaml"),  # the run's own game, judge, budgets and model
                overrides=("run.progress=false", "run.tensorboard=false"),
                out=str(folder / "run"),
            )
            result = exploit(ec, resume=True, log=log)
            gain = result.gain.value
            return {
                EXPLOIT: _value(result.final.asr),
                EXPLOIT_VALID: _value(result.final.asr_valid),
                EXPLOIT_GAIN: None if math.isnan(gain) else gain,
            }

        figures |= part(run, "exploit", ec_settings, best_response)
    return figures


def _attacker_templates(templates: TemplateSet) -> tuple[str, ...]:
    """The versions of the templates that set the attacker's task and format."""
    from algorithms.training.game_format import ATTACKER_TEMPLATES

    return tuple(templates.versions()[n] for n in ATTACKER_TEMPLATES)


def _crossplay(
    runs: Mapping[tuple[str, int], TrainConfig], cc: CompareConfig, judge: Judge, log: Callable[[str], None]
) -> dict[tuple[str, int], dict[str, float | None]]:
    """Every run's final attacker against every run's final defender; each run's two ratings."""
    from advgame_env import Game, GameConfig
    from advgame_env.roles import ATTACKER
    from algorithms.evaluation.crossplay import CrossPlayConfig, crossplay
    from algorithms.evaluation.heldout import heldout
    from algorithms.training.rollouts import prefills

    formats = {
        (c.game.attacker_think, prefills(c)[ATTACKER], _attacker_templates(c.game.templates)) for c in runs.values()
    }
    if len(formats) > 1:
        raise ConfigError(
            "compare: the configs' attackers answer in different formats (game.attacker_think, the prefill or "
            "the attacker's game.templates differ), so one cross-play cannot judge them alike; pass --crossplay-prompts 0"
        )
    think, prefill, _ = formats.pop()
    templates = next(iter(runs.values())).game.templates
    names = {(label, seed): f"{label} seed {seed}" for label, seed in runs}
    attackers = [(names[k], final_model(Path(c.run.out_dir), "attacker")) for k, c in runs.items()]
    defenders = [(names[k], final_model(Path(c.run.out_dir), "defender")) for k, c in runs.items()]
    config = CrossPlayConfig(seeds=cc.crossplay_prompts, max_tokens=cc.max_tokens, prefill=prefill)
    settings: dict[str, object] = {"members": attackers, "config": asdict(config), "judge": cc.judge}
    out = Path(cc.out) / f"crossplay-{_digest(settings)}"
    result: CrossPlay = crossplay(
        attackers,
        defenders,
        heldout(None),
        Game(judge, GameConfig(num_attacks=1, attacker_think=think, templates=templates)),
        _hf,
        out,
        config,
        settings={"judge": cc.judge},
        log=log,
    )
    meta = result.meta
    if meta is None:
        log(f"cross-play: meta-game not solved ({result.unsolved}); no ratings")
        return {k: {ATTACKER_RATING: None, DEFENDER_RATING: None} for k in runs}
    return {
        k: {ATTACKER_RATING: float(meta.attacker_ratings[i]), DEFENDER_RATING: float(meta.defender_ratings[i])}
        for i, k in enumerate(runs)
    }


def compare(cc: CompareConfig, *, log: Callable[[str], None] = print, on_item: OnItem | None = None) -> Comparison:
    """Train (or reuse) every config under every seed, measure each final pair alike, aggregate
    over seeds; writes comparison.md/.html/.json/.png in ``cc.out``. ``on_item(done, total)``
    after each run's final pair is measured (each measurement shows its own bar; training too);
    default: a bar over the runs."""
    from algorithms.training.algorithm import names
    from algorithms.training.trainer import train

    seeds = cc.run_seeds
    if cc.exploit_budget and cc.exploit_algorithm not in names():
        raise ConfigError(
            f"compare exploit_algorithm: {cc.exploit_algorithm!r} is not registered; registered: {', '.join(names())}"
        )
    if cc.instruction_following is not None:  # before hours of training: the utility extra is there
        from algorithms.evaluation.utility import plan_from_options

        try:
            plan_from_options(cc.instruction_following)
        except (ValueError, ImportError) as error:
            raise ConfigError(f"compare instruction_following: {error}") from None
    runs: dict[tuple[str, int], TrainConfig] = {}
    for entry in cc.configs:  # every config checked before anything trains
        for seed in seeds:
            cfg = run_config(entry, seed, cc)
            runs[entry.name, seed] = cfg
            run_state(cfg)
    log(f"{len(runs)} run(s) to train or reuse, then measure; the table will be {Path(cc.out) / 'comparison.md'}")
    walls: dict[str, float] = {}
    for (label, seed), cfg in runs.items():
        state = run_state(cfg)
        if state == "finished":
            log(f"{label}, seed {seed}: reusing the finished run in {cfg.run.out_dir}")
            continue
        log(f"{label}, seed {seed}: training {cfg.run.steps} steps in {cfg.run.out_dir} ({state})")
        started = time.perf_counter()
        train(cfg, resume=True)
        walls[f"{label} seed {seed} train"] = round(time.perf_counter() - started, 1)
    judge = _judge(cc)
    per_run: dict[str, dict[int, dict[str, float | None]]] = {e.name: {} for e in cc.configs}
    with items_done(len(runs), "compare: final pairs measured", on_item) as advance:
        for (label, seed), cfg in runs.items():
            log(f"{label}, seed {seed}: evaluating the final pair")
            per_run[label][seed] = _measure_run(cfg, cc, judge, log)
            advance(1)
    if cc.crossplay_prompts:
        for (label, seed), ratings in _crossplay(runs, cc, judge, log).items():
            per_run[label][seed] |= ratings
    utility = list(dict.fromkeys(k for r in per_run.values() for v in r.values() for k in v if k not in COLUMNS))
    columns = (*COLUMNS, *utility)
    rows = {
        label: {c: summarise_seeds([v.get(c) for v in runs_of.values()], signed=c in SIGNED) for c in columns}
        for label, runs_of in per_run.items()
    }
    settings = {k: v for k, v in asdict(cc).items() if k != "configs"} | {
        "configs": [asdict(e) | {"label": e.name} for e in cc.configs],
        "steps": {label: cfg.run.steps for (label, _), cfg in runs.items()},
        "wall_s (training this call)": walls,
    }
    result = Comparison(tuple(per_run), seeds, columns, rows, per_run, Path(cc.out), settings)
    write_comparison(result)
    return result


# ----------------------------------------------------------------------------- report


def write_comparison(result: Comparison) -> Path:
    """comparison.md (+ .html), comparison.json and comparison.png in the result's folder."""
    from algorithms.evaluation.evaluate import write_markdown
    from algorithms.evaluation.plots import seed_means

    folder = result.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.json").write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    s = result.settings
    lines = [
        "# Algorithms compared over seeds",
        "",
        f"Run seeds {list(result.seeds)}; training steps {s.get('steps')}; judge {s.get('judge')}. "
        f"Held-out evaluation on {s.get('eval_prompts')} requests (greedy, {s.get('max_tokens')} tokens); "
        f"the final attacker against the initial defender on {s.get('attack_prompts')} harmful requests; "
        f"best response of {s.get('exploit_budget')} steps ({s.get('exploit_algorithm')}) on "
        f"{s.get('exploit_prompts')} requests; cross-play on {s.get('crossplay_prompts')} requests (0: skipped).",
        "",
        "Each cell: the mean over seeds with its 95% Student-t interval and the number of seeds that "
        "measured it; n/a: not measured.",
        "",
        "| config | " + " | ".join(result.columns) + " |",
        "|---" * (len(result.columns) + 1) + "|",
    ]
    for label in result.labels:
        lines.append(f"| {label} | " + " | ".join(str(result.rows[label][c]) for c in result.columns) + " |")
    lines += [
        "",
        "Lower is better for harmful compliance, benign refusal and the best-response ASR and its gain over "
        "step 0 (the exploitability: what training a fresh attacker against the final defender added); "
        "higher is better for the attacker's success and ratings and for the defender rating (its safety "
        "against the attackers' meta-Nash mixture). Attack success is given over every sample (an invalid "
        "rewrite fails) and over valid attacks alone (what the rewrites achieve).",
    ]

    def spread(summary: Summary) -> tuple[float, float, float]:
        low, high = summary.interval or (math.nan, math.nan)
        return summary.mean, low, high

    dots = {
        label: [
            (float(h), float(b))
            for v in result.per_run[label].values()
            if (h := v.get(HARMFUL)) is not None and (b := v.get(BENIGN)) is not None
        ]
        for label in result.labels
    }
    picture = seed_means(
        dots,
        {label: (spread(result.rows[label][HARMFUL]), spread(result.rows[label][BENIGN])) for label in result.labels},
        folder / "comparison.png",
        "Safety vs over-refusal over seeds (mean, 95% t-interval)",
    )
    if picture is not None:
        lines += ["", "![safety vs over-refusal over seeds](comparison.png)"]
    lines += ["", "## Every run", "", "| config | seed | " + " | ".join(result.columns) + " |"]
    lines += ["|---|---" + "|---" * len(result.columns) + "|"]
    for label in result.labels:
        for seed, values in result.per_run[label].items():
            cells = [
                str(summarise_seeds([values.get(c)], signed=c in SIGNED)).removesuffix(" (n=1, interval undefined)")
                for c in result.columns
            ]
            lines.append(f"| {label} | {seed} | " + " | ".join(cells) + " |")
    return write_markdown(folder / "comparison.md", lines)
