"""A vLLM weight-transfer engine that works without CUDA: tensors travel as safetensors files.

vLLM's RL API (``/init_weight_transfer_engine``, ``/start_weight_update``, ``/update_weights``,
``/finish_weight_update``) moves weights through a *weight-transfer engine* picked by the
server's ``--weight-transfer-config '{"backend": ...}'``. Its own engines need CUDA (NCCL, CUDA
IPC), so on CPU this module registers one more, ``advgame_file``, through vLLM's own mechanism
(``WeightTransferEngineFactory.register_engine`` and ``WeightTransferTrainerFactory.register_engine``):

* trainer side (:class:`FileTrainerEngine`): writes the weights, a group of decoder layers at a
  time (at most ``chunk_bytes`` per file), as safetensors files in ``/dev/shm`` (shared memory:
  no disk traffic) and posts each file's path to ``/update_weights``;
* server side (:class:`FileWeightTransferEngine`): loads each file and hands the tensors to the
  model's ``load_weights`` inside vLLM's layerwise reload, as vLLM's IPC engine does, so the
  kernels' packed copies are rebuilt after the update.

The server and the trainer must share a file system (one machine, or a shared mount): this is
the CPU and single-node transport. Across GPUs and nodes the same trainer calls drive vLLM's
NCCL engine instead (``agents.vllm_server``).

The server's processes learn the engine when they import this module: ``agents.vllm_worker``
(the ``--worker-extension-cls`` that ``python -m agents.vllm_serve`` passes) imports it in every
worker before the model loads, and the ``vllm.general_plugins`` entry point ``advgame`` does the
same for a plain ``vllm serve`` in an environment where advgame is installed.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from vllm.distributed.weight_transfer.base import (
    ParamMeta,
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    VLLMWeightSyncClient,
    WeightSource,
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
    materialize_full_tensor,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

BACKEND = "advgame_file"
DEFAULT_CHUNK_BYTES = 512 * 2**20  # bounds the trainer's staging copy and each file


def shared_folder() -> str:
    """``/dev/shm`` where the machine has it (memory, not disk), else the temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class StateSource(WeightSource):
    """A ``WeightSource`` over a name -> tensor mapping (``vllm_backend.full_state_dict``: plain
    Hugging Face names, a PEFT model merged, a tied output layer left out). A sharded tensor
    (FSDP's DTensor) is gathered when iterated, on every rank, in the same order."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state = dict(state)

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(name, t.dtype, tuple(t.shape)) for name, t in self.state.items()]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.state.items():
            yield name, materialize_full_tensor(tensor)


# ----------------------------------------------------------------------------- server side


@dataclass
class FileInitInfo(WeightTransferInitInfo):
    """Nothing to rendezvous: the files name themselves in each update."""


@dataclass
class FileUpdateInfo(WeightTransferUpdateInfo):
    path: str  # a safetensors file the server can read

    def __post_init__(self) -> None:
        if not self.path.endswith(".safetensors"):
            raise ValueError(f"update_info.path must name a .safetensors file, got {self.path!r}")


class FileWeightTransferEngine(WeightTransferEngine[FileInitInfo, FileUpdateInfo]):
    init_info_cls = FileInitInfo
    update_info_cls = FileUpdateInfo

    def init_transfer_engine(self, init_info: FileInitInfo) -> None:
        pass

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class ends with torch.accelerator.synchronize(), which raises where there
        # is no accelerator; loading from a file is synchronous anyway.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: FileUpdateInfo) -> None:
        from safetensors.torch import load_file

        load: Any = self.model.load_weights  # a vLLM model's, typed as a Module attribute
        load(load_file(update_info.path).items())

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        from agents.vllm_worker import refresh_cpu_kernels

        finalize_layerwise_reload(self.model, self.model_config)
        refresh_cpu_kernels(self.model)  # a tied output layer is never loaded, so re-pack it here

    def shutdown(self) -> None:
        pass


# ----------------------------------------------------------------------------- trainer side


@dataclass
class FileTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = BACKEND
    folder: str = field(default_factory=shared_folder)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


class FileTrainerEngine(TrainerWeightTransferEngine[FileTrainerInitInfo]):
    """Every trainer rank iterates the source (a sharded tensor is gathered collectively); the
    sender (rank 0) writes the files and drives the client. ``source`` may be replaced between
    pushes (the sampling policy changes: EMA or learner)."""

    init_info_cls = FileTrainerInitInfo

    def __init__(
        self, *, client: VLLMWeightSyncClient, source: WeightSource | None, is_sender: bool, info: FileTrainerInitInfo
    ) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.folder, self.chunk_bytes = Path(info.folder), info.chunk_bytes

    @classmethod
    def trainer_init(
        cls, init_info: FileTrainerInitInfo, *, client: VLLMWeightSyncClient, source: WeightSource | None = None
    ) -> Self:
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, info=init_info)
        if engine.is_sender:
            client.init_weight_transfer_engine({})
        return engine

    def send_weights(self) -> None:
        from safetensors.torch import save_file

        if self.source is None:
            raise ValueError("no weights to send: set the engine's source first")
        if self.is_sender:
            self.client.start_weight_update()
        chunk: dict[str, torch.Tensor] = {}
        size = 0

        def flush() -> None:
            nonlocal chunk, size
            if self.is_sender and chunk:
                path = self.folder / f"advgame-weights-{uuid.uuid4().hex}.safetensors"
                save_file(chunk, str(path))
                try:
                    self.client.update_weights({"path": str(path)})
                finally:
                    path.unlink(missing_ok=True)
            chunk, size = {}, 0

        for names, tensors in self.source.iter_groups():  # whole decoder layers per file
            for name, tensor in zip(names, tensors, strict=True):
                chunk[name] = tensor.detach().cpu().contiguous()
                size += tensor.numel() * tensor.element_size()
            if size >= self.chunk_bytes:
                flush()
        flush()
        if self.is_sender:
            self.client.finish_weight_update()


def register() -> None:
    """Make ``advgame_file`` known to vLLM in this process (both sides; once)."""
    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, FileWeightTransferEngine)
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, FileTrainerEngine)


def plugin() -> None:
    """The ``vllm.general_plugins`` entry point: vLLM calls it in each of its processes."""
    register()


register()
