"""The algorithm interface: what a game algorithm tells the one trainer loop, and the registry
that finds an algorithm by the name a config gives (``algorithm.name``).

A new algorithm is one class and one config dataclass, in any file::

    from dataclasses import dataclass
    from algorithms.config import AlgorithmConfig
    from algorithms.training.algorithm import Algorithm, register

    @dataclass
    class HingeConfig(AlgorithmConfig):      # the ``algorithm:`` section of a run config
        beta: float = 0.1                    # its paper's defaults; an unknown key is an error

    @register("hinge")
    class Hinge(Algorithm[PreferencePair]):
        config_class = HingeConfig
        def examples(self, rounds, game, tokenizers, prefills, dist): ...
        def loss(self, player, chunk): ...

and it trains by name: in the same process after the import, from a file or module with
``advgame train --plugin my_algorithm.py``, or from an installed package that declares an entry
point in the group ``advgame.algorithms`` (``hinge = my_package.hinge:Hinge``; loading it may
register itself, or the entry point's object is registered under the entry point's name).

The trainer's loop, and where each hook enters it::

    for step in steps:
        each role plays with the weights ``sampler_of(role)`` of its player   (a role that does
                                                                              not learn this step
                                                                              plays its learner)
        for each split (harmful, benign), or once on both mixed if ``mix_splits``:
            examples(rounds, ...)                    -> the step's training examples, per role
            for each learner (a set of weights) trained this step, on its roles' examples:
                prepare(player, examples, dist, chunk)   once, before the first optimizer step
                repeat ``minibatches`` times, on a seeded shuffle's k-th share:
                    minimise Σ weight(e)·loss(e) / Σ weight(e)    (sums over every process,
                    examples with ``trains(e)`` False count in the denominator only)
                    in micro-batches of ``optim.micro_batch_size``: loss(player, chunk)
        EMA update of every trained learner, if "ema" in ``copies()``   (decay ``ema_decay``)

Hooks (the defaults in brackets):
  * ``config_class``: the algorithm's config dataclass, a subclass of ``AlgorithmConfig``; a
    config's ``algorithm:`` section is built as it (its fields' defaults: the paper's values).
    ``from_config(config, max_context)`` builds the algorithm from it [``cls(config, max_context)``];
    ``config_as(config, MyConfig)`` gives it back as your dataclass, type-checked.
  * ``sampler_of(role)``: whose weights play the rounds of a role: "learner", "ema" or "initial"
    [the attribute ``sampler``, "learner"]; ``reference_of(role)``: the anchor of its loss
    [the attribute ``reference``, "initial"]. ``copies()``: the weight copies besides the learner
    that the players keep ["ema"/"initial" where a role samples or anchors with them].
  * ``ema_decay``: the EMA's decay per step, read where "ema" is a copy [the config's ``ema_decay``].
  * ``examples(rounds, game, tokenizers, prefills, dist)``: the training examples of a batch of
    played rounds, each with a ``role`` (see ``Example``). ``tokenizers``: role -> that player's
    tokenizer; ``prefills``: role -> assistant prefill (part of the prompt); ``dist``: the
    trainer's ``Dist``, for statistics over every process's batch (``dist.sum``). The helpers
    ``batches.preference_pairs`` and ``batches.rollouts`` turn rounds into pairs or rollouts.
  * ``weight(example)`` [1.0] and ``trains(example)`` [True]: the example's weight in the mean,
    and whether it is trained (False: it counts in Σ weight only, as GRPO's failed rollouts).
  * ``prepare(player, examples, dist, chunk)`` [nothing]: called once per learner and batch before
    any optimizer step, while the learner is still the policy that played: old log-probs,
    advantages whitened over the whole batch. Run forward passes in chunks of ``chunk``.
  * ``loss(player, chunk) -> (losses, metrics)``: a loss per example (a tensor of shape
    ``[len(chunk)]``, with gradients to the learner) and per-example SUMS of the figures named in
    ``metric_names`` (the trainer logs their mean over examples). Run a policy with
    ``player.active(which)``; ``agents.hf.token_logprobs`` gives per-token log-probs.
  * ``rollout_backend(role, player, backend)`` [``backend``]: the generation backend that plays a
    role whose player learns this step, given the one that samples ``sampler_of(role)`` (Nash-MD
    wraps it to draw each pair's second sample from a geometric mixture with the reference).
  * ``state_dict()`` [{}] and ``load_state_dict(state)`` [nothing]: what the algorithm itself
    carries from step to step (SPIRAL's running baselines), saved in every checkpoint and
    restored on resume; plain numbers, strings, lists and dicts (or tensors).
  * ``minibatches`` [1]: optimizer steps per learner and batch (PPO-style reuse of a batch).
  * ``shares_policy`` [False]: one set of weights plays and learns both roles (self-play).
  * ``mix_splits`` [``shares_policy``]: one update on both splits' examples together, instead of
    one per split.

Which roles learn at a step is not the algorithm's business: the trainer's ``train.schedule``
(both, attacker, defender, alternate) decides it, for every algorithm alike.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from advgame_env.roles import ROLES
from algorithms.config import AlgorithmConfig, ConfigError

if TYPE_CHECKING:
    import torch

    from advgame_env.game import Game, Round
    from advgame_env.protocol import GenerationBackend
    from algorithms.training.batches import Tokenizers
    from algorithms.training.distributed import Dist
    from algorithms.training.players import Player, Which

ENTRY_POINT_GROUP = "advgame.algorithms"

Metrics = dict[str, float]


class Example(Protocol):
    """What the trainer reads of a training example: the role whose player learns from it."""

    @property
    def role(self) -> str: ...


E = TypeVar("E", bound=Example)


class Algorithm(Generic[E]):
    """Base class of every game algorithm; override ``examples`` and ``loss``, and what else differs."""

    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    metric_names: ClassVar[tuple[str, ...]] = ()  # the per-example sums ``loss`` returns
    shares_policy: ClassVar[bool] = False
    # Trains on multi-turn rounds (game.turns > 1); config load refuses turns > 1 otherwise
    multi_turn: ClassVar[bool] = False
    sampler: Which = "learner"
    reference: Which = "initial"
    minibatches: int = 1
    ema_decay: float | None = None  # read where "ema" is one of ``copies()``
    config: AlgorithmConfig
    max_context: int = 2048

    def __init__(self, config: AlgorithmConfig, max_context: int = 2048) -> None:
        self.config, self.max_context = config, max_context
        self.ema_decay = getattr(config, "ema_decay", None)

    @classmethod
    def from_config(cls, config: AlgorithmConfig, max_context: int) -> Algorithm[E]:
        """The algorithm of a config section (built as ``config_class``); ``max_context``: the
        longest sequence, in tokens, the models take (``rollout.max_model_len``)."""
        return cls(config, max_context)

    # ---------------------------------------------------------------- weights

    def sampler_of(self, role: str) -> Which:
        return self.sampler

    def reference_of(self, role: str) -> Which:
        return self.reference

    def copies(self) -> set[str]:
        return {w for role in ROLES for w in (self.sampler_of(role), self.reference_of(role)) if w != "learner"}

    @property
    def mix_splits(self) -> bool:
        return self.shares_policy

    # ---------------------------------------------------------------- examples and loss

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str],
        dist: Dist,
    ) -> list[E]:
        raise NotImplementedError(f"{type(self).__name__} must define examples()")

    def weight(self, example: E) -> float:
        return 1.0

    def trains(self, example: E) -> bool:
        return True

    def prepare(self, player: Player, batch: Sequence[E], dist: Dist, chunk: int) -> None:
        return None

    def loss(self, player: Player, chunk: Sequence[E]) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    # ---------------------------------------------------------------- rollouts and state

    def rollout_backend(self, role: str, player: Player, backend: GenerationBackend) -> GenerationBackend:
        return backend

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


C = TypeVar("C", bound=AlgorithmConfig)


def config_as(config: AlgorithmConfig, kind: type[C]) -> C:
    """``config`` as the algorithm's own config dataclass (for ``from_config``), checked."""
    if not isinstance(config, kind):
        raise TypeError(f"expected the {kind.__name__} of the algorithm's section, got {type(config).__name__}")
    return config


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Registered:
    """A registered algorithm: its class and the config dataclass of its ``algorithm:`` section."""

    name: str
    algorithm: type[Algorithm[Example]]
    config: type[AlgorithmConfig]

    def build(self, config: AlgorithmConfig, max_context: int) -> Algorithm[Example]:
        built = self.algorithm.from_config(config, max_context)
        return built


_REGISTRY: dict[str, Registered] = {}
_BUILTINS = (
    "algorithms.training.preference",
    "algorithms.training.grpo",
    "algorithms.training.self_redteam",
    "algorithms.training.nash_md",
    "algorithms.training.spiral_rae",
)
_loaded_builtins = False
_loaded_entry_points: set[str] = set()

A = TypeVar("A", bound=type)


def register(name: str, *, config: type[AlgorithmConfig] | None = None) -> Callable[[A], A]:
    """Class decorator: the algorithm is known by ``name`` (``algorithm.name`` in a config).

    ``config``: its config dataclass, where the class serves several names with different
    defaults (DPO and DPO-MD); else the class's ``config_class``. A name taken by another class
    is an error (registering the same class again, as a re-imported module does, is not)."""

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(
                f"@register({name!r}): {cls!r} is not a subclass of algorithms.training.algorithm.Algorithm"
            )
        section = config or cls.config_class
        if not (isinstance(section, type) and issubclass(section, AlgorithmConfig)):
            raise TypeError(f"@register({name!r}): its config {section!r} is not a subclass of AlgorithmConfig")
        known = _REGISTRY.get(name)
        if known is not None and known.algorithm.__qualname__ != cls.__qualname__:
            raise ValueError(f"algorithm name {name!r} is already taken by {known.algorithm.__qualname__}")
        _REGISTRY[name] = Registered(name, cls, section)
        return cls

    return decorate


def _load_builtins() -> None:
    global _loaded_builtins
    if not _loaded_builtins:
        _loaded_builtins = True
        for module in _BUILTINS:
            importlib.import_module(module)


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
    if entry.name not in _REGISTRY and isinstance(loaded, type) and issubclass(loaded, Algorithm):
        register(entry.name)(loaded)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def lookup(name: str) -> Registered:
    """The algorithm registered as ``name``: built-in, registered in this process (``@register``,
    ``--plugin``) or declared by an installed package's entry point."""
    _load_builtins()
    if name not in _REGISTRY:
        for entry in _entry_points():
            if entry.name == name:
                _load_entry_point(entry)
    if name not in _REGISTRY:
        raise ConfigError(
            f"config.algorithm.name: {name!r} is not one of {', '.join(map(repr, names()))}. An algorithm of "
            f"your own joins with @register in the same process, advgame train --plugin FILE_OR_MODULE, or "
            f"an entry point in the group {ENTRY_POINT_GROUP}"
        )
    return _REGISTRY[name]


def names() -> list[str]:
    """Every algorithm name known now, entry points included (they are loaded)."""
    _load_builtins()
    for entry in _entry_points():
        _load_entry_point(entry)
    return sorted(_REGISTRY)


def builtin_configs() -> list[type[AlgorithmConfig]]:
    """The config dataclasses of the package's own algorithms (the table of rules lists their knobs)."""
    _load_builtins()
    return [entry.config for entry in _REGISTRY.values() if entry.algorithm.__module__ in _BUILTINS]


def build_algorithm(config: AlgorithmConfig, max_context: int) -> Algorithm[Example]:
    """The algorithm object of a config's ``algorithm:`` section."""
    return lookup(config.name).build(config, max_context)


def load_plugin(spec: str) -> None:
    """Import a plugin so that its ``@register`` calls run: a path to a ``.py`` file, or a module
    name importable from ``sys.path`` (``my_package.algorithms``)."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--plugin {spec}: no such file")
        module_name = f"advgame_plugin_{path.stem}"
        found = importlib.util.spec_from_file_location(module_name, path.resolve())
        if found is None or found.loader is None:
            raise ConfigError(f"--plugin {spec}: not a Python file that can be imported")
        module = importlib.util.module_from_spec(found)
        sys.modules[module_name] = module  # dataclasses look their module up while the file runs
        try:
            found.loader.exec_module(module)
        except Exception:
            del sys.modules[module_name]
            raise
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as error:
        if error.name and spec.startswith(error.name):
            raise ConfigError(f"--plugin {spec}: no such file, and no module of that name on the Python path") from None
        raise


def policy_logprobs(
    player: Player, which: Which, sequences: Sequence[tuple[list[int], list[int]]], max_context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each (prompt ids, continuation ids) under policy ``which`` of the
    player, and the mask of the continuation tokens: ``[batch, longest continuation]`` each.
    With gradients when ``which`` is "learner" (wrap it in ``torch.no_grad()`` otherwise)."""
    from agents.hf import token_logprobs  # torch and transformers: only where a loss is computed

    with player.active(which) as model:
        logps, mask = token_logprobs(model, sequences, pad_id=player.tokenizer.pad_token_id, max_context=max_context)
    return logps, mask
