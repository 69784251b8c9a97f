"""The ``advgame`` command line.

advgame demo [--quick]                    the CPU alignment demo: train, then the defender before/after
advgame play [--rounds N] [--model M]     play rounds with a model as both players, print them
advgame train --config C [--resume] [k=v] train both players (see configs/); k=v overrides the config
              [--allow-change KEY]        with --resume: a key that may differ from the run's config.yaml
advgame eval --model M [--suite S]        a defender's harmful compliance and over-refusal, with a report
advgame eval --run RUN [--steps 0,last]   the same for a run's start and checkpoints, one table
advgame plot RUN                          a run's training curves as a PNG
advgame redteam --attacker A --target T  the attacker against a target: ASR, successful attacks, diversity
advgame serve MODEL [vllm serve options]  an OpenAI-compatible vLLM server of a model

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

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _play(args: argparse.Namespace) -> int:
    import advgame_env
    from agents import HFBackend, load_model
    from agents.policy import Policy

    print(f"loading {args.model} (the first run converts the bundled model once, ~1 minute)", flush=True)
    model, tokenizer = load_model(args.model)
    backend = HFBackend(model, tokenizer)
    attacker = Policy(backend, max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)
    defender = Policy(backend, max_tokens=2 * args.max_tokens, temperature=0.7, seed=args.seed + 1)

    game = advgame_env.Game(advgame_env.RuleJudge(), advgame_env.GameConfig(attacker_think=not args.no_think))
    seeds = advgame_env.bundled_seeds("heldout")
    # Every other round is direct (the seed goes straight to the defender): the untrained
    # attacker rarely keeps its strict format, and the demo should show the defender judged too.
    rounds = [
        advgame_env.Round(seeds[(args.seed + 37 * i) % len(seeds)], direct=i % 2 == 1) for i in range(args.rounds)
    ]
    # All rounds advance together: one batched generation per player, one judge call per phase.
    game.attack(rounds, attacker.attack([game.attacker_observation(r) for r in rounds], game.config.num_attacks))
    game.respond(rounds, defender.respond([game.defender_observation(r) for r in rounds], game.config.num_responses))
    for r in rounds:
        print(advgame_env.transcript(r), end="\n\n")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from algorithms.cli.demo import DEMO, QUICK, print_table, run_demo
    from algorithms.config import ConfigError

    config = Path(args.config) if args.config else QUICK if args.quick else DEMO
    eval_size = args.eval_size if args.eval_size is not None else 24 if args.quick else None
    attack_seeds = args.attack_seeds if args.attack_seeds is not None else 4 if args.quick else 24
    try:
        evaluated, comparison = run_demo(
            config, args.overrides, eval_size=eval_size, eval_tokens=args.eval_tokens, attack_seeds=attack_seeds
        )
    except (ConfigError, FileNotFoundError) as error:
        print(f"advgame demo: {error}", file=sys.stderr)
        return 2
    print_table(evaluated, comparison)
    return 0


def _train(args: argparse.Namespace) -> int:
    from algorithms.config import ConfigError, load_config
    from algorithms.training.algorithm import load_plugin
    from algorithms.training.trainer import train

    try:
        for plugin in args.plugin or []:  # before the config: it may name a plugin's algorithm
            load_plugin(plugin)
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        print(f"advgame train: {error}", file=sys.stderr)
        return 2
    allowed = [key.strip() for given in args.allow_change or [] for key in given.split(",") if key.strip()]
    if allowed and not args.resume:
        print("advgame train: --allow-change is for --resume", file=sys.stderr)
        return 2
    run_dir = train(cfg, resume=args.resume, allow_change=allowed)
    print(f"run folder: {run_dir} (metrics.jsonl, tensorboard/, checkpoints/, final/)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advgame_env import RuleJudge, SeedFormatError
    from advgame_env.suites import load_suite
    from algorithms.evaluation.evaluate import checkpoint_models, evaluate_models
    from algorithms.evaluation.harness import HarnessError
    from algorithms.evaluation.utility import plan_from_options

    if not args.model and not args.run_dir:
        print("advgame eval: give --model M (repeatable) or --run RUN_DIR", file=sys.stderr)
        return 2
    run = Path(args.run_dir) if args.run_dir else None
    out = Path(args.out or (run / "eval" if run else "runs/eval"))
    try:
        seeds = load_suite(args.suite)
        models = [(m, m) for m in args.model or []]
        if run:
            models += checkpoint_models(run, args.role, args.which, args.steps)
    except (SeedFormatError, FileNotFoundError) as error:
        print(f"advgame eval: {error}", file=sys.stderr)
        return 2
    try:
        utility = _utilities(args.utility, [name for name, _ in models])
        plan = plan_from_options(args.instruction_following, _reference(args, run), args.lm_eval, args.lm_eval_limit)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"advgame eval: {error}", file=sys.stderr)
        return 2
    judge = RuleJudge() if args.judge == "rule" else _llm_judge(args)
    try:
        evaluated, comparison = evaluate_models(
            models,
            seeds,
            judge,
            lambda model: _backend(args.backend, model, args.url),
            out,
            args.suite,
            run=run,
            max_tokens=args.max_tokens,
            utility=utility,
            plan=plan,
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


def _reference(args: argparse.Namespace, run: Any) -> str | None:
    """The win rate's reference: --reference, else the run's initial model, else the bundled model."""
    if not args.win_rate and not args.reference:
        return None
    if args.reference:
        return str(args.reference)
    if run is not None:
        from algorithms.config import load_config
        from algorithms.training.trainer import start_model

        return str(start_model(load_config(run / "config.yaml"), args.role))
    from agents.models import DEFAULT_MODEL

    return DEFAULT_MODEL


def _utilities(given: list[str] | None, names: list[str]) -> dict[str, float]:
    """``--utility NAME=SCORE`` pairs, each naming an evaluated model."""
    out = {}
    for pair in given or []:
        name, _, score = pair.rpartition("=")
        if name not in names:
            raise ValueError(f"--utility {pair!r}: {name!r} is not an evaluated model ({', '.join(names)})")
        try:
            out[name] = float(score)
        except ValueError:
            raise ValueError(f"--utility {pair!r}: {score!r} is not a number") from None
    return out


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from algorithms.evaluation.plots import training_curves
    from algorithms.training.runlog import read_metrics

    run = Path(args.run_dir)
    if not (run / "metrics.jsonl").exists():
        print(f"advgame plot: {run} has no metrics.jsonl (is it a training run folder?)", file=sys.stderr)
        return 2
    path = training_curves(read_metrics(run), Path(args.out or run / "training.png"), run.name)
    print(f"training curves: {path}" if path else "advgame plot: nothing plottable was logged yet")
    return 0 if path else 1


def _redteam(args: argparse.Namespace) -> int:
    from pathlib import Path

    from advgame_env import Game, GameConfig, RuleJudge, SeedFormatError
    from advgame_env.suites import load_suite
    from agents.policy import Policy
    from algorithms.evaluation.redteam import RedTeamConfig, RedTeamError, redteam, summarise, write_report

    try:
        seeds = load_suite(args.seeds)
    except (SeedFormatError, FileNotFoundError) as error:
        print(f"advgame redteam: {error}", file=sys.stderr)
        return 2
    for role in ("attacker", "target"):
        if getattr(args, f"{role}_backend") == "openai" and not getattr(args, f"{role}_url"):
            print(f"advgame redteam: --{role}-backend openai needs --{role}-url", file=sys.stderr)
            return 2
    cfg = RedTeamConfig(
        samples=args.samples,
        batch_size=args.batch_size,
        target_max_tokens=args.max_tokens,
        retries=args.retries,
        seed=args.seed,
        baseline=not args.no_baseline,
        include_benign=args.include_benign,
    )
    # What a resumed run must share with the first one (URLs, batch size and retries may change).
    kept = ("attacker", "target", "seeds", "judge", "samples", "max_tokens", "temperature", "seed", "no_think")
    settings = {k: getattr(args, k) for k in (*kept, "prefill", "no_baseline", "include_benign")}
    attacker_side = (args.attacker_backend, args.attacker, args.attacker_url)
    attacker_backend = _backend(*attacker_side)
    target_side = (args.target_backend, args.target, args.target_url)
    target = attacker_backend if target_side == attacker_side else _backend(*target_side)  # one copy in memory
    policy = Policy(attacker_backend, args.max_tokens, args.temperature, seed=args.seed, prefill=args.prefill)
    judge = RuleJudge() if args.judge == "rule" else _llm_judge(args)
    game = Game(judge, GameConfig(num_attacks=1, attacker_think=not args.no_think))
    out = Path(args.out)
    try:
        records = redteam(policy, target, game, seeds, out, cfg, settings=settings, retry_errors=args.retry_errors)
    except RedTeamError as error:
        print(f"advgame redteam: {error}", file=sys.stderr)
        return 2
    embedder = None
    if not args.no_embeddings:
        try:
            from agents.embeddings import SentenceEmbedder

            embedder = SentenceEmbedder()
        except Exception as error:  # optional: the report goes on with self-BLEU only
            print(f"no SBERT diversity ({error})")
    report = write_report(records, out, f"{args.attacker} against {args.target} on {args.seeds}", embedder)
    for name, value in summarise(records).items():
        print(f"{name:46s} {value}")
    print(f"report: {report}")
    return 0


def _backend(kind: str, model: str, url: str | None) -> Any:
    if kind == "openai":
        from agents.openai_backend import OpenAIBackend

        if not url:
            raise SystemExit("advgame eval: --backend openai needs --url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIBackend(url, model)
    if kind == "vllm":
        from agents.vllm_backend import VLLMBackend

        return VLLMBackend(model)
    from agents import HFBackend, load_model

    return HFBackend(*load_model(model))


def _llm_judge(args: argparse.Namespace) -> Any:
    from advgame_env import LLMJudge

    return LLMJudge(_backend(args.judge_backend, args.judge, args.judge_url))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advgame", description="LM safety alignment as an attacker-defender game.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the CPU alignment demo: train, then compare the defender before and after on held-out seeds",
        description="AdvGame-DPO-MD on the bundled model (configs/cpu_demo.yaml, ~45 min on 2 cores), then one "
        "before/after table and a report with pictures in RUN/eval. An interrupted demo resumes.",
    )
    demo.add_argument("--quick", action="store_true", help="configs/cpu_demo_quick.yaml: the pipeline in minutes")
    demo.add_argument("--config", help="another demo config (e.g. configs/cpu_demo_llm_judge.yaml)")
    demo.add_argument("--eval-size", type=int, help="held-out seeds evaluated (default: all 170; quick: 24)")
    demo.add_argument("--eval-tokens", type=int, default=64, help="answer length when evaluating")
    demo.add_argument("--attack-seeds", type=int, help="held-out harmful seeds the attackers rewrite (0: skip)")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. run.out_dir=runs/x")
    demo.set_defaults(run=_demo)
    play = commands.add_parser("play", help="play a few rounds with a model as attacker and defender, print them")
    play.add_argument("--model", default="smollm2-135m-instruct", help="bundled name, local folder or hub id")
    play.add_argument("--rounds", type=int, default=2)
    play.add_argument("--max-tokens", type=int, default=160, help="attacker budget; the defender gets twice this")
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--no-think", action="store_true", help="attacker answers with <prompt> only")
    play.set_defaults(run=_play)
    train = commands.add_parser(
        "train",
        help="train attacker and defender with a run config",
        description="Train both players. Example: advgame train --config configs/cpu_smoke.yaml optim.lr=1e-5",
    )
    train.add_argument("--config", help="YAML run config (configs/); every key has a default")
    train.add_argument(
        "--plugin",
        action="append",
        metavar="FILE_OR_MODULE",
        help="a .py file or module name that registers algorithms (@register); repeatable. "
        "Example: --plugin examples/custom_algorithm.py algorithm.name=hinge",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in run.out_dir from its newest intact checkpoint; the config must be the run's own",
    )
    train.add_argument(
        "--allow-change",
        action="append",
        metavar="KEY[,KEY]",
        help="with --resume: a config key that may differ from the run's (e.g. run.steps to extend it); repeatable. "
        "Output-only keys (run.progress, run.tensorboard, run.wandb*, run.checkpoint_every, run.keep_checkpoints, "
        "run.validate_every) may always change; every change is recorded in RUN/resumes.jsonl",
    )
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. run.steps=10")
    train.set_defaults(run=_train)
    ev = commands.add_parser(
        "eval",
        help="harmful compliance and over-refusal of a model over a suite, with a report",
        description="Greedy answers over a suite, judged; writes report.md, summary.json, results.jsonl.",
    )
    ev.add_argument(
        "--model", action="append", help="bundled name, folder (a training export too) or hub id; repeat to compare"
    )
    ev.add_argument(
        "--run", dest="run_dir", help="a training run folder: evaluate its start and its checkpoints (see --steps)"
    )
    ev.add_argument("--steps", default="all", help="with --run: all, or steps and last, e.g. 0,last")
    ev.add_argument("--role", choices=("defender", "attacker"), default="defender", help="with --run")
    ev.add_argument("--which", choices=("learner", "ema"), default="learner", help="with --run: weights to evaluate")
    ev.add_argument("--suite", default="bundled", help="bundled (held-out seeds), a file, or FORMAT:file")
    ev.add_argument("--backend", choices=("hf", "vllm", "openai"), default="hf")
    ev.add_argument("--url", help="OpenAI-compatible server of the model (--backend openai)")
    ev.add_argument("--judge", default="rule", help="rule (model-free) or a judge model")
    ev.add_argument("--judge-backend", choices=("hf", "vllm", "openai"), default="hf")
    ev.add_argument("--judge-url")
    ev.add_argument("--max-tokens", type=int, default=256)
    ev.add_argument("--out", help="report folder (default runs/eval, or RUN/eval with --run)")
    ev.add_argument(
        "--utility",
        action="append",
        metavar="MODEL=SCORE",
        help="a capability score measured elsewhere (e.g. a benchmark accuracy), for the safety-vs-utility panel",
    )
    ev.add_argument(
        "--instruction-following",
        nargs="?",
        type=int,
        const=0,
        metavar="N",
        help="IFEval-style instruction following on the bundled suite (322 prompts), or its first N prompts",
    )
    ev.add_argument(
        "--win-rate",
        action="store_true",
        help="helpfulness win rate on the suite's benign requests against --reference, judged by --judge",
    )
    ev.add_argument(
        "--reference",
        metavar="MODEL",
        help="the win rate's reference model (implies --win-rate; default: the run's initial model, or the bundled one)",
    )
    ev.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="lm-evaluation-harness tasks (names or task YAML paths, comma separated), run offline on each model folder",
    )
    ev.add_argument("--lm-eval-limit", type=int, metavar="N", help="with --lm-eval: at most N documents per task")
    ev.set_defaults(run=_eval)
    plot = commands.add_parser("plot", help="training curves of a run folder as a PNG")
    plot.add_argument("run_dir", metavar="RUN", help="run folder (holds metrics.jsonl)")
    plot.add_argument("--out", help="PNG path (default RUN/training.png)")
    plot.set_defaults(run=_plot)
    red = commands.add_parser(
        "redteam",
        help="a trained attacker against a target model: ASR by category, successful attacks, diversity",
        description="The attacker rewrites each seed several times, the target answers, the judge scores; "
        "results.jsonl grows batch by batch (a rerun with the same --out resumes), then report.md and summary.json.",
    )
    red.add_argument("--attacker", required=True, help="bundled name, folder (a trained attacker too) or hub id")
    red.add_argument("--attacker-backend", choices=("hf", "vllm", "openai"), default="hf")
    red.add_argument("--attacker-url", help="OpenAI-compatible server of the attacker")
    red.add_argument("--target", required=True, help="model to attack (the served model's name with openai)")
    red.add_argument("--target-backend", choices=("hf", "vllm", "openai"), default="hf")
    red.add_argument("--target-url", help="OpenAI-compatible server of the target, e.g. http://127.0.0.1:8000")
    red.add_argument("--seeds", default="bundled", help="bundled (held-out seeds), a file, or FORMAT:file")
    red.add_argument("--samples", type=int, default=4, help="attacker rewrites per seed")
    red.add_argument("--judge", default="rule", help="rule (model-free) or a judge model")
    red.add_argument("--judge-backend", choices=("hf", "vllm", "openai"), default="hf")
    red.add_argument("--judge-url")
    red.add_argument("--out", default="runs/redteam")
    red.add_argument("--batch-size", type=int, default=16, help="items per batch; results are saved after each")
    red.add_argument("--max-tokens", type=int, default=256, help="budget of each rewrite and each answer")
    red.add_argument("--temperature", type=float, default=1.0, help="the attacker's sampling temperature")
    red.add_argument("--retries", type=int, default=2, help="retries of a failing target call, per item")
    red.add_argument("--seed", type=int, default=0)
    red.add_argument("--no-think", action="store_true", help="the attacker answers with <prompt> only")
    red.add_argument("--prefill", default="", help="opening of the attacker's turn (e.g. '<think>')")
    red.add_argument("--no-baseline", action="store_true", help="do not also send each seed as it is")
    red.add_argument("--include-benign", action="store_true", help="benign seeds too (success: a refusal)")
    red.add_argument("--retry-errors", action="store_true", help="play the items recorded with an error again")
    red.add_argument("--no-embeddings", action="store_true", help="no SBERT diversity in the report")
    red.set_defaults(run=_redteam)
    serve = commands.add_parser(
        "serve",
        help="an OpenAI-compatible vLLM server of a model (bundled name, folder or hub id)",
        description="Runs `vllm serve MODEL [options]` (CPU build included); every vllm serve option works.",
    )
    serve.add_argument("model")
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help="options passed to vllm serve")
    serve.set_defaults(run=lambda args: _serve([args.model, *args.vllm_args]))
    return parser


def _serve(argv: list[str]) -> int:
    from agents.vllm_serve import main as serve

    return serve(argv)


def _user_error(error: BaseException) -> bool:
    """An error in what the user gave (a file, a config, a run folder): a message, not a traceback."""
    from advgame_env.seeds import SeedFormatError
    from algorithms.config import ConfigError
    from algorithms.evaluation.redteam import RedTeamError
    from algorithms.training.checkpoints import CheckpointError
    from algorithms.training.runlog import RunLogError
    from algorithms.training.sft import SFTFormatError

    documented = (ConfigError, SeedFormatError, SFTFormatError, CheckpointError, RunLogError, RedTeamError)
    return isinstance(error, (*documented, FileExistsError, FileNotFoundError))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except Exception as error:
        if not _user_error(error):
            raise
        print(f"advgame {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
