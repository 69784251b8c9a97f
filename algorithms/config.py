"""A training run's configuration: typed dataclasses, read from YAML plus ``key=value`` overrides.

    cfg = load_config("configs/cpu_smoke.yaml", ["optim.lr=1e-5", "run.steps=4"])

Every field has a default, so a config file lists only what it changes. Unknown keys are
errors that name the key and the valid ones: a typo must not silently train something else.
Every value's type and range (``RULES``) is checked when the config loads, before any model is
touched; a ``ConfigError`` names the file and line (or the override) that set it, the key, the
value and what is allowed.
The resolved config is written to the run folder (``config.yaml``) and is enough to repeat
the run.

One mechanism for every command. The command line is built from dataclasses by tyro (as in
CleanRL; ``algorithms/cli/main.py``): each command declares one, shared options are declared
once. A run config's sections are dataclasses too, read by one function, :func:`from_dict`,
which parses a mapping into any given dataclass with the errors and origins described above;
its range rules live on the fields (``ranged``), cross-key rules in each section's ``check``,
and :func:`validate` checks them all. Why not OmegaConf structured configs here: tried (2.4.0),
they handle Literal, ``X | None``, tuples, merges and dotted overrides, but they coerce, where a
training config must refuse (``steps: "10"`` loads as 10, ``tis: yes`` as True), their errors
name neither file nor line, and a structured default is an instance, so the default
algorithm's knobs (filled in by ``AlgorithmConfig``) would leak into every other algorithm.
tyro reads no YAML. So the strict reader stays here, small and generic; PyYAML reads the files.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from advgame_env.game import GameConfig, SelfRedTeamCoefficients
from advgame_env.seeds import read_text
from advgame_types import BackendKind
from algorithms.recipes import find_config

T = TypeVar("T")
Tree = dict[str, object]  # a parsed YAML mapping, before it is typed

# ----------------------------------------------------------------------------- allowed values
#
# The range of every numeric field (and of a few strings) sits on the field: ``ranged(default,
# rule)``. The types come from the annotations; the rules say which values of the type make
# sense. A field whose type is Optional may also be None (meaning what its comment says, e.g.
# the algorithm's default). Each given value is checked before its section is built, so a
# section's own checks see only values that pass here. ``tests/test_config.py`` checks that
# every numeric field has a rule.


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


RULE = "rule"  # the field metadata key of a field's Rule


def ranged(default: T, rule: Rule) -> T:
    """A field with a default and the rule its values must pass."""
    return field(default=default, metadata={RULE: rule})


DEFAULT_ALGORITHM = "advgame_dpo_md"


@dataclass
class ModelConfig:
    # bundled name, local folder or hub id; both players start here
    name: str = ranged("smollm2-135m-instruct", NON_EMPTY)
    lora: bool = True  # LoRA adapters on one frozen shared base; False: full fine-tuning
    lora_rank: int = ranged(16, at_least(1))
    lora_alpha: int = ranged(32, at_least(1))
    # auto: bf16 where the GPU supports it; native: also on a CPU that multiplies bf16 in
    # hardware (AVX512-BF16, AMX; agents.hf.native_bfloat16), fp32 on any other CPU, where torch
    # emulates bf16 many times slower. bf16 compute is FSDP2's MixedPrecisionPolicy under
    # parallel.sharding=fsdp2 (float32 master weights and gradient reduction), autocast otherwise
    precision: Literal["auto", "native", "fp32", "bf16"] = "auto"
    # recompute activations in the backward pass (one layer's activations kept, not all): less
    # memory for about a third more update compute; the reference designs train this way
    gradient_checkpointing: bool = False


@dataclass
class JudgeConfig:
    # rule: the model-free RuleJudge; llm: LLMJudge (our templates, any instruct model);
    # wildguard: WildGuardJudge (allenai/wildguard's own format; classifies only, so it needs
    # game.reward_rule self_redteam without a faithfulness check: build_judge refuses other games);
    # ensemble: the judges of judge.members as one (majority for labels, mean for scores;
    # advgame_env.ensemble), judge.both_orders asking every member for each pair in both orders
    kind: Literal["rule", "llm", "wildguard", "ensemble"] = "rule"
    members: tuple[JudgeConfig, ...] = ()  # kind: ensemble; each a judge section (kind, model, ...)
    # a second judge re-scores a share of each step's verdicts, with master-key canaries and
    # alarms (algorithms.training.judge_monitor); None: no audit
    audit: JudgeAuditConfig | None = None
    model: str = ranged("smollm2-135m-instruct", NON_EMPTY)  # the judge's model (kind: llm or wildguard)
    backend: BackendKind = "hf"
    url: str | None = None  # OpenAI-compatible server (backend: openai)
    # several replicas of that server, instead of url: least-loaded dispatch with failover
    # (agents.replicas); a replica that fails is left alone for replica_cooldown seconds
    urls: tuple[str, ...] | None = None
    replica_cooldown: float = ranged(30.0, non_negative())
    mode: Literal["generative", "logprob"] = "generative"  # kind: llm
    both_orders: bool = False  # judge each pair in both orders to cancel position bias (kind: llm)
    max_tokens: int = ranged(512, at_least(1))  # WildGuard's own client uses 128
    temperature: float = ranged(0.0, non_negative())
    # nucleus sampling of a generative judge (the AdvGame paper: 0.9 at temperature 0.6)
    top_p: float = ranged(1.0, within(0, 1, open_low=True))
    # a failed judge call is retried this often before the run stops (-1 would play no round at all)
    retries: int = ranged(2, at_least(0))
    # seconds one request to the judge's server may take, retries included (backend: openai)
    deadline: float = ranged(600.0, positive())

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The judge's server URLs: ``urls``, or ``url`` as the one-element case."""
        return self.urls if self.urls is not None else (self.url,) if self.url else ()

    def check(self) -> None:
        if self.kind == "ensemble" and len(self.members) < 2:
            raise ConfigError("config.judge.members: judge.kind ensemble needs at least two member judges")
        if self.kind != "ensemble" and self.members:
            raise ConfigError(f"config.judge.members: only judge.kind ensemble has members, not {self.kind}")
        for n, member in enumerate(self.members):
            if member.audit is not None:
                raise ConfigError(f"config.judge.members[{n}].audit: audit the ensemble (judge.audit), not a member")
            validate(member, f"config.judge.members[{n}]")
        if self.url is not None and self.urls is not None:
            raise ConfigError(
                "config.judge.urls: set judge.url (one server) or judge.urls (its replicas), not both; "
                "put every replica in judge.urls"
            )
        if self.urls is not None:
            where = "config.judge.urls"
            if self.kind == "rule" or self.backend != "openai":
                raise ConfigError(f"{where}: judge replicas need judge.kind llm or wildguard and judge.backend openai")
            if not self.urls:
                raise ConfigError(f"{where}: an empty list; list the replicas (e.g. [http://10.0.0.5:8000/v1, ...])")
            # as agents.replicas.check_urls checks them (not imported: agents loads torch)
            roots: list[str] = []
            for url in self.urls:
                if not url.startswith(("http://", "https://")):
                    raise ConfigError(f"{where}: {url!r} must start with http:// or https://")
                if url.rstrip("/").removesuffix("/v1") in roots:
                    raise ConfigError(f"{where}: {url!r} is listed twice; list each replica once")
                roots.append(url.rstrip("/").removesuffix("/v1"))
        if self.kind != "rule" and self.backend == "openai" and not self.endpoints:
            raise ConfigError(
                "config.judge.url: judge.backend openai needs judge.url (e.g. http://127.0.0.1:8000/v1) "
                "or judge.urls (several replicas)"
            )


@dataclass
class JudgeAlarmConfig:
    """When the audit of the judge raises its alarm: any rubric with at least ``min_count``
    re-scored verdicts in the window whose agreement with the audit judge falls below a floor,
    or a master-key canary favour rate above ``max_canary_rate`` (over ``min_count`` canaries)."""

    min_kappa: float | None = ranged(None, within(-1, 1))  # Cohen's kappa floor per rubric; None: no floor
    min_agreement: float | None = ranged(None, within(0, 1))  # raw agreement floor per rubric
    max_canary_rate: float | None = ranged(None, within(0, 1))  # ceiling on the canaries' favour rate
    min_count: int = ranged(8, at_least(1))  # verdicts (or canaries) before a figure can alarm
    action: Literal["warn", "stop"] = "warn"  # warn: progress bar and metrics.jsonl; stop: end the run


@dataclass
class JudgeAuditConfig:
    """``judge.audit``: independent re-scoring of the run's own verdicts while it trains."""

    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig())  # the second judge (no audit of its own)
    fraction: float = ranged(0.1, within(0, 1, open_low=True))  # share of each step's verdicts re-scored
    # master-key canaries added to each judge call; 0 leaves the judge's batches as they were
    # (a sampling or batch-size-sensitive LLM judge may give other verdicts in a longer batch)
    canaries: int = ranged(2, at_least(0))
    window: int = ranged(5, at_least(1))  # steps the agreement and canary figures are pooled over
    alarm: JudgeAlarmConfig = field(default_factory=JudgeAlarmConfig)

    def check(self) -> None:
        if self.judge.audit is not None:
            raise ConfigError("config.judge.audit.judge.audit: the audit judge is not audited in turn")


@dataclass
class RolloutConfig:
    # the engine that samples the players' actions: hf (the learners themselves), vllm (an
    # in-process engine beside the learner: the colocated mode), vllm_server (vllm serve
    # replicas at rollout.urls, fed through vLLM's weight-transfer API; agents.vllm_server)
    backend: Literal["hf", "vllm", "vllm_server"] = "hf"
    # vllm_server: replicas serving model.name for both players (LoRA: their adapters on one base);
    # under full fine-tuning each player has its own (roles.<role>.urls)
    urls: tuple[str, ...] = ()
    # vllm_server: how full weights travel (the servers' --weight-transfer-config backend):
    # advgame_file (safetensors in /dev/shm: CPU or one machine) or nccl (vLLM's NCCL engine: GPUs)
    weight_transport: Literal["advgame_file", "nccl"] = "advgame_file"
    # nccl: the trainer's address as the servers reach it, and the first port of the NCCL
    # groups (one per replica, on consecutive ports)
    nccl_address: str = ranged("127.0.0.1", NON_EMPTY)
    nccl_port: int = ranged(29600, at_least(1))
    # vllm_server: nats the served probe log-prob may differ from the learner's after a push
    # (float32 servers agree to ~1e-4; a bf16 server needs ~0.5)
    probe_tolerance: float = ranged(5e-3, positive())
    # rollout.backend vllm: the in-process engines' weights. auto: bfloat16 on a GPU that
    # supports it (half the bytes of float32), float32 elsewhere: the CPU build, where pushed
    # weights are checked against the learner's log-probs to 5e-3 nats (bf16 would need ~0.5)
    engine_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # rollout.backend hf: the dtype the players sample in. float32: the learners themselves;
    # bfloat16: a bfloat16 copy of each, kept up to date (agents.hf.SamplingCopy), twice as fast
    # where the machine multiplies bfloat16 in hardware; auto: bfloat16 there (a GPU, or a CPU
    # with AVX512-BF16/AMX), float32 elsewhere. The updates stay float32 and recompute every
    # log-prob they use (docs/paper-fidelity.md, "Sampling in bfloat16")
    hf_dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    temperature: float = ranged(0.6, non_negative())
    top_p: float = ranged(0.9, within(0, 1, open_low=True))
    max_model_len: int = ranged(2048, at_least(2))
    batch_size: int = ranged(32, at_least(1))  # sequences per HF generate call
    # Opening of the assistant's turn for players whose format has hidden reasoning
    # (game.attacker_think / defender_think), e.g. "<think>" as in Self-RedTeam; "" for none.
    think_prefill: str = ""


@dataclass
class RoleConfig:
    """One player's section, ``roles.attacker`` or ``roles.defender``: where it starts, how long
    its turns may be, where it is served, whether it learns and its auxiliary SFT chats."""

    # a different start from model.name: under LoRA an adapter folder of model.name (a LoRA run's
    # export, e.g. runs/x/final/defender), which starts this role's adapter; under full
    # fine-tuning a model folder. None: model.name
    model: str | None = None
    max_tokens: int = ranged(256, at_least(1))  # tokens of one generated turn
    # rollout.backend vllm_server with full fine-tuning: this player's own replicas (its weights
    # are pushed there); a role with none samples in process from its learner (hf)
    urls: tuple[str, ...] = ()
    train: bool = True  # whether this player learns (within train.schedule)
    # an auxiliary SFT loss on these JSONL chats, added to every micro-batch of this player
    # (algorithm.sft_coef and algorithm.sft_batch_size, shared by both roles)
    sft_data: str | None = None


@dataclass
class RolesConfig:
    """The ``roles:`` section: each player's own settings (``RoleConfig``)."""

    attacker: RoleConfig = field(default_factory=RoleConfig)
    defender: RoleConfig = field(default_factory=RoleConfig)

    def __getitem__(self, role: str) -> RoleConfig:
        """The section of ``role`` ("attacker" or "defender"), for code that loops over the roles."""
        if role not in ("attacker", "defender"):
            raise KeyError(role)
        chosen: RoleConfig = getattr(self, role)
        return chosen


# Keys that moved, old dotted key -> new: a config that still writes one gets an error naming the
# new key (and the file and line), not a silent default.
MOVED_KEYS = {
    **{f"model.{role}": f"roles.{role}.model" for role in ("attacker", "defender")},
    **{f"rollout.{role}_max_tokens": f"roles.{role}.max_tokens" for role in ("attacker", "defender")},
    **{f"rollout.{role}_urls": f"roles.{role}.urls" for role in ("attacker", "defender")},
    **{f"algorithm.train_{role}": f"roles.{role}.train" for role in ("attacker", "defender")},
    "algorithm.sft_data": "roles.defender.sft_data",
    "algorithm.attacker_sft_data": "roles.attacker.sft_data",
}


def moved(key: str) -> ConfigError:
    """The error for a key of the old layout: where the setting lives now."""
    error = ConfigError(
        f"config.{key} has moved to {MOVED_KEYS[key]}: each player's settings are one section now, "
        f"roles: {{attacker: {{model, max_tokens, urls, train, sft_data}}, defender: {{...}}}}; "
        f"write {MOVED_KEYS[key]} instead"
    )
    error.key = key  # so that the message starts with the file line or override that set it
    return error


@dataclass
class AlgorithmConfig:
    """The ``algorithm:`` section: the algorithm's name and the knobs every algorithm reads.

    Each algorithm extends it with a dataclass of its own knobs, whose defaults are its paper's
    values and the only ones (the algorithm reads them as ``self.config``; the built-in ones are
    in ``algorithms.algorithm_configs``); the section is built as the chosen algorithm's
    dataclass, so a knob it does not have is an error naming the knob and the algorithm, and
    reading one from it is an ``AttributeError`` (never a silent None). A knob read only in some
    settings is unset (None) by default, filled in where it is read, and an error where it is
    set but not read (``not_read``)."""

    # Whether the algorithm's update is defined on multi-turn rounds (game.turns > 1); the section
    # declares it so that config load can refuse a conversation game without importing the trainer.
    multi_turn: ClassVar[bool] = False

    name: str = DEFAULT_ALGORITHM
    # every algorithm: the auxiliary SFT loss on the chats of roles.<role>.sft_data
    # read with a file: 1.0 (Self-RedTeam's postfill-CoT SFT coefficient; AdvGame has no SFT term)
    sft_coef: float | None = ranged(None, non_negative())
    sft_batch_size: int | None = ranged(None, at_least(1))  # read with a file: 4
    # our own schedule of the SFT term (not a paper knob): the coefficient is sft_coef until
    # sft_decay_steps before sft_stop_step, falls linearly to 0 there and stays 0 (the game's
    # pairs alone train the late steps); None: sft_coef at every step (read with a file)
    sft_stop_step: int | None = ranged(None, at_least(1))
    sft_decay_steps: int | None = ranged(None, at_least(0))  # read with sft_stop_step: 0 (a switch-off)

    def __post_init__(self) -> None:
        pass  # the algorithms' own checks call this; sft_* are resolved by TrainConfig (they read roles)


def read_when(cfg: AlgorithmConfig, key: str, read: bool, default: T, condition: str) -> T | None:
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


# ----------------------------------------------------------------------------- algorithm names -> sections
#
# The reader knows an algorithm by its name and its section's dataclass only: the built-in ones
# from ``algorithms.algorithm_configs`` (this layer), the others as ``@register`` hands them over
# (``algorithms.training.algorithm``, which holds the algorithm classes and imports this module,
# never the other way round) or from an installed package's entry point.

ENTRY_POINT_GROUP = "advgame.algorithms"
_SECTIONS: dict[str, type[AlgorithmConfig]] = {}
_loaded_entry_points: set[str] = set()


def _builtin_sections() -> dict[str, type[AlgorithmConfig]]:
    if not _SECTIONS:
        from algorithms.algorithm_configs import BUILTIN  # beside this module; it imports this one

        _SECTIONS.update(BUILTIN)
    return _SECTIONS


def register_section(name: str, section: type[AlgorithmConfig]) -> None:
    """``section`` is the ``algorithm:`` section of algorithm ``name`` (``@register`` calls this).
    A name taken by another dataclass is an error; the same one again (a re-imported module) is not."""
    if not (isinstance(section, type) and issubclass(section, AlgorithmConfig)):
        raise TypeError(f"the config of algorithm {name!r}, {section!r}, is not a subclass of AlgorithmConfig")
    if hasattr(section, "rules"):  # the former second way to declare ranges: refuse it rather than ignore it
        raise TypeError(
            f"the config of algorithm {name!r}, {section.__name__}, has a rules table; declare each knob's range "
            f"on its field instead: knob: float = ranged(default, positive())"
        )
    known = _builtin_sections().get(name)
    if known is not None and known.__qualname__ != section.__qualname__:
        raise ValueError(f"algorithm name {name!r} is already taken, its section being {known.__qualname__}")
    _SECTIONS[name] = section


def _load_entry_point(entry: importlib.metadata.EntryPoint) -> None:
    if entry.name in _loaded_entry_points:
        return
    _loaded_entry_points.add(entry.name)
    try:
        loaded = entry.load()
    except Exception as error:  # a broken plugin package must say which one it is
        raise ConfigError(
            f"the algorithm entry point {entry.name} = {entry.value} (group {ENTRY_POINT_GROUP}) failed to load: {error}"
        ) from error
    # loading may have registered it; else the entry point names the algorithm class, whose
    # ``config_class`` is its section (the class itself is registered above, when it is built)
    section = getattr(loaded, "config_class", None)
    if entry.name not in _SECTIONS and isinstance(section, type) and issubclass(section, AlgorithmConfig):
        register_section(entry.name, section)


def algorithm_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The installed packages' algorithms (entry points of the group ``advgame.algorithms``)."""
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def section_names() -> list[str]:
    """Every algorithm name known now, entry points included (they are loaded)."""
    for entry in algorithm_entry_points():
        _load_entry_point(entry)
    return sorted(_builtin_sections())


def section_class(name: str) -> type[AlgorithmConfig]:
    """The dataclass of algorithm ``name``'s section: built-in, registered in this process
    (``@register``, ``--plugin``) or declared by an installed package's entry point."""
    sections = _builtin_sections()
    if name not in sections:
        for entry in algorithm_entry_points():
            if entry.name == name:
                _load_entry_point(entry)
    if name not in sections:
        error = ConfigError(
            f"config.algorithm.name: {name!r} is not one of {', '.join(map(repr, section_names()))}. An algorithm "
            f"of your own joins with @register in the same process, --plugin FILE_OR_MODULE (on any advgame command), or "
            f"an entry point in the group {ENTRY_POINT_GROUP}"
        )
        error.key = "algorithm.name"
        raise error
    return sections[name]


def algorithm_from_dict(data: Mapping[str, object], where: str = "config.algorithm") -> AlgorithmConfig:
    """The ``algorithm:`` section built as the chosen algorithm's own config dataclass.

    A knob the algorithm does not have is an error (set to null it is simply unset); a value
    is range-checked (its field's rule) before anything else."""
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
    for key in data:
        if f"algorithm.{key}" in MOVED_KEYS:
            raise moved(f"algorithm.{key}")
    section = section_class(name)
    hints = typing.get_type_hints(section)
    for key, value in data.items():
        rule = _knob_rule(section, key)
        if rule is not None and value is not None:  # the value's range first, as in every section
            typed = _from_value(hints.get(key) or _knob_type(key), value, f"{where}.{key}")
            if not rule.test(typed):
                raise ConfigError(f"{where}.{key}: {typed!r} is not allowed; expected {rule.allowed}")
    fields = {f.name for f in dataclasses.fields(section)}
    for key, value in data.items():
        if key not in fields and value is not None:
            old = _OLD_SCHEDULE_KEYS.get(key)
            when = f": the schedule is the trainer's now, write {old}" if old else ""
            raise not_read(name, key, when, [f for f in fields if f != "name"])
    given = {k: v for k, v in data.items() if k in fields} | {"name": name}
    built: AlgorithmConfig = from_dict(section, given, where)
    return built


def _knob_type(key: str) -> object:
    for cls in _config_classes():
        hints = typing.get_type_hints(cls)
        if key in hints:
            return hints[key]
    return object


def _knob_rule(chosen: type[AlgorithmConfig], key: str) -> Rule | None:
    """The rule of knob ``key``: the chosen algorithm's field, else the first algorithm's that has
    it (a knob of another algorithm gets its range checked before the error that it is not read)."""
    for cls in (chosen, *_config_classes()):
        for f in dataclasses.fields(cls):
            if f.name == key and (rule := rule_of(cls, f)) is not None:
                return rule
    return None


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
    period: int = ranged(10, at_least(1))  # steps per turn (schedule: alternate)


# ``opponents.draw``: how each player's opponent is drawn from its rival's pool of snapshots
DRAWS = ("latest", "uniform", "meta_nash")
_RECENT = re.compile(r"recent:([0-9]+)")


def _is_draw(value: str) -> bool:
    match = _RECENT.fullmatch(value)
    return value in DRAWS or (match is not None and int(match.group(1)) >= 1)


DRAW_RULE = Rule(_is_draw, "latest, uniform, recent:K (K an integer >= 1) or meta_nash")


@dataclass
class OpponentsConfig:
    """The ``opponents:`` section: who each player trains against.

    latest (the default): its rival as it is now, every step (no pool is kept). Otherwise every
    ``snapshot_every`` steps each role's sampling weights join that role's pool (the newest
    ``pool_size`` snapshots are kept, the oldest dropped), and each step a learning player's
    rounds are played against a member of its rival's pool: the rival as it is now or one of
    its snapshots, drawn uniformly (uniform), uniformly among the K newest members, the rival
    as it is now counting as the newest (recent:K; recent:1 is latest), or from the meta-Nash
    mixture of a cross-play between the members, recomputed every ``meta_every`` steps
    (meta_nash, PSRO-style; uniform until the first one)."""

    draw: str = ranged("latest", DRAW_RULE)
    pool_size: int = ranged(4, at_least(1))  # snapshots kept per role (the rival as it is now not counted)
    snapshot_every: int = ranged(10, at_least(1))  # steps between snapshots
    meta_every: int | None = ranged(None, at_least(1))  # read with draw meta_nash: 20 (steps between cross-plays)
    # read with draw meta_nash: 4 (harmful training seeds each attacker member rewrites in a cross-play)
    meta_seeds: int | None = ranged(None, at_least(1))

    def __post_init__(self) -> None:
        meta = self.draw == "meta_nash"
        for key, default in (("meta_every", 20), ("meta_seeds", 4)):
            value = getattr(self, key)
            if value is not None and not meta and self.draw in DRAWS:
                error = ConfigError(
                    f"config.opponents.{key} is read only with opponents.draw: meta_nash (the draw is "
                    f"{self.draw}); unset it (opponents.{key}=null) or set opponents.draw=meta_nash"
                )
                error.key = f"opponents.{key}"
                raise error
            if meta and value is None:
                setattr(self, key, default)

    @property
    def pooled(self) -> bool:
        """Whether pools are kept (any draw but latest)."""
        return self.draw != "latest"

    @property
    def recent(self) -> int | None:
        """K of ``recent:K``, else None."""
        match = _RECENT.fullmatch(self.draw)
        return int(match.group(1)) if match else None

    def check(self) -> None:
        k = self.recent
        if k is not None and k > self.pool_size + 1:
            raise ConfigError(
                f"config.opponents.draw: recent:{k} draws from more members than a pool holds (opponents.pool_size "
                f"{self.pool_size} snapshots and the rival as it is now); lower K to at most {self.pool_size + 1} "
                f"or raise opponents.pool_size"
            )


@dataclass
class OptimConfig:
    lr: float = ranged(1e-6, positive())
    betas: tuple[float, float] = ranged((0.9, 0.95), each(within(0, 1, open_high=True)))
    weight_decay: float = ranged(0.1, non_negative())
    max_grad_norm: float = ranged(1.0, positive())
    final_lr_scale: float = ranged(0.2, non_negative())  # cosine schedule from lr down to lr * final_lr_scale
    warmup_steps: int = ranged(0, at_least(0))  # optimizer steps of linear warm-up
    # optimizer steps the cosine spans; None: the run's own. Larger than the run: it stops before
    # the cosine ends (Self-RedTeam: 1,875 steps, stopped near 1,200 at about 37% of peak)
    schedule_steps: int | None = ranged(None, at_least(1))
    micro_batch_size: int = ranged(8, at_least(1))  # examples per forward/backward; gradients accumulate over a split


@dataclass
class DataConfig:
    seeds: str = ranged("bundled", NON_EMPTY)  # "bundled" (the train split) or a JSONL/CSV file of seeds
    validation_seeds: str = ranged("bundled", NON_EMPTY)  # "bundled" (the held-out split) or a file
    batch_size: int = ranged(4, at_least(1))  # seeds per split per step, per process
    # held-out seeds played each validation (direct rounds); run.validate_every=0 turns validation off
    validation_size: int = ranged(32, at_least(1))
    # a second file of benign seeds (e.g. configs/data/benign_instructions.jsonl, ordinary
    # everyday tasks) mixed into the benign split, so refusing an ordinary request loses a pair
    # (ours, not a paper knob: docs/paper-fidelity.md 4.17)
    extra_benign_seeds: str | None = None
    # the share of each step's benign seeds drawn from that file (read with it: 0.5)
    extra_benign_share: float | None = ranged(None, within(0.0, 1.0))

    def __post_init__(self) -> None:
        with_file = "with data.extra_benign_seeds"
        if self.extra_benign_seeds is None:
            if self.extra_benign_share is not None:
                raise ConfigError(f"config.data.extra_benign_share: it is read only {with_file}")
        elif self.extra_benign_share is None:
            self.extra_benign_share = 0.5


@dataclass
class RunConfig:
    steps: int = ranged(1000, at_least(1))
    seed: int = ranged(0, at_least(0))
    out_dir: str = ranged("runs/advgame", NON_EMPTY)
    checkpoint_every: int = ranged(50, at_least(1))
    keep_checkpoints: int = ranged(3, at_least(0))  # 0: keep every checkpoint
    validate_every: int = ranged(25, at_least(0))  # 0: never; validation also runs before the first step
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = ranged("advgame", NON_EMPTY)
    progress: bool = True


@dataclass
class ParallelConfig:
    """The ``parallel:`` section: how the learners spread over the processes.

    none: every process holds each player's full weights, EMA / initial copies and AdamW state,
    and gradients are summed over processes by hand (plain data parallelism). fsdp2: each of
    them is sharded over the processes with torch's FSDP2 (``fully_shard``, per decoder layer
    and the root), gradients are reduce-scattered by the engine, and checkpoints are written
    sharded with ``torch.distributed.checkpoint``."""

    sharding: Literal["none", "fsdp2"] = "none"


@dataclass
class TrainConfig:
    algorithm: AlgorithmConfig = field(default_factory=_default_algorithm)
    train: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    game: GameConfig = field(default_factory=GameConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    opponents: OpponentsConfig = field(default_factory=OpponentsConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self) -> None:
        # the SFT knobs are the algorithm section's, read when a role has SFT chats
        a, with_file = self.algorithm, bool(self.roles.attacker.sft_data or self.roles.defender.sft_data)
        sft = "with roles.attacker.sft_data or roles.defender.sft_data"
        a.sft_coef = read_when(a, "sft_coef", with_file, 1.0, sft)
        a.sft_batch_size = read_when(a, "sft_batch_size", with_file, 4, sft)
        stop = a.sft_stop_step = read_when(a, "sft_stop_step", with_file, None, sft)
        a.sft_decay_steps = read_when(a, "sft_decay_steps", stop is not None, 0, "with algorithm.sft_stop_step")
        if stop is not None and a.sft_decay_steps is not None and a.sft_decay_steps > stop:
            raise ConfigError(
                f"config.algorithm.sft_decay_steps: {a.sft_decay_steps} decay steps end at algorithm.sft_stop_step "
                f"({stop}), so they start before step 0; set at most {stop}"
            )

    def check(self) -> None:
        if self.game.turns > 1 and not type(self.algorithm).multi_turn:
            raise ConfigError(
                f"config.game.turns: {self.algorithm.name} does not train on conversations yet (turns "
                f"{self.game.turns}); set game.turns=1 to train, or play conversations with advgame redteam "
                "--turns K or advgame_env.parallel_env(turns=K)"
            )
        if (
            getattr(self.algorithm, "credit", "trajectory") == "reward_to_go"
            and self.game.reward_rule != "self_redteam"
        ):
            raise ConfigError(
                "config.algorithm.credit: reward_to_go needs per-turn rewards, which only game.reward_rule "
                "self_redteam pays (the AdvGame judge scores whole conversations); set algorithm.credit=trajectory"
            )
        if self.game.turns > 1 and self.opponents.draw == "meta_nash":
            raise ConfigError(
                "config.opponents.draw: meta_nash solves a single-turn cross-play; with game.turns > 1 "
                "draw latest, uniform or recent:K"
            )
        r, own = self.rollout, self.roles.attacker.urls or self.roles.defender.urls
        if r.backend == "vllm_server":
            if self.model.lora and not r.urls:
                raise ConfigError(
                    "config.rollout.urls: rollout.backend vllm_server needs the servers' URLs "
                    "(e.g. [http://127.0.0.1:8000]; start one with python -m agents.vllm_serve MODEL "
                    '--weight-transfer-config \'{"backend": "advgame_file"}\' --enable-lora)'
                )
            if self.model.lora and own:
                raise ConfigError(
                    "config.roles.attacker.urls: LoRA players share one base, served at rollout.urls; "
                    "per-player servers (roles.<role>.urls) are for full fine-tuning"
                )
            if not self.model.lora and r.urls:
                raise ConfigError(
                    "config.rollout.urls: under full fine-tuning each player's own weights are pushed to its own "
                    "servers: give roles.attacker.urls and roles.defender.urls instead"
                )
            if not self.model.lora and not own:
                raise ConfigError(
                    "config.roles.defender.urls: rollout.backend vllm_server needs roles.attacker.urls "
                    "and/or roles.defender.urls under full fine-tuning"
                )
        elif r.urls or own:
            raise ConfigError(
                f"config.rollout.urls: server URLs are read only with rollout.backend vllm_server, not {r.backend}"
            )
        if self.opponents.pooled and self.rollout.backend != "hf":
            raise ConfigError(
                f"config.opponents.draw: {self.opponents.draw} plays snapshots of the rival, which only the hf "
                f"rollout backend serves so far; set rollout.backend=hf or opponents.draw=latest"
            )
        if self.parallel.sharding == "fsdp2" and self.opponents.pooled:
            raise ConfigError(
                f"config.opponents.draw: {self.opponents.draw} keeps snapshots in extra model slots, which "
                "parallel.sharding=fsdp2 does not shard yet; set parallel.sharding=none or opponents.draw=latest"
            )


class ConfigError(ValueError):
    """A config that cannot be run; the message names the key (and the file), the value and what is allowed."""

    key: str | None = None  # the dotted key at fault, where the message alone does not tell it


# Rules of sections declared where ``algorithms`` may not reach into (advgame_env imports
# nothing from us), by class and field: the same rules, kept beside the sections that use them.
FOREIGN_RULES: dict[type, dict[str, Rule]] = {
    # GameConfig checks some of these itself; the rules here name the value
    GameConfig: {
        "num_attacks": at_least(1),
        "num_responses": at_least(1),
        "max_attack_chars": at_least(1),
        "max_response_chars": at_least(1),
        "direct_fraction": within(0, 1),
        "direct_split_seed": at_least(0),
        "turns": at_least(1),
        "max_conversation_chars": at_least(1),
    },
    SelfRedTeamCoefficients: {f.name: non_negative() for f in dataclasses.fields(SelfRedTeamCoefficients)},
}


def rule_of(cls: type, f: dataclasses.Field[object]) -> Rule | None:
    """The rule of field ``f`` of section ``cls``: its own (``ranged``), else ``FOREIGN_RULES``'."""
    rule = f.metadata.get(RULE)
    return rule if isinstance(rule, Rule) else FOREIGN_RULES.get(cls, {}).get(f.name)


def _sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type, dataclasses.Field[object]]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield from _sections(kind, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls, f


class _RuleTable(Mapping[str, Rule]):
    """Every rule by dotted key (what the tests and docs list; the checks read the fields
    themselves), the built-in algorithms' knobs included. Gathered on first use:
    ``algorithms.algorithm_configs`` imports this module."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] | None = None

    def _table(self) -> dict[str, Rule]:
        if self._rules is None:
            from algorithms.algorithm_configs import BUILTIN

            rules = {key: rule for key, cls, f in _sections(TrainConfig) if (rule := rule_of(cls, f))}
            for cls in BUILTIN.values():
                rules |= {f"algorithm.{key}": rule for key, owner, f in _sections(cls) if (rule := rule_of(owner, f))}
            self._rules = rules
        return self._rules

    def __getitem__(self, key: str) -> Rule:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


RULES: Mapping[str, Rule] = _RuleTable()


def _check_rule(cls: type, f: dataclasses.Field[object], value: object, where: str) -> None:
    rule = rule_of(cls, f)
    if rule is not None and value is not None and not rule.test(value):
        raise ConfigError(f"{where}: {value!r} is not allowed; expected {rule.allowed}")


def _walk(cfg: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _walk(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def validate(cfg: T, where: str = "config") -> T:
    """Check every field's rule (defaults included) and each section's ``check`` of the rules
    that tie its keys together, depth first; ``cfg`` when all pass."""
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{where}.{f.name}")
        else:
            _check_rule(type(cfg), f, value, f"{where}.{f.name}")
    check = getattr(cfg, "check", None)
    if callable(check):
        check()
    return cfg


# ----------------------------------------------------------------------------- dict <-> dataclass

# A section whose class depends on the data (e.g. one class per algorithm, chosen by its name):
# ``field(default_factory=..., metadata={CHOOSE: function of the section's mapping -> class})``.
CHOOSE = "choose"


def _from_value(kind: object, value: object, where: str) -> object:
    if kind is AlgorithmConfig:  # built as the chosen algorithm's own dataclass
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of the algorithm's knobs, got {value!r}")
        return algorithm_from_dict(value, where)
    if kind is object:  # a knob of no known algorithm: its own section says what it is
        return value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {kind.__name__} fields, got {value!r}")
        return from_dict(kind, value, where)
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
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list of any length
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_from_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
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
        raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def from_dict(
    cls: type[T], data: Mapping[str, object], where: str = "config", origins: Mapping[str, str] | None = None
) -> T:
    """``data`` as a ``cls``: each value of its field's type (nested sections too) and within its
    rule, unknown keys refused naming the valid ones, then the section's own checks. A
    ConfigError names ``where`` and the key; with ``origins`` (dotted key below ``config`` ->
    "file, line N" or "override 'k=v'", as ``load_config`` gathers them) it starts with where
    the value at fault was set. It works for any dataclass, so a caller may pick a section's class
    from another key first and parse the section with it."""
    if origins is not None:
        try:
            return from_dict(cls, data, where)
        except ConfigError as error:
            origin = _origin(origins, error.key or _key_of(str(error)))
            if origin is None:
                raise
            raise ConfigError(f"{origin}: {error}") from None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(map(str, set(data) - set(fields)))
    for key in unknown:
        if _relative(f"{where}.{key}") in MOVED_KEYS:
            raise moved(_relative(f"{where}.{key}"))
    if unknown:
        refused = ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(fields)}")
        refused.key = _relative(f"{where}.{unknown[0]}")
        raise refused
    values = {}
    for k, v in data.items():
        choose = fields[k].metadata.get(CHOOSE)
        kind = choose(v) if callable(choose) and isinstance(v, Mapping) else hints[k]
        values[k] = _from_value(kind, v, f"{where}.{k}")
        _check_rule(cls, fields[k], values[k], f"{where}.{k}")
    try:
        built = cls(**values)
    except (TypeError, ValueError, KeyError) as error:  # KeyError: e.g. an unknown template version
        if isinstance(error, ConfigError):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        failed = ConfigError(f"{where}: {message}")
        named = re.match(r"template '(\w+)'", str(message))  # TemplateSet names the template at fault
        if named and named.group(1) in values:
            failed.key = _relative(f"{where}.{named.group(1)}")
        raise failed from error
    return validate(built, where) if where == "config" else built


def _relative(key: str) -> str:
    return key.removeprefix("config").removeprefix(".")


def to_dict(cfg: object) -> dict[str, object]:
    def plain(value: object) -> object:
        if isinstance(value, tuple):
            return [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        return value

    return {
        f.name: to_dict(getattr(cfg, f.name))
        if dataclasses.is_dataclass(getattr(cfg, f.name))
        else plain(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)  # type: ignore[arg-type]
    }


# ----------------------------------------------------------------------------- files and overrides


def apply_override(data: Tree, override: str, origins: dict[str, str] | None = None) -> None:
    """``a.b.c=value`` with a YAML value (``1e-5``, ``true``, ``[0.9, 0.99]``, ``null``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. optim.lr=1e-5)")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    try:
        node[leaf] = _yaml_value(raw)
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"override {override!r}: not valid YAML ({_yaml_problem(error)})") from None
    if origins is not None:
        _set_origin(origins, key.strip(), f"override {override!r}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(value: object) -> object:
    # PyYAML follows YAML 1.1, which reads 1e-5 as a string (it wants 1.0e-5); a number is
    # what anyone writing it means.
    return float(value) if isinstance(value, str) and _FLOAT.fullmatch(value.strip()) else value


def _yaml_value(raw: str) -> object:
    return _number(yaml.safe_load(raw)) if raw.strip() else ""


def _yaml_problem(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{context}, {problem}" if context else str(problem)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of a YAML file (or the defaults), then each ``key=value`` override in order.

    A file may start from another: ``base: other.yaml`` (relative to the file, else a shipped
    config's name such as ``cpu_smoke.yaml``) loads that one
    first and applies this file's keys on top, so an ablation is a short diff of its recipe.
    A file that names another ``algorithm.name`` than its base does not inherit the base's
    ``algorithm`` section. Every value's type and range is checked here, before anything runs; an
    error names where the value was set (file and line, or the override), the key, the value and
    what is allowed.
    """
    origins: dict[str, str] = {}  # dotted key -> "file, line N" or "override 'k=v'"
    data = _read(find_config(path), set(), origins) if path is not None else {}  # a shipped recipe's name too
    for override in overrides:
        apply_override(data, override, origins)
    _refuse_moved(data, origins)
    return from_dict(TrainConfig, data, origins=origins)


def _refuse_moved(data: Tree, origins: Mapping[str, str]) -> None:
    """Every key of the old layout at once, each with where it was set (a run folder's
    config.yaml of that time holds all ten); a single one is refused by ``from_dict``."""
    found = [
        key
        for key in MOVED_KEYS
        if isinstance(part := data.get(key.partition(".")[0]), dict) and key.partition(".")[2] in part
    ]
    if len(found) > 1:
        by_source: dict[str, list[tuple[int, str]]] = {}  # file (or override) -> [(line, "old -> new")]
        for key in found:
            source, _, line = (_origin(origins, key) or "config").partition(", line ")
            by_source.setdefault(source, []).append((int(line or 0), f"{key} -> {MOVED_KEYS[key]}"))
        listed = "; ".join(
            f"{source}: " + ", ".join(f"line {n} {move}" if n else move for n, move in sorted(moves))
            for source, moves in by_source.items()
        )
        raise ConfigError(
            f"config keys that have moved: {listed}. Each player's settings are one section now, "
            "roles: {attacker: {model, max_tokens, urls, train, sft_data}, defender: {...}}; write the new keys"
        )


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
    # an unknown section has no origin of its own; the first key set under it names where it came from
    below = [where for k, where in origins.items() if key and k.startswith(key + ".")]
    return below[0] if below else None


def _key_lines(node: yaml.Node | None, prefix: str, out: dict[str, int], path: Path) -> dict[str, int]:
    """The line of every dotted key; a key given twice in one mapping is a ConfigError (PyYAML
    would keep the last one silently: ``run: {steps: 3, steps: 9}`` ran 9 steps)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                dotted, line = prefix + str(key.value), key.start_mark.line + 1
                if dotted in out:
                    raise ConfigError(
                        f"{path}, line {line}: config.{dotted} is given twice (first on line {out[dotted]}); keep one"
                    )
                out[dotted] = line
                _key_lines(value, f"{dotted}.", out, path)
    return out


def _read(path: Path, seen: set[Path], origins: dict[str, str]) -> Tree:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: config files include each other in a loop")
    text = read_text(path, ConfigError)
    try:
        loaded = yaml.safe_load(text) or {}
        lines = _key_lines(yaml.compose(text), "", {}, path) if isinstance(loaded, dict) else {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at}: not valid YAML ({_yaml_problem(error)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(loaded).__name__}")
    data = _files_beside(_section(loaded), path.parent)
    base = data.pop("base", None)
    here = {key: f"{path}, line {line}" for key, line in lines.items() if key != "base"}
    if base is not None:
        where = f"{path}, line {lines.get('base', 1)}: config.base"
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{where}: expected the name of a config file, got {base!r}")
        # beside the file first; else a shipped recipe's name, as --config reads it
        below = path.parent / base if (path.parent / base).is_file() else find_config(base)
        if not below.is_file():
            raise ConfigError(f"{where}: {base} does not exist beside {path.name}, nor is it a shipped config")
        under = _read(below, seen | {path}, origins)
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
    ("roles", "defender", "sft_data"),
    ("roles", "attacker", "sft_data"),
    ("data", "seeds"),
    ("data", "validation_seeds"),
    ("data", "extra_benign_seeds"),
)


def _files_beside(data: Tree, folder: Path) -> Tree:
    for *sections, key in FILE_KEYS:
        part: object = data
        for section in sections:
            part = part.get(section) if isinstance(part, dict) else None
        value = part.get(key) if isinstance(part, dict) else None
        beside = folder / value if isinstance(value, str) and value and not Path(value).is_absolute() else None
        if isinstance(part, dict) and beside is not None and beside.is_file():
            part[key] = str(beside.resolve())
    return data


def _merge(base: Tree, top: Tree) -> Tree:
    out = dict(base)
    for key, value in top.items():
        under = out.get(key)
        out[key] = _merge(under, value) if isinstance(value, dict) and isinstance(under, dict) else value
    return out


def _numbers(node: object) -> object:
    if isinstance(node, dict):
        return _section(node)
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    return _number(node)


def _section(node: dict[object, object]) -> Tree:
    # keys as YAML gave them (an int key too: from_dict names it as unknown)
    return {k: _numbers(v) for k, v in node.items()}  # type: ignore[misc]


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


# ----------------------------------------------------------------------------- resuming a run

# Keys a resumed run may change without asking: they decide what is shown and kept, never what
# is trained. Every other change (run.steps to extend a run, which also stretches the learning-rate
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


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[object, object]]:
    """``{dotted key: (old value, new value)}`` for every key whose value differs."""
    before, after = dict(_walk(old)), dict(_walk(new))
    return {key: (before.get(key), value) for key, value in after.items() if before.get(key) != value}


def check_resumed_config(
    saved: TrainConfig, cfg: TrainConfig, allow: Sequence[str] = ()
) -> dict[str, tuple[object, object]]:
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
