"""The process group and the optimizer of one process (parallel.sharding=fsdp2 at world size 1):
what the scale path must not do to the process around it."""

from __future__ import annotations

import os

import torch

from algorithms.training.distributed import Dist


def test_the_process_group_leaves_the_environment_alone():
    # a subprocess started later inherits os.environ: a MASTER_PORT there makes it join (or
    # collide with) this process's group
    before = dict(os.environ)
    mesh = Dist().mesh
    assert torch.distributed.is_initialized() and mesh.size() == 1
    assert dict(os.environ) == before
