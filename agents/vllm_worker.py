"""Methods added to every vLLM worker (``worker_extension_cls``), called via ``collective_rpc``.

Weights travel as a safetensors file (in ``/dev/shm`` where it exists): the same route works
for an engine in another process on CPU and on GPU, and no tensor crosses the RPC channel.

Importing this module (vLLM does, in every worker, before the model loads) also registers the
``advgame_file`` weight-transfer engine of ``agents.weight_transfer``, so a ``vllm serve`` started
with this extension (``python -m agents.vllm_serve``) accepts weights through vLLM's RL API on CPU.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def refresh_cpu_kernels(model: torch.nn.Module) -> int:
    """Re-pack the CPU GEMM of every layer that kept its weight (vocabulary projections).

    vLLM's CPU build packs each linear weight into a kernel-specific copy. An in-place reload
    re-packs the layers it loads, but a tied output layer shares the embedding's tensor and is
    never loaded itself, so its packed copy would keep the old weights.
    """
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    refreshed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.numel():
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            refreshed += 1
    return refreshed


with contextlib.suppress(ImportError):  # without vLLM there is nothing to register into
    import agents.weight_transfer  # noqa: F401  (registers on import)


class WeightSyncExtension:
    model_runner: Any  # provided by the vLLM worker this class is mixed into

    def load_weights_file(self, path: str) -> int:
        from safetensors.torch import load_file

        weights = load_file(path)
        # reload_weights, not model.load_weights: after the first load vLLM repacks layers for
        # its kernels (on CPU the original linear weights are freed); the in-place reload
        # loads checkpoint-format tensors and repeats that post-processing.
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()))
        refresh_cpu_kernels(self.model_runner.model)
        return len(weights)
