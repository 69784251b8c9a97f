"""The trained players and the copies of their weights an algorithm needs.

Each player (attacker, defender) has up to three policies:

    learner   the weights the optimizer updates
    ema       θ_ema ← decay·θ_ema + (1 − decay)·θ once per step (the MD recipes' sampler and reference)
    initial   the starting weights, frozen (the on-policy and GRPO reference)

Two storages, one interface:
  * ``FullPlayer``: separate full models per copy (the paper's full fine-tuning);
  * ``LoraPlayer``: LoRA adapters on one frozen base shared by both players. The EMA is an
    adapter of its own (an EMA of the adapter tensors, see ``algorithms.training.ema`` for how that
    differs from an EMA of merged weights) and "initial" is the base with adapters disabled,
    which equals the start because LoRA adapters start as the identity.

``player.active(which)`` is the one way to run a policy: it yields the module with the right
weights switched on.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agents.models import ADAPTER_CONFIG, portable_name
from agents.roles import adapter_parameters, copy_adapter
from algorithms.training.copies import Which
from algorithms.training.ema import ema_update_adapter, ema_update_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Player:
    role: str
    tokenizer: PreTrainedTokenizerBase
    copies: frozenset[str]  # which of "ema" / "initial" this player keeps
    recompute: bool = False  # activation checkpointing in updates (see ``updating``)

    def trainable(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def learner_module(self) -> Any:
        """The module the optimizer updates (for LoRA: the PEFT model with every adapter)."""
        raise NotImplementedError

    def enable_recompute(self) -> None:
        """Recompute each decoder layer's activations in the backward pass instead of keeping
        them, as both reference designs train: one layer's activations instead of all."""
        self.learner_module().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.recompute = True

    @contextmanager
    def updating(self) -> Iterator[None]:
        """The context of the forward passes of a gradient update.

        transformers checkpoints a decoder layer only while that layer is in training mode, and
        a layer in training mode also drops the KV cache that generation needs. So with
        ``recompute`` only the layers' own flags are set, and only here: their sub-modules stay
        in eval mode (no dropout) and sampling keeps its cache.
        """
        module = self.learner_module()
        layers = [m for m in module.modules() if getattr(m, "gradient_checkpointing", False)] if self.recompute else []
        for layer in layers:
            layer.training = True
        try:
            yield
        finally:
            for layer in layers:
                layer.training = False

    @contextmanager
    def active(self, which: Which) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def sampling(self, which: Which) -> tuple[Any, str | None]:
        """(module, adapter name or None) that generates as policy ``which``."""
        raise NotImplementedError

    def ema_update(self, decay: float) -> None:
        raise NotImplementedError

    def opponent(self, tensors: dict[str, torch.Tensor]) -> tuple[Any, str | None]:
        """(module, adapter name or None) that generates as a past snapshot of this player,
        ``tensors`` as ``weights`` gave them: a slot of its own, so no policy of the player
        changes (an opponent pool plays it, ``training.opponents``)."""
        raise NotImplementedError

    def weights(self, which: Which) -> dict[str, torch.Tensor]:
        """The tensors that define policy ``which`` beyond the frozen base (for checkpoints)."""
        raise NotImplementedError

    def load_weights(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def export(self, which: Which, folder: Path) -> None:
        """A folder ``agents.load_model`` (and transformers' ``from_pretrained``) loads."""
        raise NotImplementedError

    def _check(self, which: Which) -> None:
        if which != "learner" and which not in self.copies:
            raise ValueError(f"the {self.role} keeps no {which!r} copy (it keeps {sorted(self.copies)})")


def _frozen_copy(model: Any) -> Any:
    twin = copy.deepcopy(model)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin


class FullPlayer(Player):
    def __init__(self, role: str, model: Any, tokenizer: PreTrainedTokenizerBase, copies: set[str]) -> None:
        self.role, self.tokenizer, self.copies = role, tokenizer, frozenset(copies)
        self.models = {"learner": model} | {which: _frozen_copy(model) for which in sorted(copies)}
        self.spare: Any = None  # the opponent slot (``opponent``)

    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.models["learner"].parameters() if p.requires_grad]

    def learner_module(self) -> Any:
        return self.models["learner"]

    @contextmanager
    def active(self, which: Which) -> Iterator[Any]:
        self._check(which)
        yield self.models[which]

    def sampling(self, which: Which) -> tuple[Any, str | None]:
        self._check(which)
        return self.models[which], None

    def ema_update(self, decay: float) -> None:
        ema_update_model(self.models["ema"], self.models["learner"], decay)

    def opponent(self, tensors: dict[str, torch.Tensor]) -> tuple[Any, str | None]:
        if self.spare is None:  # one more full model, made on first use
            self.spare = _frozen_copy(self.models["learner"])
        self.spare.load_state_dict(tensors, strict=True)
        return self.spare, None

    def weights(self, which: Which) -> dict[str, torch.Tensor]:
        self._check(which)
        return dict(self.models[which].state_dict())

    def load_weights(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        self._check(which)
        self.models[which].load_state_dict(tensors, strict=True)

    def export(self, which: Which, folder: Path) -> None:
        self._check(which)
        self.models[which].save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class LoraPlayer(Player):
    """One role's adapters on a PEFT model that may carry the other role's adapters too."""

    def __init__(self, role: str, peft_model: Any, tokenizer: PreTrainedTokenizerBase, copies: set[str]) -> None:
        self.role, self.tokenizer, self.copies = role, tokenizer, frozenset(copies)
        self.model = peft_model
        self.names = {"learner": role, "ema": f"{role}_ema"}
        if "ema" in copies:
            ema_update_adapter(peft_model, role, self.names["ema"])  # a missing EMA starts as a copy

    def trainable(self) -> list[torch.Tensor]:
        return list(adapter_parameters(self.model, self.role).values())

    def learner_module(self) -> Any:
        return self.model

    @contextmanager
    def active(self, which: Which) -> Iterator[Any]:
        self._check(which)
        if which == "initial":
            with self.model.disable_adapter():
                yield self.model
            return
        # set_adapter also marks that adapter (only) trainable; the EMA is never in an optimizer.
        self.model.set_adapter(self.names[which])
        yield self.model

    def sampling(self, which: Which) -> tuple[Any, str | None]:
        self._check(which)
        if which == "initial":
            raise ValueError("LoRA players sample from their learner or EMA adapter, not from the bare base")
        return self.model, self.names[which]

    def ema_update(self, decay: float) -> None:
        ema_update_adapter(self.model, self.names["learner"], self.names["ema"], decay)

    def opponent(self, tensors: dict[str, torch.Tensor]) -> tuple[Any, str | None]:
        name = f"{self.role}_opponent"
        if name not in self.model.peft_config:
            # a new adapter draws its initial A matrices from torch's RNG: keep the run's stream as
            # it is, so a resumed run (which makes the slot at another step) draws what this one does
            with torch.random.fork_rng():
                copy_adapter(self.model, self.role, name)
            for param in adapter_parameters(self.model, name).values():
                param.requires_grad_(False)
        params = adapter_parameters(self.model, name)
        if params.keys() != tensors.keys():
            raise ValueError(f"the opponent snapshot's tensors do not match the {self.role}'s adapter")
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(tensors[key])
        return self.model, name

    def weights(self, which: Which) -> dict[str, torch.Tensor]:
        self._check(which)
        if which == "initial":
            return {}  # the frozen base, rebuilt from the model name
        return {k: v.detach().clone() for k, v in adapter_parameters(self.model, self.names[which]).items()}

    def load_weights(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        self._check(which)
        if which == "initial":
            return
        params = adapter_parameters(self.model, self.names[which])
        if params.keys() != tensors.keys():
            raise ValueError(f"checkpoint tensors do not match the {self.names[which]!r} adapter's")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(tensors[name])

    def export(self, which: Which, folder: Path) -> None:
        """An adapter folder (adapter_config.json names the base); ``initial`` is not exported."""
        self._check(which)
        if which == "initial":
            raise ValueError("the initial policy of a LoRA player is the base model itself")
        name = self.names[which]
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            # PEFT writes a non-default adapter into a sub-folder named after it; save under
            # the name "default" (a temporary copy) so the folder itself holds the adapter.
            copy_adapter(self.model, name, "default")
            try:
                self.model.save_pretrained(scratch, selected_adapters=["default"])
            finally:
                self.model.delete_adapter("default")
            _portable_base(Path(scratch))
            shutil.copytree(scratch, folder, dirs_exist_ok=True)
        self.tokenizer.save_pretrained(folder)


def _portable_base(folder: Path) -> None:
    """PEFT names the base by the path it was loaded from (for the bundled model, this machine's
    cache folder); name it so that ``agents.load_model`` finds it on another machine."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = portable_name(config["base_model_name_or_path"])
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_players(
    *,
    roles: tuple[str, ...],
    load: Callable[[str], tuple[Any, PreTrainedTokenizerBase]],
    lora: bool,
    copies: set[str],
    lora_rank: int = 16,
    lora_alpha: int = 32,
    adapters: Mapping[str, str | Path] | None = None,
) -> dict[str, Player]:
    """Players for ``roles``. ``load(role)`` returns (model, tokenizer) of the role's start;
    with ``lora`` every role's adapter goes on ONE base, loaded once, and ``adapters[role]`` (an
    adapter folder of that base) is where that role's adapter starts instead of the identity."""
    if adapters and not lora:
        raise ValueError("an adapter start needs LoRA players (lora=True); full fine-tuning starts from a model")
    if lora:
        from agents.roles import load_adapter_weights, shared_base_players

        base, tokenizer = load(roles[0])
        for param in base.parameters():
            param.requires_grad_(False)
        peft_model = shared_base_players(base, rank=lora_rank, alpha=lora_alpha, adapters=roles)
        for role, folder in (adapters or {}).items():
            load_adapter_weights(peft_model, role, folder)  # before the EMA copies it
        return {role: LoraPlayer(role, peft_model, tokenizer, copies) for role in roles}
    players: dict[str, Player] = {}
    for role in roles:
        model, tokenizer = load(role)
        players[role] = FullPlayer(role, model, tokenizer, copies)
    return players
