"""Data parallelism over processes started by ``accelerate launch`` (or torchrun); one process is
the plain case. Gradients are summed over processes by hand after backward, so the global
objective is exactly the sum over all processes' examples / the global weight."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch

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

    def sum(self, values: Sequence[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        if self.world == 1:
            return
        for param in params:
            if param.grad is None:  # this process had no example for it: contribute zeros
                param.grad = torch.zeros_like(param)
            torch.distributed.all_reduce(param.grad)

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
