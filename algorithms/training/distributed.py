"""Data parallelism over processes started by ``accelerate launch`` (or torchrun); one process is
the plain case.

Two ways to spread the learners (``parallel.sharding``):
  * none: every process holds full weights and torch's DDP sums the gradients over processes
    (``Replica``: bucketed all-reduces during the backward of each update's last micro-batch),
    so the global objective is exactly the sum over all processes' examples / the global weight;
  * fsdp2: torch's FSDP2 (``fully_shard``) shards parameters, gradients and optimizer states
    over the processes and reduce-scatters the gradients itself (``shard_module``). ``Dist``
    then only gives what the engine does not: sums of statistics, gathers and barriers.

Why ``fully_shard`` is called here rather than through accelerate's FSDP plugin
(``fsdp_version=2``): accelerate's ``prepare`` shards one trained model with its optimizer per
call, while a player here also holds frozen EMA / initial copies (no optimizer) that must be
sharded the same way, and the EMA is updated shard by shard on the local shards. accelerate
still starts the processes and sets up their group (``PartialState``), and the mesh is torch's.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

T = TypeVar("T")


class Dist:
    """Rank, world size and sums over processes (no-ops for a single process)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            from accelerate import PartialState

            # cpu=True makes accelerate set up gloo on machines without a GPU (accelerate launch
            # --multi_gpu --num_processes N starts the processes, GPU or not).
            state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world, self.local_rank = state.process_index, state.num_processes, state.local_process_index

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    @functools.cached_property
    def mesh(self) -> DeviceMesh:
        """The 1-D device mesh FSDP2 shards over: every process. A single process (a plain
        ``python`` run) gets a process group of its own, so the sharded path is the same code
        at any world size (and its checkpoints load at any other)."""
        from torch.distributed.device_mesh import init_device_mesh

        if not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            # One process meets nobody, so its rendezvous is an in-memory store: no port to take
            # and nothing written into os.environ, which every later subprocess would inherit
            # (a child that saw MASTER_PORT would try to join this group). Several processes
            # were started by a launcher that set the rendezvous variables itself (env://).
            store = torch.distributed.HashStore() if self.world == 1 else None
            torch.distributed.init_process_group(backend, store=store, rank=self.rank, world_size=self.world)
        return init_device_mesh(self.device.type, (self.world,))

    def sum(self, values: Sequence[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, items: Sequence[T]) -> list[T]:
        """Every process's items, concatenated in rank order (picklable objects)."""
        if self.world == 1:
            return list(items)
        parts: list[list[T]] = [[] for _ in range(self.world)]  # each filled with one process's items
        torch.distributed.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


# ----------------------------------------------------------------------------- DDP


class _Forward(torch.nn.Module):
    """What DDP wraps for one learner: the parameters the learner trains, and a forward that
    runs whatever computation it is handed (a micro-batch's loss, through the player's own
    modules, which use these parameters)."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        super().__init__()
        if not all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params):
            # ParameterList would wrap a plain tensor in a new Parameter, whose gradient the
            # backward never fills
            raise ValueError("DDP reduces trainable nn.Parameters only")
        self.params = torch.nn.ParameterList(params)

    def forward(self, compute: Callable[[], T]) -> T:
        return compute()


def _summed(state, bucket):
    """DDP's all-reduce of one bucket (a ``GradBucket``; returns a ``Future[Tensor]``) as a
    plain SUM: the losses are already divided by the global weight, and DDP's own hook would
    divide by the world size again. Unannotated: DDP compares the annotations it finds with
    its own classes, and this module's (postponed) annotations are strings."""
    work = torch.distributed.all_reduce(bucket.buffer(), async_op=True)
    assert work is not None  # async_op=True
    return work.get_future().then(lambda fut: fut.value()[0])


class Replica:
    """torch's DDP over one learner's trainable parameters (``parallel.sharding=none``, several
    processes): gradients summed over processes in buckets of many tensors, once per update.

    Not ``DistributedDataParallel(model)`` nor composable ``replicate(model)``: the losses reach
    the model through ``player.active`` (which switches LoRA adapters on one PeftModel shared
    by both players) and the head swap of ``agents.hf.token_logprobs``, so a wrapper whose
    forward must be called instead of the model's does not fit; ``replicate`` keys one reducer
    per module (two LoRA learners share one), gathers the parameters that require grad at the
    module's first forward (whichever adapter is set then), and swaps the model's class (no
    deepcopy for the opponent slot, ``DDP...`` written into an export's config.json). What
    ``replicate`` builds inside is this: DDP over a ParameterList of the trained tensors; its
    hooks sit on those tensors' gradient accumulators, whichever module uses them.

    Gradient accumulation as DDP does it: every micro-batch but an update's last runs under
    ``no_sync`` (gradients add up locally), and the last one's backward reduces the sums. So
    every process needs exactly one synchronised backward per update, whatever its number of
    micro-batches; one with no example runs a zero-weight micro-batch (``update.padding``).
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        from torch.nn.parallel import DistributedDataParallel

        # Constructing checks the shapes across processes and broadcasts process 0's values
        # (every process holds the same already)
        self.ddp = DistributedDataParallel(_Forward(params))
        self.ddp.register_comm_hook(None, _summed)

    def backward(self, forward: Callable[[], tuple[torch.Tensor, T]], last: bool) -> T:
        """``forward()`` (objective, rest) run inside DDP's forward, then the objective's
        backward; on the update's ``last`` micro-batch the backward sums the gradients (this
        micro-batch's and every earlier one's) over processes."""
        with contextlib.nullcontext() if last else self.ddp.no_sync():
            objective, rest = self.ddp(forward)
            objective.backward()
        return rest


# ----------------------------------------------------------------------------- FSDP2


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face model (or of the model under a PEFT wrapper):
    the classes its ``_no_split_modules`` names, the unit transformers itself never splits."""
    inner = model
    while not hasattr(inner, "_no_split_modules") and isinstance(
        base := getattr(inner, "base_model", None), torch.nn.Module
    ):
        if base is inner:
            break
        inner = base  # PeftModel -> LoraModel -> the transformers model
    if not hasattr(inner, "_no_split_modules") and isinstance(body := getattr(inner, "model", None), torch.nn.Module):
        inner = body
    names = set(getattr(inner, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"parallel.sharding=fsdp2 shards per decoder layer, but {type(model).__name__} names no layer class "
            "in _no_split_modules; use a transformers causal LM, or parallel.sharding=none"
        )
    return layers


def shard_module(model: torch.nn.Module, mesh: DeviceMesh, bf16: bool = False) -> None:
    """FSDP2 in place: each decoder layer one unit (all-gathered for its forward and backward,
    reduce-scattered after), the root (embeddings, final norm, head) another.

    ``bf16``: compute in bfloat16 through FSDP2's ``MixedPrecisionPolicy``: the float32 shards
    stay the master weights (AdamW, EMA and checkpoints read them), each unit is gathered as a
    bfloat16 copy for its forward and backward only, and gradients are reduced and kept in
    float32. Unlike autocast, nothing holds a bf16 copy of every weight through the micro-batch.

    The losses are already divided by the global weight, so the engine must SUM gradients over
    processes, not average them: divide factor 1."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    units = [*decoder_layers(model), model]
    for unit in units:
        # the root too (FSDP2 keeps the root gathered after a forward by default): a frozen
        # copy only runs forwards, and its parameters must be shards again for the EMA update
        # and for checkpoints
        fully_shard(unit, mesh=mesh, reshard_after_forward=True, mp_policy=policy)
    # FSDP2 finds its root at the first forward; ``unsharded`` may gather before any forward
    # (validation before the first step), so settle the root now (a private call: FSDP2 has
    # no public one, and gathering before it re-registers shards under the gathered modules)
    model._get_fsdp_state()._lazy_init()  # type: ignore[operator]
    for unit in units:
        unit.set_gradient_divide_factor(1.0)  # type: ignore[operator]
        # a plain SUM collective: NCCL's pre-multiplied sum (how FSDP2 applies a factor) does
        # not exist in gloo, and a factor of 1 needs no scaling anyway
        unit.set_force_sum_reduction_for_comms(True)  # type: ignore[operator]


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextmanager
def unsharded(models: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Full parameters of sharded ``models`` for a while, with no collective in their forwards.

    FSDP2 all-gathers in every forward, so processes that generate different numbers of tokens
    (or one process alone, for validation) would wait on each other forever. Gathered once here
    (a collective: every process enters together) and kept through each forward, sampling is
    local; on exit every module is sharded again. Forward passes only: a backward would
    reduce-scatter."""
    from torch.distributed.fsdp import FSDPModule

    seen: dict[int, FSDPModule] = {}
    for model in models:
        for m in model.modules():
            if isinstance(m, FSDPModule):
                seen.setdefault(id(m), m)
    units = list(seen.values())
    # transformers' generate syncs every process at every token (synced_gpus) when it sees a
    # module FSDP manages: gathered weights need no such sync, and one process generating
    # alone (validation) would wait for the others forever
    flagged = [m for model in models for m in model.modules() if getattr(m, "_is_fsdp_managed_module", False)]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    for m in flagged:
        m._is_fsdp_managed_module = False  # type: ignore[assignment]
    try:
        yield
    finally:
        for m in flagged:
            m._is_fsdp_managed_module = True  # type: ignore[assignment]
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def local_value(tensor: torch.Tensor) -> float:
    """A scalar that may be a replicated DTensor (``clip_grad_norm_`` of sharded gradients)."""
    full = getattr(tensor, "full_tensor", None)
    return float(full() if full is not None else tensor)
