"""The types of the model-side handles the backends, the players and the trainer pass around.

Aliases for type checking only (``from __future__ import annotations`` keeps them out of run
time, so importing this module loads neither transformers nor peft)::

    if TYPE_CHECKING:
        from agents.handles import CausalLM, Tokenizer
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from peft import PeftModel
    from torch.distributed.device_mesh import DeviceMesh
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    # A causal LM as the backends run it: a transformers model, or a PEFT model of adapters on one
    # (PEFT forwards every attribute it does not have to the model it wraps).
    CausalLM: TypeAlias = PreTrainedModel | PeftModel
    Tokenizer: TypeAlias = PreTrainedTokenizerBase
    Mesh: TypeAlias = DeviceMesh
