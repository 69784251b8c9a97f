"""The algorithm interface: what a game algorithm tells the one trainer loop, and the registry
that finds an algorithm by the name a config gives (``algorithm.name``).

A new algorithm is one config dataclass and one class, in any file::

    from dataclasses import dataclass
    from algorithms.config import AlgorithmConfig, positive, ranged
    from algorithms.training.algorithm import Algorithm, register

    @dataclass
    class HingeConfig(AlgorithmConfig):      # the ``algorithm:`` section of a run config
        name: str = "hinge"
        beta: float = ranged(0.1, positive())  # its paper's default and its range; an unknown key is an error

    @register("hinge")
    class Hinge(Algorithm[PreferencePair]):
        config_class = HingeConfig
        config: HingeConfig                  # built from the section: read knobs as self.config.beta
        def examples(self, rounds, game, tokenizers, prefills, dist): ...
        def loss(self, player, chunk): ...

and it trains by name: in the same process after the import, from a file or module with
``advgame train --plugin my_algorithm.py``, or from an installed package that declares an entry
point in the group ``advgame.algorithms`` (``hinge = my_package.hinge:Hinge``; loading it may
register itself, or the entry point's object is registered under the entry point's name).
The step-by-step tutorial: ``docs/writing-an-algorithm.md``.

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
    config's ``algorithm:`` section is built as it (its fields' defaults: the paper's values, and
    the only defaults: ``@register`` refuses a class that sets a knob itself; ranges with
    ``ranged``, as every section's), and the trainer builds the algorithm as
    ``cls(config, max_context)``, which keeps it as ``self.config``.
  * ``sampler_of(role)``: whose weights play the rounds of a role: "learner", "ema" or "initial"
    [``sampler``: the knob ``sampler`` where the config has one, else "learner"];
    ``reference_of(role)``: the anchor of its loss [``reference``: the knob, else "initial"].
    ``copies()``: the weight copies besides the learner that the players keep ["ema"/"initial"
    where a role samples or anchors with them].
  * ``ema_decay``: the EMA's decay per step, read where "ema" is a copy [the knob ``ema_decay``].
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
  * ``minibatches`` [the knob ``minibatches``, else 1]: optimizer steps per learner and batch
    (PPO-style reuse of a batch).
  * ``shares_policy`` [False]: one set of weights plays and learns both roles (self-play).
  * ``mix_splits`` [``shares_policy``]: one update on both splits' examples together, instead of
    one per split.

Which roles learn at a step is not the algorithm's business: the trainer's ``train.schedule``
(both, attacker, defender, alternate) decides it, for every algorithm alike.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from advgame_env.roles import ROLES
from algorithms.algorithm_configs import BUILTIN
from algorithms.config import (
    AlgorithmConfig,
    ConfigError,
    algorithm_entry_points,
    register_section,
    section_class,
    section_names,
)

if TYPE_CHECKING:
    import torch

    from advgame_env.game import Game, Round
    from advgame_env.protocol import GenerationBackend
    from algorithms.training.batches import Tokenizers
    from algorithms.training.distributed import Dist
    from algorithms.training.players import Player, Which

Metrics = dict[str, float]


class Example(Protocol):
    """What the trainer reads of a training example: the role whose player learns from it."""

    @property
    def role(self) -> str: ...


E = TypeVar("E", bound=Example)


class Algorithm(Generic[E]):
    """Base class of every game algorithm; override ``examples`` and ``loss``, and what else differs.

    Its knobs are the fields of its config dataclass (``config_class``), read as ``self.config``:
    their defaults live there only (``@register`` refuses a class that sets one of them itself)."""

    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    metric_names: ClassVar[tuple[str, ...]] = ()  # the per-example sums ``loss`` returns
    shares_policy: ClassVar[bool] = False
    config: AlgorithmConfig  # a subclass narrows it to its config_class (``config: MyConfig``)

    def __init__(self, config: AlgorithmConfig, max_context: int = 2048) -> None:
        """``config``: the algorithm's section, an instance of ``config_class``; ``max_context``:
        the longest sequence, in tokens, the models take (``rollout.max_model_len``)."""
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} reads a {self.config_class.__name__} section, got {type(config).__name__}"
            )
        self.config, self.max_context = config, max_context

    # ---------------------------------------------------------------- weights
    #
    # The hooks below read the knob of the same name where the config has one, else the
    # default of an algorithm that has no such choice.

    @property
    def sampler(self) -> Which:
        sampler: Which = getattr(self.config, "sampler", "learner")
        return sampler

    @property
    def reference(self) -> Which:
        reference: Which = getattr(self.config, "reference", "initial")
        return reference

    @property
    def minibatches(self) -> int:
        return int(getattr(self.config, "minibatches", 1))

    @property
    def ema_decay(self) -> float | None:
        """The EMA's decay per step, read where "ema" is one of ``copies()``."""
        decay: float | None = getattr(self.config, "ema_decay", None)
        return decay

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


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Registered:
    """A registered algorithm: its class and the config dataclass of its ``algorithm:`` section."""

    name: str
    algorithm: type[Algorithm[Example]]
    config: type[AlgorithmConfig]

    def build(self, config: AlgorithmConfig, max_context: int) -> Algorithm[Example]:
        return self.algorithm(config, max_context)


_REGISTRY: dict[str, Registered] = {}
_BUILTINS = (
    "algorithms.training.preference",
    "algorithms.training.grpo",
    "algorithms.training.self_redteam",
    "algorithms.training.nash_md",
    "algorithms.training.spiral_rae",
)
_loaded_builtins = False

A = TypeVar("A", bound=type)


def register(name: str, *, config: type[AlgorithmConfig] | None = None) -> Callable[[A], A]:
    """Class decorator: the algorithm is known by ``name`` (``algorithm.name`` in a config), and
    the config reader builds that name's section as its config dataclass.

    ``config``: its config dataclass, where the class serves several names with different
    defaults (DPO and DPO-MD); else the class's ``config_class``. A name taken by another class
    is an error (registering the same class again, as a re-imported module does, is not), and so
    is a class that sets one of its knobs itself: a knob's default lives in the config only."""

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(
                f"@register({name!r}): {cls!r} is not a subclass of algorithms.training.algorithm.Algorithm"
            )
        section = config or cls.config_class
        if not (isinstance(section, type) and issubclass(section, AlgorithmConfig)):
            raise TypeError(f"@register({name!r}): its config {section!r} is not a subclass of AlgorithmConfig")
        if not issubclass(section, cls.config_class):
            raise TypeError(
                f"@register({name!r}): its config {section.__name__} is not a {cls.config_class.__name__}, "
                f"the config_class {cls.__name__} reads"
            )
        knobs = {f.name for f in dataclasses.fields(section)}
        for owner in cls.__mro__[: cls.__mro__.index(Algorithm)]:
            if clash := sorted(knobs & vars(owner).keys()):
                raise TypeError(
                    f"@register({name!r}): {owner.__qualname__} sets {', '.join(clash)} itself, a knob of "
                    f"{section.__name__}: its default lives in the config only; read it as self.config.{clash[0]}"
                )
        known = _REGISTRY.get(name)
        if known is not None and known.algorithm.__qualname__ != cls.__qualname__:
            raise ValueError(f"algorithm name {name!r} is already taken by {known.algorithm.__qualname__}")
        register_section(name, section)
        _REGISTRY[name] = Registered(name, cls, section)
        return cls

    return decorate


def _load_builtins() -> None:
    global _loaded_builtins
    if not _loaded_builtins:
        _loaded_builtins = True
        for module in _BUILTINS:
            importlib.import_module(module)


def lookup(name: str) -> Registered:
    """The algorithm registered as ``name``: built-in, registered in this process (``@register``,
    ``--plugin``) or declared by an installed package's entry point."""
    section = section_class(name)  # an unknown name: the config reader's error, listing the known ones
    _load_builtins()
    if name not in _REGISTRY:  # an entry point's class that did not register itself when loaded
        for entry in algorithm_entry_points():
            loaded = entry.load() if entry.name == name else None
            if isinstance(loaded, type) and issubclass(loaded, Algorithm):
                register(name, config=section)(loaded)
    if name not in _REGISTRY:
        raise ConfigError(
            f"config.algorithm.name: {name!r} has a config section ({section.__qualname__}) but no algorithm class; "
            f"register one with @register({name!r}) or point its entry point at the class"
        )
    return _REGISTRY[name]


def names() -> list[str]:
    """Every algorithm name known now, entry points included (they are loaded)."""
    _load_builtins()
    return section_names()


def builtin_configs() -> list[type[AlgorithmConfig]]:
    """The config dataclasses of the package's own algorithms (the table of rules lists their knobs)."""
    return list(dict.fromkeys(BUILTIN.values()))


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
