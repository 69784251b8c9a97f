"""Attacker and defender as two policies: separate models, or LoRA adapters on one shared base.

With adapters, one frozen base carries an ``attacker`` and a ``defender`` adapter (and, for
the MD recipes, snapshot adapters such as ``attacker_ema``); a backend call picks one with
``adapter=NAME``. One vLLM engine serves all of them at once (``VLLMBackend.push_adapter``),
so the two-player setup costs one base model plus a few MB per adapter instead of one full
model per role and per copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advgame_types import ROLES

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from agents.handles import CausalLM

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def shared_base_players(
    base: PreTrainedModel,
    *,
    rank: int = 16,
    alpha: int = 32,
    targets: Sequence[str] = DEFAULT_TARGETS,
    adapters: Sequence[str] = ROLES,
) -> PeftModel:
    """Wrap ``base`` (modified in place: its weights are frozen) with one LoRA adapter per name.

    Every adapter starts as the identity (LoRA's B matrices are zero), so all roles begin as
    the base model and diverge only through their own training.
    """
    from peft import LoraConfig, get_peft_model

    def config() -> LoraConfig:
        return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)

    model = get_peft_model(base, config(), adapter_name=adapters[0])
    for name in adapters[1:]:
        model.add_adapter(name, config())
    return model


def copy_adapter(model: PeftModel, source: str, target: str) -> None:
    """Make adapter ``target`` an exact copy of ``source`` (created if missing)."""
    if target not in model.peft_config:
        model.add_adapter(target, model.peft_config[source])
    # each side read once: one walk over the model's parameters lists thousands of tensors, and a
    # walk per copied tensor made this quadratic (half of a quick-demo run's training time)
    source_params, target_params = adapter_parameters(model, source), adapter_parameters(model, target)
    with torch.no_grad():
        for name, param in target_params.items():
            param.copy_(source_params[name])


def adapter_parameters(model: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The LoRA tensors of one adapter, keyed by their name with the adapter part removed."""
    marker = f".{adapter}."
    return {name.replace(marker, "."): p for name, p in model.named_parameters() if marker in name and "lora_" in name}


def load_adapter_weights(model: torch.nn.Module, adapter: str, folder: str | Path) -> None:
    """Set adapter ``adapter`` of ``model`` to the LoRA adapter saved in ``folder`` (PEFT's files).

    The two must have the same shape: the folder's rank, alpha and target modules are those the
    adapter was made with (a ValueError says which differ). Its tensors are copied in, so the
    adapter keeps its place on the shared base (and in the optimizer) as if trained to there.
    """
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    mine = model.peft_config[adapter]  # type: ignore[index]  # a PEFT model's configs by adapter name
    for key in ("r", "lora_alpha"):
        if config.get(key) != getattr(mine, key):
            raise ValueError(
                f"the adapter in {folder} has {key} {config.get(key)} where the run's adapters have "
                f"{getattr(mine, key)}: set model.lora_rank / model.lora_alpha to the adapter's "
                f"(r {config.get('r')}, lora_alpha {config.get('lora_alpha')})"
            )
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{folder} has no adapter_model.safetensors (a PEFT adapter folder saved as safetensors)")
    saved = load_file(str(weights))
    params = adapter_parameters(model, adapter)
    if saved.keys() != params.keys():
        missing, extra = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
        raise ValueError(
            f"the adapter in {folder} does not fit the run's adapters (other target modules?): "
            f"{len(missing)} tensors missing (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})"
        )
    with torch.no_grad():
        for name, param in params.items():
            if param.shape != saved[name].shape:
                raise ValueError(
                    f"the adapter in {folder}: {name} has shape {tuple(saved[name].shape)}, "
                    f"the run's {tuple(param.shape)}"
                )
            param.copy_(saved[name])


def save_adapter(model: CausalLM, folder: str | Path, adapter: str) -> None:
    """PEFT's save of one adapter, read from the parameters as they are now.

    PEFT's own ``save_pretrained`` reads ``model.state_dict()``, which under FSDP2 holds the
    sharded storages even while the modules are gathered for a push (measured: "Attempted to
    access the data pointer on an invalid python storage"). The parameters themselves are then
    full tensors, so they are handed to PEFT as the state dict; unsharded, the same tensors."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise TypeError(f"only a PEFT model has adapters to save; got a {type(model).__name__}")
    state = {name: param.detach() for name, param in model.named_parameters()}
    model.save_pretrained(str(folder), selected_adapters=[adapter], state_dict=state)
