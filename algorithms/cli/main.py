"""The ``advgame`` command line.

advgame demo [--quick]                    the CPU alignment demo: train, then the defender before/after
advgame play [--rounds N] [--model M]     play rounds with a model as both players, print them
advgame train --config C [--resume] [k=v] train both players (see configs/); k=v overrides the config
              [--allow-change KEY]        with --resume: a key that may differ from the run's config.yaml
advgame eval --model M [--suite S]        a defender's harmful compliance and over-refusal, with a report
advgame eval --run RUN [--steps 0,last]   the same for a run's start and checkpoints, one table
advgame plot RUN                          a run's training curves as a PNG
advgame redteam --attacker A --target T  the attacker against a target: ASR, successful attacks, diversity
advgame exploit --defender D --budget N   exploitability: a best-response attacker trained against a frozen
                [--attacker A]            defender (or a best-response defender against a frozen attacker)
advgame crossplay --attackers A.. --defenders D..  every attacker against every defender: matrix, meta-Nash
advgame compare --config A --config B --run-seeds 3  configs trained over seeds, final pairs measured
                [--steps N --exploit-budget K]        alike, one table of means with 95% t-intervals
advgame serve MODEL [vllm serve options]  an OpenAI-compatible vLLM server of a model
advgame serve --attacker PATH [--port N]  the trained attacker as a red-teaming tool's adversarial chat model
advgame serve --defender PATH [--port N]  the trained defender as a red-teaming tool's (plain chat) target
advgame export RUN_OR_FOLDER [--merged] OUT  a trained policy as a folder plain transformers/peft/vLLM load
advgame judge-audit --judge J [--against J2]  a judge's biases, master keys, injection, calibration, agreement

A mistake in what the user gave (a config, a seed/suite/SFT file, a damaged checkpoint or log,
an existing or missing run folder) is one line on stderr naming the file, line and key, and
exit status 2; a traceback means a bug.

Resuming: ``--resume`` continues from the newest checkpoint that loads (damaged newer ones are
named and set aside as ``step_N.corrupt``; a torn last line of metrics.jsonl is dropped). The
config must be the run's own: a changed key is refused, naming it with both values, except the
output-only keys (``config.RESUME_MAY_CHANGE``) and those given as ``--allow-change KEY``
(``run.steps`` to extend a run, which also stretches its learning-rate schedule). Each resume is
a line of RUN/resumes.jsonl: its checkpoint, what was skipped or repaired, what changed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

import tyro
from tyro.conf import FlagCreatePairsOff, OmitArgPrefixes, Positional, UseAppendAction, arg

from algorithms.config import BackendKind, JudgeConfig
from algorithms.evaluation.compare import CompareConfig
from algorithms.evaluation.crossplay import CrossPlayConfig
from algorithms.evaluation.exploit import ExploitConfig
from algorithms.evaluation.redteam import RedTeamConfig

if TYPE_CHECKING:
    from advgame_env.judge_probes import CalibrationPair
    from advgame_env.judges import Judge
    from advgame_env.seeds import Seed
    from agents.backends import Backend
    from algorithms.attacker_server import ChatService
    from algorithms.evaluation.evaluate import DefenderPlay
    from algorithms.evaluation.utility import UtilityPlan
    from algorithms.training.game_format import AttackerFormat

# Every command is a dataclass; tyro builds its flags (kebab-case, help from the field comments)
# and `main` calls its `run`. Options several commands share are dataclasses of their own; a
# library's settings (CompareConfig, ExploitConfig, RedTeamConfig, CrossPlayConfig) are nested
# whole, their flags and help written once, in the library.

# Every command that builds or loads a run or an algorithm takes it: a run trained with a plugin's
# algorithm names that algorithm in its config.yaml, so evaluating, exploiting, resuming or planning
# it needs the plugin again. `main` loads them before the command runs.
Plugins = Annotated[
    UseAppendAction[list[str]],
    arg(
        name="plugin",
        metavar="FILE_OR_MODULE",
        help="a .py file or module name that registers algorithms (@register): needed by every command "
        "that loads a config or run naming a plugin's algorithm",
    ),
]

# Flags that once meant something else: one line naming the new spelling, never a silent alias.
RENAMED: dict[str, dict[str, str]] = {
    "redteam": {"--seeds": "--suite FILE (the seeds attacked)"},
    "crossplay": {"--seeds": "--prompts N (requests of the suite)"},
    "exploit": {"--seeds": "--prompts N (held-out requests per curve point)"},
    "compare": {
        "--seeds": "--run-seeds N (training seeds 0 .. N-1)",
        # these counted held-out requests, never seeds of randomness
        "--eval-seeds": "--eval-prompts N (held-out requests the final defender answers)",
        "--attack-seeds": "--attack-prompts N (held-out harmful requests the final attacker rewrites)",
        "--exploit-seeds": "--exploit-prompts N (held-out requests per exploit curve point)",
        "--crossplay-seeds": "--crossplay-prompts N (requests of the cross-play)",
    },
    "demo": {
        "--attack-seeds": "--attack-prompts N (held-out harmful requests the attackers rewrite)",
        "--eval-size": "--eval-prompts N (held-out requests the defenders answer)",
    },
}


class Command(Protocol):
    def run(self) -> int: ...


class UsageError(Exception):
    """Options that do not go together: one line naming them, exit status 2."""


class SettingsError(UsageError):
    """A library config nested in a command refused the values its flags gave (its own check, run
    while tyro builds the command): one line, like every other user error, not tyro's error box."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command


def _need_url(kind: BackendKind, url: str | None, flag: str) -> None:
    """A server backend needs its URL: named by the flags the user gave (``flag``: "judge-", "")."""
    if kind == "openai" and not url:
        raise UsageError(f"--{flag}backend openai needs --{flag}url (e.g. http://127.0.0.1:8000/v1)")


def _think(think: bool, no_think: bool) -> bool | None:
    """``--think`` / ``--no-think``: the attacker's format when given, else None (as it was trained)."""
    if think and no_think:
        raise UsageError("--think and --no-think: give one")
    return True if think else False if no_think else None


def _check_models(kind: BackendKind, *names: str) -> None:
    """Local models exist before anything loads: a missing folder is one line, not a minute of hub
    retries after torch imports (a server backend's names are the server's to check)."""
    from agents.models import check_model

    if kind != "openai":
        for name in names:
            check_model(name)


def _endpoint(kind: BackendKind, model: str, url: str | None, flag: str) -> Backend:
    """``agents.build_backend``, with its missing-URL error named by the flags the user gave."""
    from agents.backends import build_backend

    _need_url(kind, url, flag)
    if kind != "openai":
        return build_backend(kind, model, url)
    try:  # several URLs joined by commas: replicas of one server (agents.replicas)
        return build_backend(kind, model, url)
    except ValueError as error:
        raise UsageError(f"--{flag}url: {error}") from None


@dataclass
class JudgeOptions:
    judge: str = "rule"  # rule (model-free) or a judge model
    judge_backend: BackendKind = "hf"
    judge_url: str | None = None  # OpenAI-compatible server of the judge (--judge-backend openai); replicas: a,b,...

    def check(self) -> None:
        """Before any model loads: a server judge needs its URL."""
        if self.judge != "rule":
            _need_url(self.judge_backend, self.judge_url, "judge-")
            _check_models(self.judge_backend, self.judge)

    def build(self) -> Judge:
        from advgame_env import LLMJudge, RuleJudge

        if self.judge == "rule":
            return RuleJudge()
        return LLMJudge(_endpoint(self.judge_backend, self.judge, self.judge_url, "judge-"))


@dataclass
class Demo:
    """The CPU alignment demo: AdvGame-DPO-MD on the bundled model (configs/cpu_demo.yaml, about 21 min on 2 idle cores with ADVGAME_THREADS=2),
    then one before/after table of the defender on held-out seeds and a report with pictures in RUN/eval,
    with the after defender's win rate against the before one (and instruction following on request).
    An interrupted demo resumes."""

    quick: bool = False  # configs/cpu_demo_quick.yaml: the pipeline in minutes
    config: str | None = None  # another demo config (e.g. configs/cpu_demo_llm_judge.yaml)
    eval_prompts: int | None = None  # held-out requests the defenders answer (default: all 169; quick: 24)
    eval_tokens: int = 64  # answer length when evaluating
    attack_prompts: int | None = None  # held-out harmful requests the attackers rewrite (0: skip; default 24, quick: 4)
    instruction_following: Annotated[int | None, arg(metavar="N")] = None
    """instruction following of both defenders on the bundled suite (322 prompts: the flag alone), or its first
    N prompts (it interleaves its 23 instruction types: 23 is one of each); default: off (all 322 add about half
    an hour on 2 cores), --quick: 23"""
    instruction_tokens: int = 256  # answer length of instruction following (its prompts ask for paragraphs)
    win_rate: bool = True
    """the helpfulness win rate of both defenders against the initial one on the held-out benign seeds, judged
    by the model-free judge (the initial defender's answers are reused: nothing more is generated)"""
    no_utility: bool = False  # measure no utility: neither instruction following nor the win rate
    plugin: Plugins = field(default_factory=list)
    overrides: Annotated[Positional[list[str]], arg(metavar="key=value")] = field(default_factory=list)
    """config overrides, e.g. run.out_dir=runs/x"""

    def run(self) -> int:
        from algorithms.cli.demo import DEMO, QUICK, print_table, run_demo
        from algorithms.config import ConfigError

        config = Path(self.config) if self.config else QUICK if self.quick else DEMO
        eval_prompts = self.eval_prompts if self.eval_prompts is not None else 24 if self.quick else None
        attack_prompts = self.attack_prompts if self.attack_prompts is not None else 4 if self.quick else 24
        try:
            plan = self.plan(config)
            evaluated, comparison = run_demo(
                config,
                self.overrides,
                eval_prompts=eval_prompts,
                eval_tokens=self.eval_tokens,
                attack_prompts=attack_prompts,
                plan=plan,
            )
        except (ConfigError, FileNotFoundError, ValueError, ImportError) as error:
            print(f"advgame demo: {error}", file=sys.stderr)
            return 2
        print_table(evaluated, comparison)
        return 0

    def plan(self, config: Path) -> UtilityPlan:
        """The utility measured beside safety, checked before training starts (a missing extra,
        a bad number); the win rate's reference is the run's initial defender."""
        import importlib.util

        from algorithms.cli.demo import QUICK_INSTRUCTIONS, demo_reference
        from algorithms.evaluation.utility import EXTRA, UtilityPlan, plan_from_options

        if self.no_utility:
            return UtilityPlan()
        prompts = self.instruction_following
        if prompts is None and self.quick:
            # --quick's default, unlike an asked-for --instruction-following, does without the extra
            if importlib.util.find_spec("if_verifiable") is not None:
                prompts = QUICK_INSTRUCTIONS
            else:
                print(f"advgame demo: no instruction following (pip install 'advgame[{EXTRA}]' for it)", flush=True)
        reference = demo_reference(config, self.overrides) if self.win_rate else None
        return plan_from_options(prompts, reference, instruction_tokens=self.instruction_tokens)


@dataclass
class Play:
    """Play a few rounds with a model as attacker and defender, print them."""

    model: str = "smollm2-135m-instruct"  # bundled name, local folder or hub id
    rounds: int = 2
    max_tokens: int = 160  # attacker budget; the defender gets twice this
    seed: int = 0
    think: Annotated[bool, FlagCreatePairsOff] = False  # the attacker writes <think> then <prompt>
    no_think: Annotated[bool, FlagCreatePairsOff] = False
    """the attacker writes <prompt> only (default for both: as an exported model was trained, else --think)"""

    def run(self) -> int:
        import advgame_env
        from agents import HFBackend, load_model
        from agents.policy import Policy

        _check_models("hf", self.model)
        from algorithms.training.game_format import attacker_format

        fmt = attacker_format([self.model], _think(self.think, self.no_think), None, command="play")
        print(f"loading {self.model} (the first run converts the bundled model once, ~1 minute)", flush=True)
        model, tokenizer = load_model(self.model)
        backend = HFBackend(model, tokenizer)
        attacker = Policy(backend, max_tokens=self.max_tokens, temperature=0.7, seed=self.seed, prefill=fmt.prefill)
        defender = Policy(backend, max_tokens=2 * self.max_tokens, temperature=0.7, seed=self.seed + 1)

        config = advgame_env.GameConfig(attacker_think=fmt.think)
        game = advgame_env.Game(advgame_env.RuleJudge(), config)
        seeds = advgame_env.bundled_seeds("heldout")
        # Every other round is direct (the seed goes straight to the defender): the untrained
        # attacker rarely keeps its strict format, and the demo should show the defender judged too.
        rounds = [
            advgame_env.Round(seeds[(self.seed + 37 * i) % len(seeds)], direct=i % 2 == 1) for i in range(self.rounds)
        ]
        # All rounds advance together: one batched generation per player, one judge call per phase.
        attacks = attacker.attack([game.attacker_observation(r) for r in rounds], game.config.num_attacks)
        game.attack(rounds, attacks)
        answers = defender.respond([game.defender_observation(r) for r in rounds], game.config.num_responses)
        game.respond(rounds, answers)
        for r in rounds:
            print(advgame_env.transcript(r), end="\n\n")
        return 0


@dataclass
class Train:
    """Train both players. Example: advgame train --config configs/cpu_smoke.yaml optim.lr=1e-5
    (the run config's keys, their defaults and allowed values are listed after the flags)"""

    config: str | None = None  # YAML run config (configs/); every key has a default
    # continue the run in run.out_dir from its newest intact checkpoint; the config must be the run's own
    resume: bool = False
    plugin: Plugins = field(default_factory=list)
    allow_change: Annotated[UseAppendAction[list[str]], arg(metavar="KEY[,KEY]")] = field(default_factory=list)
    """with --resume: a config key that may differ from the run's (e.g. run.steps to extend it); repeatable.
    Output-only keys (run.progress, run.tensorboard, run.wandb*, run.checkpoint_every, run.keep_checkpoints,
    run.validate_every) may always change; every change is recorded in RUN/resumes.jsonl"""
    overrides: Annotated[Positional[list[str]], arg(metavar="key=value")] = field(default_factory=list)
    """config overrides, e.g. run.steps=10"""

    def run(self) -> int:
        from algorithms.config import ConfigError, load_config
        from algorithms.training.judge_monitor import JudgeAlarm
        from algorithms.training.trainer import train

        try:
            cfg = load_config(self.config, self.overrides)
        except (ConfigError, FileNotFoundError) as error:
            print(f"advgame train: {error}", file=sys.stderr)
            return 2
        allowed = [key.strip() for given in self.allow_change for key in given.split(",") if key.strip()]
        if allowed and not self.resume:
            print("advgame train: --allow-change is for --resume", file=sys.stderr)
            return 2
        try:
            run_dir = train(cfg, resume=self.resume, allow_change=allowed)
        except JudgeAlarm as error:  # judge.audit.alarm.action: stop; the run folder holds its log
            print(f"advgame train: {error}", file=sys.stderr)
            return 1
        print(f"run folder: {run_dir} (metrics.jsonl, tensorboard/, checkpoints/, final/)")
        return 0


JudgeKind = Literal["rule", "llm", "wildguard", "ensemble"]


@dataclass
class JudgeAuditCommand:
    """How far a judge can be trusted: position and length bias, master-key replies, injection, calibration on
    hand-labelled pairs, agreement with a second judge; audit.md, audit.json and audit.png in --out.
    The judges are a run config's judge sections: --judge sets judge.kind, --against judge.audit.judge.kind,
    and key=value overrides set the rest. Example:
    advgame judge-audit --judge llm judge.mode=logprob --against rule --pairs 8 --injection 64"""

    judge: JudgeKind | None = None  # judge.kind (default: the config's, else rule)
    against: JudgeKind | None = None  # the second judge's kind (judge.audit.judge.kind); none: no agreement
    config: str | None = None  # a run config whose judge section is audited
    out: Path = Path("judge_audit")  # the report's folder
    pairs: int | None = None  # hand-labelled calibration pairs used (default: all 24)
    per_key: int = 4  # calibration pairs each master key meets
    injection: int | None = (
        None  # injection attempts (default: all 448; fewer: an even spread, every verdict family kept)
    )
    seed: int = 0
    plugin: Plugins = field(default_factory=list)
    overrides: Annotated[Positional[list[str]], arg(metavar="key=value")] = field(default_factory=list)
    """run-config overrides, e.g. judge.mode=logprob judge.audit.judge.model=PATH"""

    def run(self) -> int:
        from advgame_env import GameConfig
        from advgame_env.judge_probes import calibration_pairs
        from algorithms.config import ConfigError, load_config
        from algorithms.evaluation.judge_audit import audit, markdown, write
        from algorithms.training.run_setup import build_judge

        for flag, value in (("--pairs", self.pairs), ("--per-key", self.per_key), ("--injection", self.injection)):
            if value is not None and value < 1:
                raise UsageError(f"{flag} {value}: give at least 1")
        given = [f"judge.kind={self.judge}"] if self.judge else []
        given += [f"judge.audit.judge.kind={self.against}"] if self.against else []
        try:
            cfg = load_config(self.config, [*given, *self.overrides])
        except (ConfigError, FileNotFoundError) as error:
            print(f"advgame judge-audit: {error}", file=sys.stderr)
            return 2
        second = cfg.judge.audit.judge if cfg.judge.audit is not None else None
        # the audit plays no game: the judges are built for the game that asks least of them
        # (classification only), so a classifier-only judge (WildGuard) is audited on what it does
        cfg = replace(cfg, game=GameConfig(reward_rule="self_redteam", faithfulness_check=False))
        judge = build_judge(cfg)
        other = build_judge(cfg, second) if second is not None else None
        pairs = _balanced(calibration_pairs(), self.pairs)
        report = audit(
            judge,
            pairs,
            against=other,
            names=(_judge_name(cfg.judge), None if second is None else _judge_name(second)),
            per_key=self.per_key,
            injection_limit=self.injection,
            seed=self.seed,
            progress=lambda probe: print(f"judge-audit: {probe}", file=sys.stderr, flush=True),
        )
        write(report, self.out)
        print(markdown(report))
        print(f"report: {self.out}/audit.md, audit.json, audit.png")
        return 0


def _balanced(pairs: list[CalibrationPair], count: int | None) -> list[CalibrationPair]:
    """The first ``count`` pairs taking harmful and benign requests in turn, so a few keep both labels."""
    by_label = [[p for p in pairs if p.label is label] for label in {p.label: None for p in pairs}]
    mixed = [p for group in itertools.zip_longest(*by_label) for p in group if p is not None]
    return mixed[:count]


def _judge_name(j: JudgeConfig) -> str:
    if j.kind == "rule":
        return "rule"
    if j.kind == "ensemble":
        return f"ensemble({', '.join(_judge_name(m) for m in j.members)})"
    return f"{j.kind}:{j.model} ({j.mode}{', both orders' if j.both_orders else ''})"


@dataclass
class Eval:
    """Harmful compliance and over-refusal of a model over a suite: greedy answers, judged;
    writes report.md, summary.json, results.jsonl."""

    model: UseAppendAction[list[str]] = field(default_factory=list)
    """bundled name, folder (a training export too) or hub id; repeat to compare"""
    run_dir: Annotated[str | None, arg(name="run")] = None
    """a training run folder: evaluate its start and its checkpoints (see --steps)"""
    steps: str = "all"  # with --run: all, or steps and last, e.g. 0,last
    role: Literal["defender", "attacker"] = "defender"  # with --run
    which: Literal["learner", "ema"] = "learner"  # with --run: weights to evaluate
    suite: str = "bundled"  # bundled (held-out seeds), a file, or FORMAT:file
    limit: Annotated[int | None, arg(metavar="N")] = None  # the suite's first N requests, half harmful, half benign
    backend: BackendKind = "hf"
    url: str | None = None  # OpenAI-compatible server of the model (--backend openai)
    judging: OmitArgPrefixes[JudgeOptions] = field(default_factory=JudgeOptions)
    max_tokens: int = 256
    # a defender whose export records a think format is asked in it (default); these override the record
    think: Annotated[bool, FlagCreatePairsOff] = False  # ask every defender to think, then answer in <answer>
    no_think: Annotated[bool, FlagCreatePairsOff] = False  # ask the request as it is; judge the whole reply
    out: str | None = None  # report folder (default runs/eval, or RUN/eval with --run)
    utility: Annotated[UseAppendAction[list[str]], arg(metavar="MODEL=SCORE")] = field(default_factory=list)
    """a capability score measured elsewhere (e.g. a benchmark accuracy), for the safety-vs-utility panel"""
    instruction_following: Annotated[int | None, arg(metavar="N")] = None
    """IFEval-style instruction following on the bundled suite (322 prompts), or its first N prompts
    (the flag alone: all of them)"""
    instruction_tokens: Annotated[int | None, arg(metavar="N")] = None  # their answer length (default: --max-tokens)
    win_rate: bool = False  # helpfulness win rate on the suite's benign requests against --reference, judged by --judge
    reference: Annotated[str | None, arg(metavar="MODEL")] = None
    """the win rate's reference model (implies --win-rate; default: the run's initial model, or the bundled one)"""
    lm_eval: Annotated[str | None, arg(metavar="TASKS")] = None
    """lm-evaluation-harness tasks (names or task YAML paths, comma separated), run offline on each model folder
    (as the harness's vllm model with --backend vllm, else its hf model)"""
    lm_eval_limit: Annotated[int | None, arg(metavar="N")] = None  # with --lm-eval: at most N documents per task
    plugin: Plugins = field(default_factory=list)

    def run(self) -> int:
        _check_models(self.backend, *self.model)  # before torch imports: a missing folder fails in a second
        from advgame_env import SeedFormatError
        from advgame_env.suites import load_suite
        from algorithms.evaluation.evaluate import checkpoint_models, evaluate_models
        from algorithms.evaluation.harness import HarnessError
        from algorithms.evaluation.utility import plan_from_options

        if not self.model and not self.run_dir:
            raise UsageError("give --model M (repeatable) or --run RUN_DIR")
        run = Path(self.run_dir) if self.run_dir else None
        out = Path(self.out or (run / "eval" if run else "runs/eval"))
        try:
            seeds = _limited(load_suite(self.suite), self.limit)
            models = [(m, m) for m in self.model]
            if run:
                models += checkpoint_models(run, self.role, self.which, self.steps)
            plays, warnings = _defender_plays(models, _think(self.think, self.no_think))
            if self.role != "defender":  # an attacker checkpoint answers requests as they are
                plays, warnings = {}, []
            for warning in warnings:
                print(f"advgame eval: warning: {warning}", file=sys.stderr, flush=True)
        except (SeedFormatError, FileNotFoundError, ValueError) as error:
            raise UsageError(str(error)) from None
        try:
            utility = _utilities(self.utility, [name for name, _ in models])
            reference = _reference(self, run)
            # the harness runs each model folder itself: as vLLM's model with --backend vllm, else as HF's
            harness: Literal["hf", "vllm"] = "vllm" if self.backend == "vllm" else "hf"
            plan = plan_from_options(
                self.instruction_following,
                reference,
                self.lm_eval,
                self.lm_eval_limit,
                instruction_tokens=self.instruction_tokens,
                lm_eval_backend=harness,
            )
        except (ValueError, FileNotFoundError, ImportError) as error:
            raise UsageError(str(error)) from None
        _need_url(self.backend, self.url, "")  # before the judge's model loads
        self.judging.check()
        judge = self.judging.build()
        try:
            evaluated, comparison = evaluate_models(
                models,
                seeds,
                judge,
                lambda model: _endpoint(self.backend, model, self.url, ""),
                out,
                self.suite,
                run=run,
                max_tokens=self.max_tokens,
                utility=utility,
                plan=plan,
                plays=plays,
            )
        except HarnessError as error:
            print(f"advgame eval: {error}", file=sys.stderr)
            return 1
        for row in evaluated:
            print(f"\n{row.name}: {row.report}")
            for measure, value in [*row.summary.items(), *row.figures.items()]:
                print(f"  {measure:34s} {value}")
        if comparison:
            print(f"\ncomparison: {comparison}")
        return 0


def _defender_plays(models: Sequence[tuple[str, str]], think: bool | None) -> tuple[dict[str, DefenderPlay], list[str]]:
    """How eval asks each defender: a training export that records a defender trained to think or
    with a prefill (advgame_format.json) is asked in that format (its template set, think block,
    prefill) and only its public answer judged; any other model the request as it is. ``think``
    (--think/--no-think) wins, with one warning line per recorded model it overrides."""
    from advgame_env import GameConfig
    from algorithms.evaluation.evaluate import DefenderPlay
    from algorithms.training.game_format import read_format, recorded_game

    plays: dict[str, DefenderPlay] = {}
    warnings = []
    for name, model in models:
        fmt = read_format(model)
        if fmt is not None and think is not None and think != fmt.defender_think:
            flag, trained = ("--think", "without") if think else ("--no-think", "with")
            warnings.append(f"{flag} overrides {name}, trained {trained} the think block (its advgame_format.json)")
        game = recorded_game(fmt, GameConfig()) if fmt is not None else GameConfig()
        prefill = fmt.defender_prefill if fmt is not None else ""
        asks_think = think if think is not None else game.defender_think
        if asks_think or (think is None and prefill):
            plays[model] = DefenderPlay(replace(game, defender_think=asks_think), prefill)
    return plays, warnings


def _limited(seeds: list[Seed], limit: int | None) -> list[Seed]:
    """``--limit N``: a small run of a suite that still has both labels (``first_seeds``)."""
    from advgame_env.suites import first_seeds

    if limit is None:
        return seeds
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, not {limit}")
    return first_seeds(seeds, limit)


def _reference(args: Eval, run: Path | None) -> str | None:
    """The win rate's reference: --reference, else the run's initial model, else the bundled model."""
    if not args.win_rate and not args.reference:
        return None
    if args.reference:
        return str(args.reference)
    if run is not None:
        from algorithms.config import load_config
        from algorithms.training.run_setup import start_model

        return str(start_model(load_config(run / "config.yaml"), args.role))
    from agents.models import DEFAULT_MODEL

    return DEFAULT_MODEL


def _utilities(given: Sequence[str], names: list[str]) -> dict[str, float]:
    """``--utility NAME=SCORE`` pairs, each naming an evaluated model."""
    out = {}
    for pair in given:
        name, _, score = pair.rpartition("=")
        if name not in names:
            raise ValueError(f"--utility {pair!r}: {name!r} is not an evaluated model ({', '.join(names)})")
        try:
            out[name] = float(score)
        except ValueError:
            raise ValueError(f"--utility {pair!r}: {score!r} is not a number") from None
    return out


@dataclass
class Plot:
    """Training curves of a run folder as a PNG."""

    run_dir: Annotated[Positional[str], arg(metavar="RUN")]  # run folder (holds metrics.jsonl)
    out: str | None = None  # PNG path (default RUN/training.png)

    def run(self) -> int:
        from algorithms.evaluation.plots import training_curves
        from algorithms.training.runlog import read_metrics

        run = Path(self.run_dir)
        if not (run / "metrics.jsonl").exists():
            raise UsageError(f"{run} has no metrics.jsonl (is it a training run folder?)")
        path = training_curves(read_metrics(run), Path(self.out or run / "training.png"), run.name)
        print(f"training curves: {path}" if path else "advgame plot: nothing plottable was logged yet")
        return 0 if path else 1


@dataclass
class RedTeam:
    """A trained attacker against a target model: ASR by category, successful attacks, diversity.
    The attacker rewrites each seed several times, the target answers, the judge scores; results.jsonl
    grows batch by batch (a rerun with the same --out resumes), then report.md and summary.json."""

    attacker: str  # bundled name, folder (a trained attacker too) or hub id; "crescendo": the scripted baseline
    target: str  # model to attack (the served model's name with openai)
    attacker_backend: BackendKind = "hf"
    attacker_url: str | None = None  # OpenAI-compatible server of the attacker
    target_backend: BackendKind = "hf"
    target_url: str | None = None  # OpenAI-compatible server of the target, e.g. http://127.0.0.1:8000
    suite: Annotated[str, arg(metavar="FILE")] = "bundled"  # bundled (held-out seeds), a file, or FORMAT:file
    limit: Annotated[int | None, arg(metavar="N")] = None
    """the first N seeds attacked (harmful ones; with --include-benign half harmful, half benign); a rerun
    with a larger N in the same --out resumes and plays the rest"""
    judging: OmitArgPrefixes[JudgeOptions] = field(default_factory=JudgeOptions)
    out: str = "runs/redteam"
    redteam: OmitArgPrefixes[RedTeamConfig] = field(default_factory=RedTeamConfig)
    temperature: float = 1.0  # the attacker's sampling temperature
    think: Annotated[bool, FlagCreatePairsOff] = False  # the attacker writes <think> then <prompt>
    no_think: Annotated[bool, FlagCreatePairsOff] = False
    """the attacker writes <prompt> only (default for both: as a trained attacker's export records, else --think)"""
    prefill: str | None = None  # opening of the attacker's turn, e.g. '<think>' (default: as trained, else none)
    retry_errors: bool = False  # play the items recorded with an error again
    no_embeddings: bool = False  # no SBERT diversity in the report

    def attacker_format(self) -> AttackerFormat:
        from algorithms.training.game_format import attacker_format

        return attacker_format([self.attacker], _think(self.think, self.no_think), self.prefill, command="redteam")

    def settings(self, fmt: AttackerFormat | None = None) -> dict[str, object]:
        """What a resumed run must share with the first one (URLs, batch size and retries may change)."""
        cfg, fmt = self.redteam, fmt or self.attacker_format()
        return {
            "attacker": self.attacker,
            "target": self.target,
            "seeds": self.suite,  # the key of the first runs' settings.json, read when they resume
            "judge": self.judging.judge,
            "samples": cfg.samples,
            "max_tokens": cfg.target_max_tokens,
            "temperature": self.temperature,
            "seed": cfg.seed,
            "no_think": not fmt.think,
            "prefill": fmt.prefill,
            "no_baseline": not cfg.baseline,
            "include_benign": cfg.include_benign,
        } | fmt.settings()

    def run(self) -> int:
        from advgame_env import Game, Label, SeedFormatError
        from advgame_env.roles import ATTACKER
        from advgame_env.suites import load_suite
        from agents.policy import Policy
        from algorithms.evaluation.redteam import redteam, summarise, write_report

        try:
            seeds = load_suite(self.suite)
        except (SeedFormatError, FileNotFoundError) as error:
            raise UsageError(str(error)) from None
        if not self.redteam.include_benign:  # benign seeds are not attacked: N counts harmful ones
            seeds = [seed for seed in seeds if seed.label is Label.HARMFUL]
        seeds = _limited(seeds, self.limit)
        cfg = self.redteam
        if cfg.turns > 1 or self.attacker == "crescendo":
            return self._conversations(seeds)
        _need_url(self.attacker_backend, self.attacker_url, "attacker-")  # before any model loads
        _need_url(self.target_backend, self.target_url, "target-")
        self.judging.check()
        _check_models(self.attacker_backend, self.attacker)
        _check_models(self.target_backend, self.target)
        fmt = self.attacker_format()
        attacker_side = (self.attacker_backend, self.attacker, self.attacker_url)
        attacker_backend = _endpoint(*attacker_side, "attacker-")
        target_side = (self.target_backend, self.target, self.target_url)
        # one copy in memory when both sides are the same model
        target = attacker_backend if target_side == attacker_side else _endpoint(*target_side, "target-")
        game = Game(self.judging.build(), fmt.game(num_attacks=1))  # the recorded attacker templates
        system = game.config.system_message(ATTACKER)  # the template set's (Self-RedTeam's attacker has one)
        policy = Policy(
            attacker_backend, cfg.target_max_tokens, self.temperature, seed=cfg.seed, prefill=fmt.prefill, system=system
        )
        out = Path(self.out)
        records = redteam(
            policy, target, game, seeds, out, cfg, settings=self.settings(fmt), retry_errors=self.retry_errors
        )
        embedder = None
        if not self.no_embeddings:
            try:
                from agents.embeddings import SentenceEmbedder

                embedder = SentenceEmbedder()
            except Exception as error:  # optional: the report goes on with self-BLEU only
                print(f"no SBERT diversity ({error})")
        report = write_report(records, out, f"{self.attacker} against {self.target} on {self.suite}", embedder)
        for name, value in summarise(records).items():
            print(f"{name:46s} {value}")
        print(f"report: {report}")
        return 0

    def _conversations(self, seeds: list[Seed]) -> int:
        """--turns K (or the scripted attacker): conversations, turn by turn (redteam_turns.py)."""
        from advgame_env import GameConfig
        from advgame_env.conversation import ConversationGame
        from advgame_env.crescendo import CrescendoAttacker
        from agents.policy import Policy
        from algorithms.evaluation.redteam import summarise, write_report
        from algorithms.evaluation.redteam_turns import redteam_conversations

        cfg, scripted = self.redteam, self.attacker == "crescendo"
        if not scripted:
            _need_url(self.attacker_backend, self.attacker_url, "attacker-")
        _need_url(self.target_backend, self.target_url, "target-")
        self.judging.check()
        if not scripted:
            _check_models(self.attacker_backend, self.attacker)
        _check_models(self.target_backend, self.target)
        fmt = self.attacker_format() if not scripted else None
        think = fmt.think if fmt is not None else True
        target = _endpoint(self.target_backend, self.target, self.target_url, "target-")
        attacker: Policy | CrescendoAttacker = CrescendoAttacker()
        if fmt is not None:
            backend = _endpoint(self.attacker_backend, self.attacker, self.attacker_url, "attacker-")
            attacker = Policy(backend, cfg.target_max_tokens, self.temperature, seed=cfg.seed, prefill=fmt.prefill)
        config = GameConfig(num_attacks=1, num_responses=1, attacker_think=think, turns=cfg.turns)
        game = ConversationGame(self.judging.build(), config)
        # what a resumed run must share with the first (the scripted attacker has no format of its own)
        if fmt is not None:
            settings = {**self.settings(fmt), "turns": cfg.turns}
        else:
            settings = {"attacker": "crescendo", "target": self.target, "suite": self.suite, "turns": cfg.turns}
            settings |= {"judge": self.judging.judge, "samples": cfg.samples, "include_benign": cfg.include_benign}
        out = Path(self.out)
        records = redteam_conversations(
            attacker, target, game, seeds, out, cfg, settings=settings, retry_errors=self.retry_errors
        )
        title = f"{self.attacker} against {self.target} on {self.suite}, up to {cfg.turns} turns"
        report = write_report(records, out, title)
        for name, value in summarise(records).items():
            print(f"{name:46s} {value}")
        print(f"report: {report}")
        return 0


@dataclass
class Exploit:
    """Exploitability by best response: freeze one player, train a fresh best response of the other
    (the game's rules and judge, any registered algorithm) for --budget steps, and report the attack
    success on held-out seeds over the budget (a curve, over every sample and over valid attacks),
    the best response's gain over its step-0 rate (the exploitability of a frozen defender; for a
    frozen attacker, the lower its rate falls the more exploitable it is) and the over-refusal it
    induces. The run is an ordinary training run in
    --out (resume with --resume); exploit.json, report.md and exploit.png go beside it."""

    defender: str | None = None
    """the frozen defender (a model folder; under LoRA an adapter folder of the config's model, e.g.
    runs/x/final/defender; or the bundled model's name): a best-response attacker is trained against it"""
    attacker: str | None = None
    """the frozen attacker (as --defender): a best-response defender is trained against it"""
    attacker_init: str | None = None  # with --defender: where the best-response attacker starts (default: the base)
    defender_init: str | None = None  # with --attacker: where the best-response defender starts (default: the base)
    exploit: OmitArgPrefixes[ExploitConfig] = field(default_factory=ExploitConfig)
    """the best response's budget and curve, its algorithm and base recipe"""
    resume: bool = False  # continue the run in --out (training and each curve point)
    plugin: Plugins = field(default_factory=list)

    def settings(self) -> ExploitConfig:
        if (self.defender is None) == (self.attacker is None):
            raise UsageError("give one frozen player: --defender D (a best-response attacker) or --attacker A")
        if self.defender is not None and self.defender_init is not None:
            raise UsageError(
                "--defender-init is for --attacker (the defender learns); with --defender use --attacker-init"
            )
        if self.attacker is not None and self.attacker_init is not None:
            raise UsageError(
                "--attacker-init is for --defender (the attacker learns); with --attacker use --defender-init"
            )
        side: Literal["attacker", "defender"] = "attacker" if self.defender is not None else "defender"
        return replace(
            self.exploit,
            side=side,
            frozen=self.defender if self.defender is not None else self.attacker,
            init=self.attacker_init if side == "attacker" else self.defender_init,
        )

    def run(self) -> int:
        import torch.distributed

        from algorithms.evaluation.exploit import exploit

        result = exploit(self.settings(), resume=self.resume)
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return 0  # a sharded run's other processes: the main one reports
        final = result.final
        print(f"\nbest response: {result.side}, {len(result.curve)} curve points, final step {final.step}")
        for point in result.curve:
            print(
                f"  step {point.step:4d}  ASR {point.asr}  ASR (valid attacks) {point.asr_valid}  "
                f"induced refusal {point.induced_refusal}"
            )
        print(f"ASR gain over step 0: {result.gain} (valid attacks: {result.gain_valid})")
        print(f"report: {result.folder / 'report.md'}")
        return 0


@dataclass
class CrossPlay:
    """Every attacker against every defender on the same held-out seeds: a matrix of attack success and
    of induced over-refusal with 95% intervals, a heatmap, and the zero-sum meta-game's Nash mixture over
    each side with Nash-averaged ratings. Writes crossplay.json, report.md and heatmap.png in --out; the
    records grow batch by batch (a rerun with the same --out resumes)."""

    attackers: list[str] = field(default_factory=list)  # bundled names, folders (trained exports too) or hub ids
    defenders: list[str] = field(default_factory=list)
    run_dir: Annotated[UseAppendAction[list[str]], arg(name="run", metavar="RUN")] = field(default_factory=list)
    """a training run folder: its attacker and defender at the start and at the checkpoints of --steps
    join the two sides"""
    steps: str = "0,last"  # with --run: all, or steps and last, e.g. 0,last
    which: Literal["learner", "ema"] = "learner"  # with --run: weights to play
    backend: BackendKind = "hf"  # of every member
    url: str | None = None  # OpenAI-compatible server of the members (--backend openai; members are served names)
    suite: str = "bundled"  # bundled (held-out seeds), a file, or FORMAT:file
    judging: OmitArgPrefixes[JudgeOptions] = field(default_factory=JudgeOptions)
    crossplay: OmitArgPrefixes[CrossPlayConfig] = field(default_factory=CrossPlayConfig)
    think: Annotated[bool, FlagCreatePairsOff] = False  # the attackers write <think> then <prompt>
    no_think: Annotated[bool, FlagCreatePairsOff] = False
    """the attackers write <prompt> only (default for both: as their exports record, else --think)"""
    out: str = "runs/crossplay"
    retry_errors: bool = False  # play the records saved with an error again
    plugin: Plugins = field(default_factory=list)

    def run(self) -> int:
        from advgame_env import Game, SeedFormatError
        from advgame_env.suites import load_suite
        from algorithms.evaluation.crossplay import check_sides, crossplay, members

        try:
            seeds = load_suite(self.suite)
        except (SeedFormatError, FileNotFoundError) as error:
            raise UsageError(str(error)) from None
        _need_url(self.backend, self.url, "")  # before any model loads
        self.judging.check()
        local, runs = self.backend != "openai", [Path(r) for r in self.run_dir]
        attackers = members(self.attackers, runs=runs, role="attacker", steps=self.steps, which=self.which, local=local)
        defenders = members(self.defenders, runs=runs, role="defender", steps=self.steps, which=self.which, local=local)
        check_sides(attackers, defenders)
        from algorithms.training.game_format import attacker_format

        given = _think(self.think, self.no_think)
        # a --prefill given wins; none (the default "") takes the attackers' recorded one
        fmt = attacker_format(
            [model for _, model in attackers], given, self.crossplay.prefill or None, command="crossplay"
        )
        played = replace(self.crossplay, prefill=fmt.prefill)
        result = crossplay(
            attackers,
            defenders,
            seeds,
            Game(self.judging.build(), fmt.game(num_attacks=1)),  # the recorded attacker templates
            lambda model: _endpoint(self.backend, model, self.url, ""),
            Path(self.out),
            played,
            settings={"suite": self.suite, "judge": self.judging.judge, "backend": self.backend} | fmt.settings(),
            retry_errors=self.retry_errors,
        )
        for i, name in enumerate(result.attackers):
            cells = ", ".join(f"{d} {r}" for d, r in zip(result.defenders, result.success[i], strict=True))
            print(f"attack success of {name}: {cells}")
            valid = ", ".join(f"{d} {r}" for d, r in zip(result.defenders, result.success_valid[i], strict=True))
            print(f"attack success of {name} over valid attacks: {valid}")
        if result.meta is None:
            print(f"meta-game not solved: {result.unsolved}")
        else:
            meta = result.meta
            print(f"meta-Nash value {100 * meta.value:.1f}%")
            print(
                "attackers' mixture: "
                + ", ".join(f"{n} {w:.3f}" for n, w in zip(result.attackers, meta.attacker_mixture, strict=True))
            )
            print(
                "defenders' mixture: "
                + ", ".join(f"{n} {w:.3f}" for n, w in zip(result.defenders, meta.defender_mixture, strict=True))
            )
        print(f"report: {Path(self.out) / 'report.md'}")
        return 0


@dataclass
class Compare:
    """Configs compared over seeds: each --config trained under each seed in OUT/LABEL/seed_S (a
    finished run is reused, an interrupted one resumed), each final pair measured alike (held-out
    harmful compliance and benign refusal, the attacker against the initial defender, best-response
    exploitability, cross-play ratings, utility where asked), one table of the mean and 95%
    Student-t interval over seeds: OUT/comparison.md (+ .html, .json, .png). Each measurement is saved
    per run, so a rerun skips what is done."""

    compare: OmitArgPrefixes[CompareConfig]  # no default instance: a comparison needs a --config
    """the compared configs (at least one), the run seeds, and the measurements' budgets and judge"""
    plugin: Plugins = field(default_factory=list)

    def run(self) -> int:
        from algorithms.evaluation.compare import compare

        c = self.compare
        JudgeOptions(c.judge, c.judge_backend, c.judge_url).check()
        result = compare(c)
        for label in result.labels:
            print(f"\n{label}:")
            for column in result.columns:
                print(f"  {column:38s} {result.rows[label][column]}")
        print(f"\ntable: {result.folder / 'comparison.md'}")
        return 0


@dataclass
class Serve:
    """An OpenAI-compatible vLLM server of a model (bundled name, folder or hub id): runs
    `vllm serve MODEL [options]` (CPU build included); every vllm serve option works."""

    model: Positional[str]
    vllm_args: Positional[list[str]] = field(default_factory=list)  # options passed to vllm serve

    def run(self) -> int:
        from agents.vllm_serve import main as serve

        return serve([self.model, *self.vllm_args])


@dataclass(kw_only=True)
class _ServeOptions:
    """What serving either player takes besides its folder."""

    host: str = "127.0.0.1"
    port: int = 8000
    which: Literal["learner", "ema"] = "learner"  # of a run or checkpoint folder
    attempts: int = 3  # samples tried per request before a 502 (an output may miss the player's strict format)
    max_body_bytes: int = 1 << 20  # larger request bodies get a 413
    plugin: Plugins = field(default_factory=list)

    def serve(self, service: ChatService, source: str) -> int:
        return _serve_player(service, source, self.host, self.port, self.max_body_bytes)


@dataclass(kw_only=True)
class ServeAttacker(_ServeOptions):
    """advgame serve --attacker PATH: the trained attacker (an export, a run folder or a checkpoint folder) as an
    OpenAI-compatible /v1/chat/completions endpoint that red-teaming tools call as their adversarial model: the
    objective (system message) becomes the attacker's trained task, the answer is the next attack message only."""

    attacker: str
    name: str = "advgame-attacker"  # the served model name

    def run(self) -> int:
        from algorithms.attacker_server import attacker_service

        service = attacker_service(Path(self.attacker), which=self.which, name=self.name, attempts=self.attempts)
        return self.serve(service, self.attacker)


@dataclass(kw_only=True)
class ServeDefender(_ServeOptions):
    """advgame serve --defender PATH: the trained defender (an export, a run folder or a checkpoint folder) as a
    plain OpenAI-compatible /v1/chat/completions target: the last user turn becomes its trained task, the answer
    is its public answer."""

    defender: str
    name: str = "advgame-defender"  # the served model name

    def run(self) -> int:
        from algorithms.attacker_server import defender_service

        service = defender_service(Path(self.defender), which=self.which, name=self.name, attempts=self.attempts)
        return self.serve(service, self.defender)


def _serve_player(service: ChatService, source: str, host: str, port: int, max_body_bytes: int) -> int:
    import uvicorn

    from algorithms.attacker_server import build_app

    print(f"serving {source} as {service.name} on http://{host}:{port}/v1", flush=True)
    uvicorn.run(build_app(service, max_body_bytes=max_body_bytes), host=host, port=port)
    return 0


@dataclass
class Export:
    """A trained policy (a run folder, a checkpoint folder, or an export such as runs/x/final/attacker) as a
    folder that plain transformers, peft and vLLM load: with --merged the adapter merged into its base, else
    the adapter naming a base they resolve (this machine's converted bundled model, or the hub id)."""

    source: Positional[str]
    out: Positional[str]  # a new folder
    merged: bool = False  # merge a LoRA adapter into its base: an ordinary model folder
    role: Literal["attacker", "defender"] = "attacker"  # of a run or checkpoint folder
    which: Literal["learner", "ema"] = "learner"  # of a run or checkpoint folder

    def run(self) -> int:
        from algorithms.export import export

        done = export(Path(self.source), Path(self.out), merged=self.merged, role=self.role, which=self.which)
        kind = "model folder" if done.base is None else f"adapter of base {done.base}"
        print(f"{done.out}: {kind} (from {done.source})")
        return 0


@dataclass
class Plan:
    """Bytes per GPU of a run config: weights, gradients, AdamW state, EMA/initial copies, activations
    and the vLLM KV share; whether it fits and what to change. Arithmetic only, offline.
    Example: advgame plan --config configs/paper/qwen25_dpo_md.yaml --gpus 8 --rollout-gpus 2 --judge-gpus 2"""

    config: str | None = None  # YAML run config (configs/)
    gpus: int = 1  # GPUs per node
    gpu_memory: float = 80.0  # GiB per GPU
    nodes: int = 1
    rollout_gpus: int = 0  # GPUs of vLLM rollout replicas of their own (0: rollouts on the learner GPUs)
    judge_gpus: int = 0  # GPUs of LLM-judge replicas (0: the judge is the rule judge, in-process or elsewhere)
    # None: the config's parallel.sharding; given: plan that setting instead
    sharding: Literal["none", "fsdp2"] | None = None
    # on or off whatever the config's model.gradient_checkpointing says (default: as the config)
    activation_checkpointing: Annotated[bool, FlagCreatePairsOff] = False
    no_activation_checkpointing: Annotated[bool, FlagCreatePairsOff] = False
    json: bool = False  # print the plan as JSON
    plugin: Plugins = field(default_factory=list)
    overrides: Annotated[Positional[list[str]], arg(metavar="key=value")] = field(default_factory=list)
    """config overrides, e.g. optim.micro_batch_size=2"""

    def run(self) -> int:
        from algorithms.config import ConfigError, load_config
        from algorithms.plan import dumps, plan_config, render

        if self.activation_checkpointing and self.no_activation_checkpointing:
            raise UsageError("--activation-checkpointing and --no-activation-checkpointing: give one")
        checkpointing = True if self.activation_checkpointing else False if self.no_activation_checkpointing else None
        try:
            cfg = load_config(self.config, self.overrides)
            plan = plan_config(
                cfg,
                gpus=self.gpus,
                nodes=self.nodes,
                gpu_memory_gib=self.gpu_memory,
                rollout_gpus=self.rollout_gpus,
                judge_gpus=self.judge_gpus,
                sharding=self.sharding,
                checkpointing=checkpointing,
            )
        except (ConfigError, FileNotFoundError, ValueError) as error:
            print(f"advgame plan: {error}", file=sys.stderr)
            return 2
        print(dumps(plan) if self.json else render(plan, self.config or "defaults"))
        return 0


COMMANDS: dict[str, Callable[..., Command]] = {
    "demo": Demo,
    "play": Play,
    "train": Train,
    "eval": Eval,
    "plot": Plot,
    "redteam": RedTeam,
    "exploit": Exploit,
    "crossplay": CrossPlay,
    "compare": Compare,
    "serve": Serve,
    "export": Export,
    "plan": Plan,
    "judge-audit": JudgeAuditCommand,
}


def parse_command(argv: Sequence[str] | None = None) -> Command:
    """The command dataclass that ``argv`` (default: sys.argv[1:]) names, its fields set from the flags."""
    args = _threads_flag(list(sys.argv[1:] if argv is None else argv))
    _renamed(args)
    with _one_line_settings_errors(args[0] if args else ""):
        return _parse(args)


def _parse(args: list[str]) -> Command:
    if args[:1] == ["serve"] and args[1:2] and args[1].split("=")[0] == "--attacker":
        command: Command = tyro.cli(ServeAttacker, args=args[1:], prog="advgame serve", config=(FlagCreatePairsOff,))
        return command
    if args[:1] == ["serve"] and args[1:2] and args[1].split("=")[0] == "--defender":
        command = tyro.cli(ServeDefender, args=args[1:], prog="advgame serve", config=(FlagCreatePairsOff,))
        return command
    if args[:1] == ["serve"] and len(args) > 1 and args[1] not in ("-h", "--help"):
        return Serve(args[1], args[2:])  # vllm's options go through untouched, unparsed by us
    if args[:1] in (["eval"], ["demo"]):
        args = _flag_alone(args, "--instruction-following", "0")
    try:
        return tyro.extras.subcommand_cli_from_dict(
            COMMANDS,
            prog="advgame",
            description=(
                "LM safety alignment as an attacker-defender game. Every command runs torch on one CPU thread "
                "(fastest on a shared 2-core machine); --threads N before or after the command, or "
                "ADVGAME_THREADS=N, asks for N."
            ),
            args=args,
            # one flag per switch, the one that changes its default: --no-think, never --no-no-think
            config=(FlagCreatePairsOff,),
        )
    except SystemExit as done:
        if done.code == 0 and args[:1] == ["train"] and {"-h", "--help"} & set(args):
            # after the flags, the run config's keys (tyro has no per-command epilog)
            from algorithms.cli.config_keys import render

            print("\n" + render())
        raise


def _renamed(args: list[str]) -> None:
    old = RENAMED.get(args[0], {}) if args else {}
    for token in args[1:]:
        flag = token.split("=")[0]
        if flag in old:
            raise UsageError(f"{args[0]} {flag} is now {old[flag]}")


@contextlib.contextmanager
def _one_line_settings_errors(command: str) -> Iterator[None]:
    # tyro builds the nested library configs itself and boxes the ValueError their checks raise;
    # its parse-error hook (tyro._errors, the pinned version's interception point) lets us raise
    # instead, so that the error is one line like every other user error.
    from tyro import _errors

    def hook(event: _errors.ParseErrorEvent) -> None:
        if isinstance(event, _errors.InstantiationFailure):
            raise SettingsError(command, event.message)

    with _errors.on_parse_error(hook):
        yield


def _threads_flag(args: list[str]) -> list[str]:
    # One option for every command (the thread policy, agents.threads), read before tyro, which
    # has no option shared across subcommands; it travels in ADVGAME_THREADS.
    out, rest = [], iter(args)
    for token in rest:
        if token == "--threads" or token.startswith("--threads="):
            value = token.partition("=")[2] or next(rest, "")
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"--threads {value!r}: give a whole number of threads, at least 1")
            os.environ["ADVGAME_THREADS"] = value
        else:
            out.append(token)
    return out


def _flag_alone(args: list[str], flag: str, value: str) -> list[str]:
    # argparse's nargs="?" (a flag that may come without its value) has no tyro spelling, so the
    # value the flag alone means is written in before tyro parses.
    out = []
    for i, token in enumerate(args):
        out.append(token)
        if token == flag and (i + 1 == len(args) or _is_flag(args[i + 1])):
            out.append(value)
    return out


def _is_flag(token: str) -> bool:
    return token.startswith("-") and not token.lstrip("-").replace(".", "", 1).isdigit()  # -1 is a value


def _user_error(error: BaseException) -> bool:
    """An error in what the user gave (a file, a config, a run folder): a message, not a traceback."""
    if isinstance(error, (UsageError, FileExistsError, FileNotFoundError)):
        return True  # without the imports below, which load torch (seconds on a busy machine)
    from advgame_env.seeds import SeedFormatError
    from algorithms.config import ConfigError
    from algorithms.evaluation.redteam import RedTeamError
    from algorithms.training.checkpoints import CheckpointError
    from algorithms.training.runlog import RunLogError
    from algorithms.training.sft import SFTFormatError

    documented = (ConfigError, SeedFormatError, SFTFormatError, CheckpointError, RunLogError, RedTeamError, UsageError)
    return isinstance(error, (*documented, FileExistsError, FileNotFoundError))


def load_plugins(plugins: Sequence[str]) -> None:
    """Before the command runs: the config or run it loads may name a plugin's algorithm."""
    if plugins:
        from algorithms.training.algorithm import load_plugin

        for plugin in plugins:
            load_plugin(plugin)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        command = parse_command(argv)
    except SettingsError as error:
        print(f"advgame {error.command}: {error}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"advgame: {error}", file=sys.stderr)
        return 2
    name = next(
        (name for name, kind in COMMANDS.items() if type(command) is kind), "serve"
    )  # or ServeAttacker, ServeDefender
    from agents.threads import apply_thread_policy

    try:
        apply_thread_policy()
    except ValueError as error:  # a bad ADVGAME_THREADS / OMP_NUM_THREADS
        print(f"advgame: {error}", file=sys.stderr)
        return 2
    try:
        load_plugins(getattr(command, "plugin", []))
        return int(command.run())
    except Exception as error:
        if not _user_error(error):
            raise
        print(f"advgame {name}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
