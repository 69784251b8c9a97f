"""Exponential moving average (EMA) of a policy's weights, for the "MD" recipes.

θ_ema ← decay·θ_ema + (1 − decay)·θ, once per trainer step (decay 0.95 in the paper). The EMA
policy both samples the rollouts and serves as the DPO/IPO reference, a lagging anchor for a
mirror-descent step. After k updates from θ_ema = θ_0 with θ fixed, the weight left on θ_0 is
decay^k (0.95^100 ≈ 0.6 %): there is no long-range pull back to the initial model.

The paper fine-tunes all weights, so its EMA is over the full model (``ema_update_model``).
With LoRA adapters on a shared frozen base (agents.roles), ``ema_update_adapter`` averages the
adapter tensors A and B instead. That is NOT the same policy as the EMA of the merged weights.
The merged weight is W = W_0 + s·B·A (s = α/r), and the product is bilinear, so

    EMA(B)·EMA(A) ≠ EMA(B·A).

One step from (B_0, A_0) to (B_1, A_1), with w = 1 − decay, differs by exactly

    EMA(B)·EMA(A) − EMA(B·A) = −decay·w·(B_1 − B_0)·(A_1 − A_0).

Worked 1×1 example (s = 1, decay = 0.95): the EMA adapter is B_0 = 0, A_0 = 1 (LoRA's identity
start: B = 0), and the trained adapter is B_1 = 1, A_1 = 2.
  * adapter EMA:  B = 0.95·0 + 0.05·1 = 0.05,  A = 0.95·1 + 0.05·2 = 1.05,  delta B·A = 0.0525
  * merged EMA:   delta = 0.95·(0·1) + 0.05·(1·2) = 0.1
  * gap: 0.0525 − 0.1 = −0.0475 = −0.95·0.05·(1 − 0)·(2 − 1).
So the adapter EMA moved about half as far as the merged-weight EMA here. The gap is second
order in the step (product of the B and A changes), so it is small for the tiny per-step
changes of real training, but it compounds over steps. The adapter EMA is still a rank-r
adapter (servable by vLLM like any other), whereas the merged EMA is a mixture of rank-r
products and in general has no rank-r form. Both are smooth lagging anchors; only the merged
one is the paper's parameter-space average.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from agents.roles import adapter_parameters, copy_adapter

if TYPE_CHECKING:
    from peft import PeftModel


@torch.no_grad()
def ema_update(ema_params: Iterable[torch.Tensor], params: Iterable[torch.Tensor], decay: float = 0.95) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ, in place, for matched pairs of tensors."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    for ema, param in zip(ema_params, params, strict=True):
        if ema.shape != param.shape:
            raise ValueError(f"EMA tensor of shape {tuple(ema.shape)} paired with one of shape {tuple(param.shape)}")
        # lerp: ema + w·(θ − ema) = (1 − w)·ema + w·θ with w = 1 − decay.
        ema.lerp_(param.to(ema.dtype), 1.0 - decay)


def _matched(ema: Mapping[str, torch.Tensor], online: Mapping[str, torch.Tensor], what: str) -> list[str]:
    if ema.keys() != online.keys():
        missing = sorted(ema.keys() ^ online.keys())[:5]
        raise ValueError(f"{what}: the EMA and online tensors differ by name, e.g. {missing}")
    return sorted(online)


def ema_update_model(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float = 0.95) -> None:
    """Full-model EMA (the paper's recipe): every parameter is averaged; buffers (e.g. rotary
    frequencies, never trained) are copied so the EMA model stays a complete model."""
    ema_params, params = dict(ema_model.named_parameters()), dict(model.named_parameters())
    names = _matched(ema_params, params, "ema_update_model")
    ema_update([ema_params[n] for n in names], [params[n] for n in names], decay)
    ema_buffers, buffers = dict(ema_model.named_buffers()), dict(model.named_buffers())
    with torch.no_grad():
        for name in _matched(ema_buffers, buffers, "ema_update_model buffers"):
            ema_buffers[name].copy_(buffers[name])


def ema_update_adapter(
    peft_model: PeftModel, source: str = "attacker", target: str = "attacker_ema", decay: float = 0.95
) -> None:
    """EMA of one LoRA adapter into another on the same base; only ``target`` changes.

    A missing target starts as an exact copy of the source (the EMA of one iterate is that
    iterate). The target is never trained: its tensors are marked as not requiring grad
    (note that activating it with ``set_adapter`` makes PEFT mark them trainable again).
    """
    if target not in peft_model.peft_config:
        copy_adapter(peft_model, source, target)
    else:
        ema, online = adapter_parameters(peft_model, target), adapter_parameters(peft_model, source)
        names = _matched(ema, online, "ema_update_adapter")
        ema_update([ema[n] for n in names], [online[n] for n in names], decay)
    for param in adapter_parameters(peft_model, target).values():
        param.requires_grad_(False)
