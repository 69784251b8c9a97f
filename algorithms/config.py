"""A training run's configuration: typed dataclasses, read from YAML plus ``key=value`` overrides.

    cfg = load_config("configs/cpu_smoke.yaml", ["optim.lr=1e-5", "run.steps=4"])

Every field has a default, so a config file lists only what it changes. Unknown keys are
errors that name the key and the valid ones: a typo must not silently train something else.
Every value's type and range (``RULES``) is checked when the config loads, before any model is
touched; a ``ConfigError`` names the file and line (or the override) that set it, the key, the
value and what is allowed.
The resolved config is written to the run folder (``config.yaml``) and is enough to repeat
the run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from advgame_env.game import GameConfig
from advgame_env.seeds import read_text

DEFAULT_ALGORITHM = "advgame_dpo_md"


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # bundled name, local folder or hub id; both players start here
    attacker: str | None = None  # a different start for one player (full fine-tuning only)
    defender: str | None = None
    lora: bool = True  # LoRA adapters on one frozen shared base; False: full fine-tuning
    lora_rank: int = 16
    lora_alpha: int = 32
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast where the GPU supports it
    # recompute activations in the backward pass (one layer's activations kept, not all): less
    # memory for about a third more update compute; the reference designs train this way
    gradient_checkpointing: bool = False


@dataclass
class JudgeConfig:
    # rule: the model-free RuleJudge; llm: LLMJudge (our templates, any instruct model);
    # wildguard: WildGuardJudge (allenai/wildguard's own format; classifies only, so it needs
    # game.reward_rule self_redteam without a faithfulness check: build_judge refuses other games)
    kind: Literal["rule", "llm", "wildguard"] = "rule"
    model: str = "smollm2-135m-instruct"  # the judge's model (kind: llm or wildguard)
    backend: Literal["hf", "vllm", "openai"] = "hf"
    url: str | None = None  # OpenAI-compatible server (backend: openai)
    mode: Literal["generative", "logprob"] = "generative"  # kind: llm
    both_orders: bool = False  # judge each pair in both orders to cancel position bias (kind: llm)
    max_tokens: int = 512  # WildGuard's own client uses 128
    temperature: float = 0.0
    top_p: float = 1.0  # nucleus sampling of a generative judge (the AdvGame paper: 0.9 at temperature 0.6)
    retries: int = 2  # a failed judge call is retried this often before the run stops
    deadline: float = 600.0  # seconds one request to the judge's server may take, retries included (backend: openai)


@dataclass
class RolloutConfig:
    backend: Literal["hf", "vllm"] = "hf"  # the engine that samples the players' actions
    attacker_max_tokens: int = 256
    defender_max_tokens: int = 256
    temperature: float = 0.6
    top_p: float = 0.9
    max_model_len: int = 2048
    batch_size: int = 32  # sequences per HF generate call
    # Opening of the assistant's turn for players whose format has hidden reasoning
    # (game.attacker_think / defender_think), e.g. "<think>" as in Self-RedTeam; "" for none.
    think_prefill: str = ""


SFT_KEYS = ("sft_data", "attacker_sft_data")


@dataclass
class AlgorithmConfig:
    """The ``algorithm:`` section: the algorithm's name and the knobs every algorithm reads.

    Each algorithm extends it with a dataclass of its own knobs, whose defaults are its paper's
    values (``Algorithm.config_class``, see ``algorithms.training.algorithm``); the section is
    built as the chosen algorithm's dataclass, so a knob it does not have is an error naming the
    knob and the algorithm. A knob read only in some settings is unset (None) by default, filled
    in where it is read, and an error where it is set but not read (``not_read``)."""

    name: str = DEFAULT_ALGORITHM
    # which roles learn (within train.schedule)
    train_attacker: bool = True
    train_defender: bool = True
    # every algorithm: an auxiliary SFT loss on JSONL chats, added to every micro-batch
    sft_data: str | None = None  # the defender's chats
    attacker_sft_data: str | None = None  # the attacker's (same format, same coef and batch size)
    # read with a file: 1.0 (Self-RedTeam's postfill-CoT SFT coefficient; AdvGame has no SFT term)
    sft_coef: float | None = None
    sft_batch_size: int | None = None  # read with a file: 4

    def __post_init__(self) -> None:
        sft = "with algorithm.sft_data or algorithm.attacker_sft_data"
        with_file = bool(self.sft_data or self.attacker_sft_data)
        self.sft_coef = read_when(self, "sft_coef", with_file, 1.0, sft)
        self.sft_batch_size = read_when(self, "sft_batch_size", with_file, 4, sft)

    if not typing.TYPE_CHECKING:

        def __getattr__(self, key: str) -> Any:
            # The section was once one flat record of every algorithm's knobs: a knob of another
            # algorithm still reads as unset (None), so code that asks without knowing the
            # algorithm (reports, old notebooks) keeps working; any other name is an error.
            if not key.startswith("_") and key in _knob_names():
                return None
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")


def _knob_names() -> set[str]:
    names, todo = set(), [AlgorithmConfig]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if dataclasses.is_dataclass(cls):
            names |= {f.name for f in dataclasses.fields(cls)}
    return names


def read_when(cfg: AlgorithmConfig, key: str, read: bool, default: Any, condition: str) -> Any:
    """A knob read only in some settings: its value (``default`` where unset) if ``read``, else None,
    and an error naming the knob and the algorithm when it is set but not read."""
    value = getattr(cfg, key)
    if read:
        return default if value is None else value
    if value is not None:
        raise not_read(cfg.name, key, f" (it is read only {condition})")
    return None


def not_read(algorithm: str, key: str, when: str = "", reads: Sequence[str] = ()) -> ConfigError:
    listed = f". {algorithm} reads: {', '.join(sorted(reads))}" if reads else ""
    error = ConfigError(
        f"algorithm.{key} is not read by algorithm {algorithm}{when}; unset it (algorithm.{key}=null) "
        f"or choose an algorithm that reads it{listed}"
    )
    error.key = f"algorithm.{key}"  # so that the message names the file line or override that set it
    return error


# The schedule's old spelling, when it was an algorithm ("sequential"): the error gives the new one.
_RETIRED_NAMES = ("sequential",)
_OLD_SCHEDULE_KEYS = {
    "base": "algorithm.name: <the algorithm>",
    "train": "train.schedule: attacker | defender | alternate",
    "alternate_every": "train.period: <steps per turn>",
}


def algorithm_from_dict(data: Mapping[str, Any], where: str = "config.algorithm") -> AlgorithmConfig:
    """The ``algorithm:`` section built as the chosen algorithm's own config dataclass.

    A knob the algorithm does not have is an error (set to null it is simply unset); a value
    is range-checked (``RULES``, and the algorithm's own ``rules``) before anything else."""
    from algorithms.training.algorithm import lookup  # the registry's modules import this one

    name = data.get("name", DEFAULT_ALGORITHM)
    if name in _RETIRED_NAMES:  # the schedule was once spelled as an algorithm
        base = data.get("base", DEFAULT_ALGORITHM)
        schedule, period = data.get("train", "alternate"), data.get("alternate_every", 10)
        spelled = f"train.schedule: {schedule}" + (f" and train.period: {period}" if schedule == "alternate" else "")
        error = ConfigError(
            f"{where}.name: sequential is no longer an algorithm but the trainer's schedule: write "
            f"algorithm.name: {base} and {spelled} (a train: section of the config)"
        )
        error.key = "algorithm.name"
        raise error
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: expected the name of an algorithm, got {name!r}")
    registered = lookup(name)
    section = f"{where.removeprefix('config.')}"
    own_rules: Mapping[str, Rule] = getattr(registered.config, "rules", {})
    hints = typing.get_type_hints(registered.config)
    for key, value in data.items():
        rule = own_rules.get(key) or RULES.get(f"{section}.{key}")
        if rule is not None and value is not None:  # the value's range first, as in every section
            typed = _from_value(hints.get(key) or _knob_type(key), value, f"{where}.{key}")
            if not rule.test(typed):
                raise ConfigError(f"{where}.{key}: {typed!r} is not allowed; expected {rule.allowed}")
    fields = {f.name for f in dataclasses.fields(registered.config)}
    for key, value in data.items():
        if key not in fields and value is not None:
            old = _OLD_SCHEDULE_KEYS.get(key)
            when = f": the schedule is the trainer's now, write {old}" if old else ""
            raise not_read(name, key, when, [f for f in fields if f != "name"])
    given = {k: v for k, v in data.items() if k in fields} | {"name": name}
    built: AlgorithmConfig = from_dict(registered.config, given, where)
    return built


def _knob_type(key: str) -> Any:
    for cls in _config_classes():
        hints = typing.get_type_hints(cls)
        if key in hints:
            return hints[key]
    return Any


def _config_classes() -> list[type[AlgorithmConfig]]:
    out: list[type[AlgorithmConfig]] = []
    todo: list[type[AlgorithmConfig]] = [AlgorithmConfig]
    while todo:
        cls = todo.pop(0)
        out.append(cls)
        todo += cls.__subclasses__()
    return out


def _default_algorithm() -> AlgorithmConfig:
    return algorithm_from_dict({})


@dataclass
class ScheduleConfig:
    """The ``train:`` section: which roles learn at each step, for every algorithm alike.

    both: both players learn every step; attacker / defender: that player learns and the other
    is frozen (a static opponent); alternate: they take turns of ``period`` steps, the attacker
    first (the sequential baselines)."""

    schedule: Literal["both", "attacker", "defender", "alternate"] = "both"
    period: int = 10  # steps per turn (schedule: alternate)


@dataclass
class OptimConfig:
    lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    final_lr_scale: float = 0.2  # cosine schedule from lr down to lr * final_lr_scale
    warmup_steps: int = 0  # optimizer steps of linear warm-up
    micro_batch_size: int = 8  # examples per forward/backward; gradients accumulate over a split


@dataclass
class DataConfig:
    seeds: str = "bundled"  # "bundled" (the train split) or a JSONL/CSV file of seeds
    validation_seeds: str = "bundled"  # "bundled" (the held-out split) or a file
    batch_size: int = 4  # seeds per split per step, per process
    validation_size: int = 32  # held-out seeds played each validation (direct rounds)


@dataclass
class RunConfig:
    steps: int = 1000
    seed: int = 0
    out_dir: str = "runs/advgame"
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    validate_every: int = 25  # 0: never; validation also runs before the first step
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "advgame"
    progress: bool = True


@dataclass
class TrainConfig:
    algorithm: AlgorithmConfig = field(default_factory=_default_algorithm)
    train: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    game: GameConfig = field(default_factory=GameConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)


class ConfigError(ValueError):
    """A config that cannot be run; the message names the key (and the file), the value and what is allowed."""

    key: str | None = None  # the dotted key at fault, where the message alone does not tell it


# ----------------------------------------------------------------------------- allowed values
#
# The range of every numeric field (and of a few strings), by dotted key. The types come from
# the dataclasses; these rules say which values of the type make sense. A field whose type is
# Optional may also be None (meaning what its comment says, e.g. the algorithm's default).
# Each given value is checked before its section is built, so the game's own checks see only
# values that pass here. ``tests/test_config.py`` checks that every numeric field has a rule.


@dataclass(frozen=True)
class Rule:
    test: Callable[[Any], bool]
    allowed: str  # what is allowed, in words: "an integer >= 1"


def at_least(low: int) -> Rule:
    return Rule(lambda v: v >= low, f"an integer >= {low}")


def positive() -> Rule:
    return Rule(lambda v: v > 0, "a number > 0")


def non_negative() -> Rule:
    return Rule(lambda v: v >= 0, "a number >= 0")


def within(low: float, high: float, *, open_high: bool = False, open_low: bool = False) -> Rule:
    def test(v: Any) -> bool:
        return (low < v if open_low else low <= v) and (v < high if open_high else v <= high)

    return Rule(test, f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}")


def each(rule: Rule) -> Rule:
    return Rule(lambda v: all(rule.test(x) for x in v), f"each {rule.allowed}")


NON_EMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string")

RULES: dict[str, Rule] = {
    # model
    "model.name": NON_EMPTY,
    "model.lora_rank": at_least(1),
    "model.lora_alpha": at_least(1),
    # judge
    "judge.model": NON_EMPTY,
    "judge.max_tokens": at_least(1),
    "judge.temperature": non_negative(),
    "judge.top_p": within(0, 1, open_low=True),
    "judge.retries": at_least(0),  # -1 would play no round at all
    "judge.deadline": positive(),
    # rollout
    "rollout.attacker_max_tokens": at_least(1),
    "rollout.defender_max_tokens": at_least(1),
    "rollout.temperature": non_negative(),
    "rollout.top_p": within(0, 1, open_low=True),
    "rollout.max_model_len": at_least(2),
    "rollout.batch_size": at_least(1),
    # algorithm
    "algorithm.beta": positive(),
    "algorithm.ema_decay": within(0, 1, open_high=True),
    "algorithm.kl_beta": non_negative(),
    "algorithm.reward_kl_beta": non_negative(),
    "algorithm.tis_cap": positive(),
    "algorithm.clip": positive(),
    "algorithm.minibatches": at_least(1),
    "algorithm.sft_coef": non_negative(),
    "algorithm.sft_batch_size": at_least(1),
    "algorithm.mixture_coef": within(0, 1),  # nash_md: β of the geometric mixture
    "algorithm.tau": non_negative(),  # nash_md: weight of the KL regulariser
    "algorithm.alpha": within(0, 1, open_high=True),  # spiral_rae: the baselines' decay
    # train
    "train.period": at_least(1),
    # optim
    "optim.lr": positive(),
    "optim.betas": each(within(0, 1, open_high=True)),
    "optim.weight_decay": non_negative(),
    "optim.max_grad_norm": positive(),
    "optim.final_lr_scale": non_negative(),
    "optim.warmup_steps": at_least(0),
    "optim.micro_batch_size": at_least(1),
    # data
    "data.seeds": NON_EMPTY,
    "data.validation_seeds": NON_EMPTY,
    "data.batch_size": at_least(1),
    "data.validation_size": at_least(1),  # run.validate_every=0 turns validation off
    # run
    "run.steps": at_least(1),
    "run.seed": at_least(0),
    "run.out_dir": NON_EMPTY,
    "run.checkpoint_every": at_least(1),
    "run.keep_checkpoints": at_least(0),  # 0: keep every checkpoint
    "run.validate_every": at_least(0),  # 0: never
    "run.wandb_project": NON_EMPTY,
    # game (GameConfig checks some of these itself; the rules here name the value)
    "game.num_attacks": at_least(1),
    "game.num_responses": at_least(1),
    "game.max_attack_chars": at_least(1),
    "game.max_response_chars": at_least(1),
    "game.direct_fraction": within(0, 1),
    **{
        f"game.srt_coefficients.{name}": non_negative()
        for name in (
            "attacker_faithful",
            "attacker_refusal",
            "attacker_harm",
            "defender_refusal",
            "defender_harm",
            "format",
        )
    },
}


def check_value(key: str, value: Any) -> None:
    """Raise a ConfigError when ``value`` (already of the field's type) is outside ``key``'s rule."""
    rule = RULES.get(key)
    if rule is not None and value is not None and not rule.test(value):
        raise ConfigError(f"config.{key}: {value!r} is not allowed; expected {rule.allowed}")


def _walk(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _walk(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every rule (defaults included) and the rules that tie keys together."""
    for key, value in _walk(cfg):
        check_value(key, value)
    if cfg.model.lora and (cfg.model.attacker or cfg.model.defender):
        raise ConfigError(
            "config.model.attacker / model.defender: a start of its own for one player needs full "
            "fine-tuning (model.lora: false)"
        )
    if cfg.judge.kind != "rule" and cfg.judge.backend == "openai" and not cfg.judge.url:
        raise ConfigError("config.judge.url: judge.backend openai needs judge.url (e.g. http://127.0.0.1:8000/v1)")
    return cfg


# ----------------------------------------------------------------------------- dict <-> dataclass


def _from_value(kind: Any, value: Any, where: str) -> Any:
    if kind is AlgorithmConfig:  # built as the chosen algorithm's own dataclass
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of the algorithm's knobs, got {value!r}")
        return algorithm_from_dict(value, where)
    if kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {getattr(kind, '__name__', kind)} fields, got {value!r}")
        return from_dict(kind, value, where)  # type: ignore[arg-type]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _from_value(inner, value, where)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_from_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if kind is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if kind in (int, str, bool) and type(value) is not kind:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: Mapping[str, Any], where: str = "config") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(map(str, set(data) - set(names)))
    if unknown:
        error = ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(names)}")
        error.key = f"{where}.{unknown[0]}".removeprefix("config").removeprefix(".")
        raise error
    values = {k: _from_value(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    if where == "config" or where.startswith("config."):
        section = where.removeprefix("config").removeprefix(".")
        for k, v in values.items():
            check_value(f"{section}.{k}" if section else k, v)
    try:
        built = cls(**values)
    except (TypeError, ValueError, KeyError) as error:  # KeyError: e.g. an unknown template version
        if isinstance(error, ConfigError):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        failed = ConfigError(f"{where}: {message}")
        named = re.match(r"template '(\w+)'", str(message))  # TemplateSet names the template at fault
        if named and named.group(1) in values:
            failed.key = f"{where}.{named.group(1)}".removeprefix("config").removeprefix(".")
        raise failed from error
    return validate(built) if cls is TrainConfig else built


def to_dict(cfg: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return list(value)
        return value

    return {
        f.name: to_dict(getattr(cfg, f.name))
        if dataclasses.is_dataclass(getattr(cfg, f.name))
        else plain(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
    }


# ----------------------------------------------------------------------------- files and overrides


def apply_override(data: dict[str, Any], override: str, origins: dict[str, str] | None = None) -> None:
    """``a.b.c=value`` with a YAML value (``1e-5``, ``true``, ``[0.9, 0.99]``, ``null``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. optim.lr=1e-5)")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    try:
        node[leaf] = _yaml_value(raw)
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"override {override!r}: not valid YAML ({_yaml_problem(error)})") from None
    if origins is not None:
        _set_origin(origins, key.strip(), f"override {override!r}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(value: Any) -> Any:
    # PyYAML follows YAML 1.1, which reads 1e-5 as a string (it wants 1.0e-5); a number is
    # what anyone writing it means.
    return float(value) if isinstance(value, str) and _FLOAT.fullmatch(value.strip()) else value


def _yaml_value(raw: str) -> Any:
    return _number(yaml.safe_load(raw)) if raw.strip() else ""


def _yaml_problem(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{context}, {problem}" if context else str(problem)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of a YAML file (or the defaults), then each ``key=value`` override in order.

    A file may start from another: ``base: other.yaml`` (relative to the file) loads that one
    first and applies this file's keys on top, so an ablation is a short diff of its recipe.
    A file that names another ``algorithm.name`` than its base does not inherit the base's
    ``algorithm`` section. Every value's type and range is checked here, before anything runs; an
    error names where the value was set (file and line, or the override), the key, the value and
    what is allowed.
    """
    origins: dict[str, str] = {}  # dotted key -> "file, line N" or "override 'k=v'"
    data = _read(Path(path), set(), origins) if path is not None else {}
    for override in overrides:
        apply_override(data, override, origins)
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as error:
        origin = _origin(origins, getattr(error, "key", None) or _key_of(str(error)))
        if origin is None:
            raise
        raise ConfigError(f"{origin}: {error}") from None


def _key_of(message: str) -> str:
    match = re.match(r"config\.([A-Za-z0-9_.]+)", message)
    return match.group(1) if match else ""


def _set_origin(origins: dict[str, str], key: str, where: str) -> None:
    for old in [k for k in origins if k.startswith(key + ".")]:
        del origins[old]  # a section set anew: what its keys were set by no longer holds
    origins[key] = where


def _origin(origins: Mapping[str, str], key: str) -> str | None:
    parts = key.split(".") if key else []
    while parts:
        if ".".join(parts) in origins:
            return origins[".".join(parts)]
        parts.pop()
    return None


def _key_lines(node: yaml.Node | None, prefix: str, out: dict[str, int]) -> dict[str, int]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                out[prefix + str(key.value)] = key.start_mark.line + 1
                _key_lines(value, f"{prefix}{key.value}.", out)
    return out


def _read(path: Path, seen: set[Path], origins: dict[str, str]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: config files include each other in a loop")
    text = read_text(path, ConfigError)
    try:
        loaded = yaml.safe_load(text) or {}
        lines = _key_lines(yaml.compose(text), "", {}) if isinstance(loaded, dict) else {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at}: not valid YAML ({_yaml_problem(error)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(loaded).__name__}")
    data = _files_beside(_numbers(loaded), path.parent)
    base = data.pop("base", None)
    here = {key: f"{path}, line {line}" for key, line in lines.items() if key != "base"}
    if base is not None:
        where = f"{path}, line {lines.get('base', 1)}: config.base"
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{where}: expected the name of a config file, got {base!r}")
        if not (path.parent / base).is_file():
            raise ConfigError(f"{where}: {base} does not exist beside {path.name}")
        under = _read(path.parent / base, seen | {path}, origins)
        mine, theirs = data.get("algorithm"), under.get("algorithm")
        if (
            isinstance(mine, dict)
            and isinstance(theirs, dict)
            and mine.get("name", theirs.get("name")) != theirs.get("name")
        ):
            # a file that names another algorithm than its base starts that section afresh: the
            # base's knobs belong to the base's algorithm (and a knob not read is an error)
            under = {**under, "algorithm": {}}
        data = _merge(under, data)
    for key in sorted(here, key=lambda k: k.count(".")):
        _set_origin(origins, key, here[key])
    return data


# Data files a config names: a relative path that exists beside the config file means that file,
# so a recipe with its data (configs/data/...) works from any working directory.
FILE_KEYS = (
    ("algorithm", "sft_data"),
    ("algorithm", "attacker_sft_data"),
    ("data", "seeds"),
    ("data", "validation_seeds"),
)


def _files_beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    for section, key in FILE_KEYS:
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute() and (folder / value).is_file():
            data[section][key] = str((folder / value).resolve())
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _numbers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    return _number(node)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


# ----------------------------------------------------------------------------- resuming a run

# Keys a resumed run may change without asking: they decide what is shown and kept, never what
# is trained. Any other change (run.steps to extend a run, which also stretches the learning-rate
# schedule, included) must be allowed by name: ``advgame train --resume --allow-change run.steps``.
RESUME_MAY_CHANGE = (
    "run.out_dir",
    "run.progress",
    "run.tensorboard",
    "run.wandb",
    "run.wandb_project",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.validate_every",
)


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every key whose value differs."""
    before, after = dict(_walk(old)), dict(_walk(new))
    return {key: (before.get(key), value) for key, value in after.items() if before.get(key) != value}


def check_resumed_config(saved: TrainConfig, cfg: TrainConfig, allow: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
    """The changes of ``cfg`` against the config a run started with, when each is allowed
    (``RESUME_MAY_CHANGE`` or ``allow``); a ConfigError naming every other changed key."""
    keys = {key for key, _ in _walk(cfg)}
    unknown = [key for key in allow if key not in keys]
    if unknown:
        raise ConfigError(f"--allow-change {', '.join(unknown)}: not a config key (e.g. run.steps)")
    changes = config_changes(saved, cfg)
    refused = {k: v for k, v in changes.items() if k not in RESUME_MAY_CHANGE and k not in allow}
    if refused:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in refused.items())
        flags = " ".join(f"--allow-change {key}" for key in refused)
        raise ConfigError(
            f"the run was started with another config, and resuming would make its record false: {listed}. "
            f"Resume with the run's own values (its config.yaml), or allow the change: {flags}"
        )
    return changes
