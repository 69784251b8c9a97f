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

With ``parallel.sharding=fsdp2`` every module a player holds is sharded over the processes
(``build_players(mesh=...)``, ``distributed.shard_module``): the learner, its EMA and initial
copies alike (LoRA: the one shared base with every adapter). The EMA update is elementwise, so
it runs on the local shards as it is. ``weights`` / ``export`` then gather full tensors
(collectives: every process calls them), and forwards outside a gradient update run inside
``gathered()`` so that processes need not take the same number of them.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from agents.models import ADAPTER_CONFIG, portable_name
from agents.roles import adapter_parameters, copy_adapter
from algorithms.training.copies import Which
from algorithms.training.distributed import shard_module, unsharded
from algorithms.training.ema import ema_update_adapter, ema_update_model

if TYPE_CHECKING:
    from peft import PeftModel
    from torch.distributed.checkpoint.state_dict import DictValueType
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from agents.handles import CausalLM, Mesh


class Player:
    role: str
    tokenizer: PreTrainedTokenizerBase
    copies: frozenset[str]  # which of "ema" / "initial" this player keeps
    recompute: bool = False  # activation checkpointing in updates (see ``updating``)
    sharded: bool = False  # FSDP2 (``shard``): every module of the player sharded over the processes

    def modules(self) -> list[CausalLM]:
        """Every distinct module the player holds (its copies; LoRA: the one shared model)."""
        raise NotImplementedError

    def shard(self, mesh: Mesh, bf16: bool = False) -> None:
        """Shard every module of the player over ``mesh`` (FSDP2), before any optimizer is made;
        ``bf16``: bfloat16 compute over float32 master shards (``shard_module``)."""
        for module in self.modules():
            shard_module(module, mesh, bf16)
        self.sharded = True

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """The player's full weights for a while (forward passes only), so that each process
        may run as many forwards as it needs, alone or not (sampling, validation): a collective
        on entry and exit. A no-op unsharded."""
        if not self.sharded:
            yield
            return
        with unsharded(self.modules()):
            yield

    def trainable(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def learner_module(self) -> CausalLM:
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
    def active(self, which: Which) -> Iterator[CausalLM]:
        raise NotImplementedError
        yield

    def sampling(self, which: Which) -> tuple[CausalLM, str | None]:
        """(module, adapter name or None) that generates as policy ``which``."""
        raise NotImplementedError

    def ema_update(self, decay: float) -> None:
        raise NotImplementedError

    def opponent(self, tensors: dict[str, torch.Tensor]) -> tuple[CausalLM, str | None]:
        """(module, adapter name or None) that generates as a past snapshot of this player,
        ``tensors`` as ``weights`` gave them: a slot of its own, so no policy of the player
        changes (an opponent pool plays it, ``training.opponents``)."""
        raise NotImplementedError

    def frozen_base(self) -> tuple[CausalLM, str | None]:
        """(module, adapter name or None) that generates as the player's starting weights, which
        never change: a role that stays frozen for the whole run plays them (Self-RedTeam's
        attacker-only baseline against a frozen copy of the base)."""
        raise NotImplementedError

    def weights(self, which: Which) -> dict[str, torch.Tensor]:
        """The tensors that define policy ``which`` beyond the frozen base (for checkpoints)."""
        raise NotImplementedError

    def load_weights(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def export(self, which: Which, folder: Path) -> None:
        """A folder ``agents.load_model`` (and transformers' ``from_pretrained``) loads."""
        raise NotImplementedError

    def shards(self, which: Which) -> dict[str, torch.Tensor]:
        """Sharded players: this process's shards of policy ``which`` (DTensors), for
        ``torch.distributed.checkpoint``, which saves and loads them in place (at any world size)."""
        raise NotImplementedError

    def load_shards(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        """Set policy ``which`` from ``shards``' tensors as a checkpoint loaded them."""
        raise NotImplementedError

    def _check(self, which: Which) -> None:
        if which != "learner" and which not in self.copies:
            raise ValueError(f"the {self.role} keeps no {which!r} copy (it keeps {sorted(self.copies)})")


def _frozen_copy(model: CausalLM) -> CausalLM:
    twin = copy.deepcopy(model)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin


class FullPlayer(Player):
    def __init__(self, role: str, model: CausalLM, tokenizer: PreTrainedTokenizerBase, copies: set[str]) -> None:
        self.role, self.tokenizer, self.copies = role, tokenizer, frozenset(copies)
        self.models = {"learner": model} | {which: _frozen_copy(model) for which in sorted(copies)}
        self.spare: CausalLM | None = None  # the opponent slot (``opponent``)

    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.models["learner"].parameters() if p.requires_grad]

    def learner_module(self) -> CausalLM:
        return self.models["learner"]

    def modules(self) -> list[CausalLM]:
        return list(self.models.values())

    @contextmanager
    def active(self, which: Which) -> Iterator[CausalLM]:
        self._check(which)
        yield self.models[which]

    def sampling(self, which: Which) -> tuple[CausalLM, str | None]:
        self._check(which)
        return self.models[which], None

    def ema_update(self, decay: float) -> None:
        ema_update_model(self.models["ema"], self.models["learner"], decay)

    def frozen_base(self) -> tuple[CausalLM, str | None]:
        return self.sampling("initial")  # the trainer keeps an initial copy for such a run

    def opponent(self, tensors: dict[str, torch.Tensor]) -> tuple[CausalLM, str | None]:
        if self.spare is None:  # one more full model, made on first use
            self.spare = _frozen_copy(self.models["learner"])
        self.spare.load_state_dict(tensors, strict=True)
        return self.spare, None

    def weights(self, which: Which) -> dict[str, torch.Tensor]:
        """Sharded: full tensors on the main process (a collective; the others get {})."""
        self._check(which)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            # full_state_dict: every value a full tensor
            return cast("dict[str, torch.Tensor]", get_model_state_dict(self.models[which], options=options))
        return dict(self.models[which].state_dict())

    def load_weights(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        """Sharded: every process passes the same full tensors; each keeps its shards."""
        self._check(which)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            given: DictValueType = dict(tensors)
            set_model_state_dict(self.models[which], given, options=StateDictOptions(full_state_dict=True))
            return
        self.models[which].load_state_dict(tensors, strict=True)

    def export(self, which: Which, folder: Path) -> None:
        """Sharded: a collective; the main process writes the folder from the gathered tensors."""
        self._check(which)
        if not self.sharded:
            self.models[which].save_pretrained(str(folder))
            self.tokenizer.save_pretrained(folder)
            return
        state = self.weights(which)
        if torch.distributed.get_rank() == 0:
            model = self.models[which]
            model.save_pretrained(str(folder), state_dict=state)
            _plain_architecture(folder, model)
            self.tokenizer.save_pretrained(folder)

    def shards(self, which: Which) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        self._check(which)
        return cast("dict[str, torch.Tensor]", get_model_state_dict(self.models[which]))  # DTensors, sharded

    def load_shards(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        self._check(which)
        given: DictValueType = dict(tensors)
        set_model_state_dict(self.models[which], given)


class LoraPlayer(Player):
    """One role's adapters on a PEFT model that may carry the other role's adapters too."""

    def __init__(self, role: str, peft_model: PeftModel, tokenizer: PreTrainedTokenizerBase, copies: set[str]) -> None:
        self.role, self.tokenizer, self.copies = role, tokenizer, frozenset(copies)
        self.model = peft_model
        self.names = {"learner": role, "ema": f"{role}_ema"}
        if "ema" in copies:
            ema_update_adapter(peft_model, role, self.names["ema"])  # a missing EMA starts as a copy

    def trainable(self) -> list[torch.Tensor]:
        return list(adapter_parameters(self.model, self.role).values())

    def learner_module(self) -> CausalLM:
        return self.model

    def modules(self) -> list[CausalLM]:
        return [self.model]

    @contextmanager
    def active(self, which: Which) -> Iterator[CausalLM]:
        self._check(which)
        if which == "initial":
            with self.model.disable_adapter():
                yield self.model
            return
        # set_adapter also marks that adapter (only) trainable; the EMA is never in an optimizer.
        self.model.set_adapter(self.names[which])
        yield self.model

    def sampling(self, which: Which) -> tuple[CausalLM, str | None]:
        self._check(which)
        if which == "initial":
            raise ValueError("LoRA players sample from their learner or EMA adapter, not from the bare base")
        return self.model, self.names[which]

    def ema_update(self, decay: float) -> None:
        ema_update_adapter(self.model, self.names["learner"], self.names["ema"], decay)

    def opponent(self, tensors: dict[str, torch.Tensor]) -> tuple[CausalLM, str | None]:
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

    def frozen_base(self) -> tuple[CausalLM, str | None]:
        # the opponent slot with every B matrix zero: B·A = 0, so it generates as the bare base
        # on every backend that serves adapters (the engines cannot sample "no adapter" here)
        tensors = self.weights("learner")
        return self.opponent({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()})

    def weights(self, which: Which) -> dict[str, torch.Tensor]:
        self._check(which)
        if which == "initial":
            return {}  # the frozen base, rebuilt from the model name
        params = adapter_parameters(self.model, self.names[which])
        return {k: _full(v).detach().clone() for k, v in params.items()}  # sharded: on every process

    def load_weights(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        self._check(which)
        if which == "initial":
            return
        params = adapter_parameters(self.model, self.names[which])
        if params.keys() != tensors.keys():
            raise ValueError(f"checkpoint tensors do not match the {self.names[which]!r} adapter's")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(_like(tensors[name], param))

    def shards(self, which: Which) -> dict[str, torch.Tensor]:
        self._check(which)
        if which == "initial":
            return {}
        return {k: v.detach() for k, v in adapter_parameters(self.model, self.names[which]).items()}

    def load_shards(self, which: Which, tensors: dict[str, torch.Tensor]) -> None:
        params = self.shards(which)
        with torch.no_grad():
            for key, param in params.items():
                if tensors[key] is not param:
                    param.copy_(tensors[key])

    def export(self, which: Which, folder: Path) -> None:
        """An adapter folder (adapter_config.json names the base); ``initial`` is not exported."""
        self._check(which)
        if which == "initial":
            raise ValueError("the initial policy of a LoRA player is the base model itself")
        name = self.names[which]
        if self.sharded:  # the adapter's full tensors, gathered; written by the main process
            tensors = self.weights(which)
            if torch.distributed.get_rank() == 0:
                _write_adapter(self.model, name, tensors, folder)
                self.tokenizer.save_pretrained(folder)
            return
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


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter: a DTensor's is all-gathered."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor


def _like(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``tensor`` laid out as ``param``: a DTensor param takes this process's shard of it."""
    mesh = getattr(param, "device_mesh", None)
    if mesh is None:
        return tensor
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(tensor.to(param.dtype), mesh, getattr(param, "placements"))  # noqa: B009


def _plain_architecture(folder: Path, model: CausalLM) -> None:
    """FSDP2 swaps a module's class for ``FSDP<Class>``, which transformers writes into
    config.json; name the model class itself, so that ``from_pretrained`` and vLLM know it."""
    plain = next(c for c in type(model).__mro__ if not c.__name__.startswith("FSDP"))
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["architectures"] = [plain.__name__]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_adapter(peft_model: PeftModel, name: str, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """PEFT's adapter folder written by hand from gathered tensors: ``save_pretrained`` would
    read the sharded parameters. ``adapter_parameters`` keys are PEFT's saved names already
    (the adapter's name taken out)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(peft_model.peft_config[name])
    config.inference_mode = True
    config.save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
    _portable_base(folder)


def _portable_base(folder: Path) -> None:
    """PEFT names the base by the path it was loaded from (for the bundled model, this machine's
    cache folder); name it so that ``agents.load_model`` finds it on another machine."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = portable_name(config["base_model_name_or_path"])
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_players(
    *,
    roles: tuple[str, ...],
    load: Callable[[str], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    lora: bool,
    copies: set[str],
    lora_rank: int = 16,
    lora_alpha: int = 32,
    adapters: Mapping[str, str | Path] | None = None,
    mesh: Mesh | None = None,
    bf16: bool = False,
) -> dict[str, Player]:
    """Players for ``roles``. ``load(role)`` returns (model, tokenizer) of the role's start;
    with ``lora`` every role's adapter goes on ONE base, loaded once, and ``adapters[role]`` (an
    adapter folder of that base) is where that role's adapter starts instead of the identity.
    ``mesh``: shard every module over it (FSDP2), once all copies and adapters exist, computing
    in bfloat16 when ``bf16`` (FSDP2's MixedPrecisionPolicy)."""
    players = _build_players(roles, load, lora, copies, lora_rank, lora_alpha, adapters)
    if mesh is not None:
        done: set[int] = set()
        for player in players.values():
            if id(player.modules()[0]) in done:  # LoRA: the shared model is sharded once
                player.sharded = True
                continue
            player.shard(mesh, bf16)
            done |= {id(m) for m in player.modules()}
    return players


def _build_players(
    roles: tuple[str, ...],
    load: Callable[[str], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    lora: bool,
    copies: set[str],
    lora_rank: int,
    lora_alpha: int,
    adapters: Mapping[str, str | Path] | None,
) -> dict[str, Player]:
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
