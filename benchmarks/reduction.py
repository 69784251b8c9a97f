"""Gradient reduction at 2 processes: the engines' (torch's DDP, bucketed all-reduces overlapped
with the backward, as ``parallel.sharding=none`` trains now; FSDP2's reduce-scatter, one flat
bucket per decoder layer) against the hand-written one DDP replaced (one all-reduce per tensor
after the backward, the old ``Dist.sum_grads``).

    python benchmarks/reduction.py [--json FILE] [--repeats 5]     # starts 2 gloo processes itself

Both run on the bundled model's parameter shapes (its config, random weights: the values do
not matter to a reduction), in the same processes, interleaved (A B A B ...):

  per_tensor  a plain model's backward, then one all-reduce per tensor (timed alone: the reduction)
  ddp         a plain model's backward through ``distributed.Replica`` (torch's DDP over its
              parameters, the trainer's path), its reduction inside the backward
  engine      the same model under ``fully_shard`` (``parallel.sharding=fsdp2``): its backward;
              the reduction's share is the time the profiler records inside FSDP2's
              ``FSDP::post_backward_reduce`` / ``post_backward_rs_wait`` ranges

Reported: median seconds per backward of each reduction and their ratio (engine / per-tensor),
and the whole backward + reduction of each (the engine's includes its all-gathers); DDP's
reduction overlaps its backward, so it is compared whole: DDP's backward + reduction /
per-tensor's (``ddp_ratio``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPEATS = 5
TOKENS = 32


def worker(out: Path, repeats: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path[:0] = [str(ROOT), str(HERE)]
    from common import describe_machine

    from agents.models import DEFAULT_MODEL, resolve_model
    from algorithms.training.distributed import Dist, Replica, shard_module

    dist = Dist()
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(resolve_model(DEFAULT_MODEL))
    plain = AutoModelForCausalLM.from_config(config)
    replicated = AutoModelForCausalLM.from_config(config)
    sharded = AutoModelForCausalLM.from_config(config)
    shard_module(sharded, dist.mesh)
    ids = torch.randint(0, config.vocab_size, (1, TOKENS), generator=torch.Generator().manual_seed(dist.rank))
    params = [p for p in plain.parameters() if p.requires_grad]
    replica = Replica([p for p in replicated.parameters() if p.requires_grad])

    def per_tensor() -> tuple[float, float]:
        plain.zero_grad(set_to_none=True)
        dist.barrier()
        start = time.perf_counter()
        plain(ids, labels=ids).loss.backward()
        mid = time.perf_counter()
        for param in params:  # what DDP replaced
            assert param.grad is not None
            torch.distributed.all_reduce(param.grad)
        end = time.perf_counter()
        return end - mid, end - start

    buckets: list[int] = []  # the all-reduces of DDP's last backward (its comm hook calls all_reduce per bucket)
    plain_all_reduce = torch.distributed.all_reduce

    def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        buckets.append(tensor.numel())
        return plain_all_reduce(tensor, *args, **kwargs)

    def ddp() -> tuple[float, float]:
        replicated.zero_grad(set_to_none=True)
        dist.barrier()
        buckets.clear()
        torch.distributed.all_reduce = counted
        start = time.perf_counter()
        replica.backward(lambda: (replicated(ids, labels=ids).loss, None), last=True)
        end = time.perf_counter()
        torch.distributed.all_reduce = plain_all_reduce
        return float("nan"), end - start

    def engine() -> tuple[float, float]:
        from torch.profiler import ProfilerActivity, profile

        sharded.zero_grad(set_to_none=True)
        dist.barrier()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            sharded(ids, labels=ids).loss.backward()
            end = time.perf_counter()
        ranges = ("FSDP::post_backward_reduce", "FSDP::post_backward_rs_wait")
        inside = sum(e.cpu_time_total for e in prof.events() if e.name.startswith(ranges)) / 1e6
        return inside, end - start

    for fn in (per_tensor, ddp, ddp, engine):  # warm-up: FSDP2's lazy init, DDP's bucket rebuild, allocator
        fn()
    times: dict[str, list[tuple[float, float]]] = {"per_tensor": [], "ddp": [], "engine": []}
    for _ in range(repeats):
        times["per_tensor"].append(per_tensor())
        times["ddp"].append(ddp())
        times["engine"].append(engine())
    # a process's figures; the slower process sets the pace of a collective
    mine = {k: [statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)] for k, v in times.items()}
    everyone = dist.gather([mine])
    if dist.main:
        worst = {k: [max(m[k][i] for m in everyone) for i in (0, 1)] for k in mine}
        result = {
            "machine": describe_machine(),
            "world": dist.world,
            "parameters": sum(p.numel() for p in params),
            "tensors": len(params),
            "units": sum(1 for m in sharded.modules() if type(m).__name__.startswith("FSDP")),
            "tokens": TOKENS,
            "per_tensor_reduce_s": worst["per_tensor"][0],
            "engine_reduce_s": worst["engine"][0],
            "per_tensor_backward_s": worst["per_tensor"][1],
            "engine_backward_s": worst["engine"][1],
            "ddp_backward_s": worst["ddp"][1],
            "ddp_buckets": len(buckets),  # after DDP rebuilt its buckets in the warm-up's second backward
        }
        result["ddp_ratio"] = result["ddp_backward_s"] / result["per_tensor_backward_s"]
        result["ratio"] = result["engine_reduce_s"] / result["per_tensor_reduce_s"]
        result["backward_ratio"] = result["engine_backward_s"] / result["per_tensor_backward_s"]
        out.write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved backwards of each kind")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeats)
        return
    out = args.json or Path("/tmp/advgame-reduction.json")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    with socket.socket() as s:  # a free port: accelerate's default one may be another group's
        s.bind(("127.0.0.1", 0))
        launch += ["--main_process_port", str(s.getsockname()[1])]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(
        [*launch, str(Path(__file__).resolve()), "--worker", str(out), "--repeats", str(args.repeats)],
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    print(
        f"gradient reduction, {result['tensors']} tensors ({result['parameters'] / 1e6:.1f}M parameters), "
        f"2 processes: engine (FSDP2, {result['units']} units) {result['engine_reduce_s'] * 1e3:.0f} ms / "
        f"per-tensor all-reduce {result['per_tensor_reduce_s'] * 1e3:.0f} ms = {result['ratio']:.2f}; "
        f"backward + reduction {result['engine_backward_s']:.2f} s / {result['per_tensor_backward_s']:.2f} s "
        f"= {result['backward_ratio']:.2f}; DDP ({result['ddp_buckets']} buckets) backward + reduction "
        f"{result['ddp_backward_s']:.2f} s / per-tensor {result['per_tensor_backward_s']:.2f} s = {result['ddp_ratio']:.2f}"
    )


if __name__ == "__main__":
    main()
