"""``gpu_train.py`` on 2 GPUs over NCCL: the unsharded path (torch's DDP) and the FSDP2 path.

    python benchmarks/gpu_train_2gpu.py [--json FILE]              # 2 GPUs: both paths, a few minutes each
    python benchmarks/gpu_train_2gpu.py --device cpu --tiny        # a dry run of the same code paths (gloo)

Starts ``torchrun --standalone --nproc_per_node 2 benchmarks/gpu_train.py --sharding S`` for S =
none, then fsdp2 (extra arguments go to ``gpu_train.py``: ``--steps``, ``--seeds``,
``--micro-batch``, ``--tokens``, ``--peak-tflops``, ``--deps``, ``--tokenizer``), and prints, per path: peak
GPU memory of the larger process against ``advgame plan``'s learner total for 2 learner GPUs,
the update's tokens/s over both processes and its MFU over both GPUs' peak, and (unsharded)
the largest difference between the two processes' trained weights afterwards (DDP keeps the
replicas equal: 0). ``--json`` keeps both results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PATHS = ("none", "fsdp2")
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def launch(sharding: str, passed: list[str], out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(HERE / "gpu_train.py"), "--sharding", sharding, "--json", str(out), *passed]
    # torchrun sets the launcher's variables itself; a caller's (a process of another group) would mislead it
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": f"exit {done.returncode}", "stderr": done.stderr[-3000:]}
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def line(sharding: str, r: dict[str, Any]) -> str:
    if "failed" in r or "skipped" in r:
        return f"{sharding}: {r.get('skipped') or r['failed']}\n{r.get('stderr', '')}".rstrip()

    def fmt(value: float | None, spec: str) -> str:
        return "not measured" if value is None else format(value, spec)

    agree = r.get("replica_max_difference")
    return (
        f"{r['sharding']} on {r['device']}: peak {fmt(r['peak_memory_gib'], '.2f')} GiB / plan "
        f"{r['plan_learner_gib']:.2f} GiB per GPU; update {fmt(r['update_tokens_per_s'], '.0f')} tok/s, "
        f"MFU {fmt(r['mfu'], '.3f')}" + ("" if agree is None else f"; replicas differ by at most {agree:.3g}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path)
    args, passed = parser.parse_known_args()
    passed += ["--device", args.device]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for sharding in PATHS:
            results[sharding] = launch(sharding, passed, Path(scratch) / f"{sharding}.json")
            print(line(sharding, results[sharding]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if any("failed" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
