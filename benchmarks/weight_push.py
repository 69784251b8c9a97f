"""Weight push through the server path (``rollout.backend: vllm_server``) / one training step.

    python benchmarks/weight_push.py [--config configs/cpu_smoke.yaml] [--steps 3] [--json FILE]

Starts one ``python -m agents.vllm_serve`` of the bundled model on loopback (float32, LoRA on,
the ``advgame_file`` transport) and trains on it, in one run:

* ``lora``: both players' EMA adapters loaded per step through ``/v1/load_lora_adapter``;
* ``full``: full fine-tuning, the defender's EMA weights pushed per step through vLLM's
  weight-transfer API (pause, ``/update_weights`` from ``/dev/shm`` files, version, resume),
  the attacker sampling in process.

The push is the step's ``time/sync_s`` (the probe check included), the step its ``time/step_s``
(rollouts from the server, judge, update, EMA); medians over the steps after the first (which
also opens the transfer engine). Target: push / step < 0.10.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import describe_machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mode(config: str, url: str, out: Path, steps: int, lora: bool) -> dict[str, Any]:
    from algorithms.config import load_config
    from algorithms.training.trainer import Trainer

    overrides = [f"run.out_dir={out}", "run.validate_every=0", "rollout.backend=vllm_server"]
    overrides += [f"rollout.urls=[{url}]"] if lora else ["model.lora=false", f"roles.defender.urls=[{url}]"]
    trainer = Trainer(load_config(config, overrides))
    try:
        rows = [trainer.train_step() for _ in range(steps)]
    finally:
        trainer.sampler.close()
    later = rows[1:] or rows
    push = statistics.median(r["time/sync_s"] for r in later)
    step = statistics.median(r["time/step_s"] for r in later)
    return {
        "push_s": push,
        "step_s": step,
        "ratio": push / step,
        "first_push_s": rows[0]["time/sync_s"],
        "steps": [{"sync_s": r["time/sync_s"], "step_s": r["time/step_s"]} for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cpu_smoke.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from agents.vllm_server import launch, stop, wait_ready

    work = Path(tempfile.mkdtemp(prefix="advgame-bench-push-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "server.log"
    extra = ("--max-model-len", "1024", "--enable-lora", "--max-lora-rank", "16", "--max-loras", "4")
    process = launch("smollm2-135m-instruct", port, log, *extra)
    try:
        wait_ready(url, process, log)
        result = {"machine": describe_machine(), "config": args.config}
        for mode in ("lora", "full"):
            result[mode] = run_mode(args.config, url, work / mode, args.steps, lora=mode == "lora")
    finally:
        stop(process)
    print(json.dumps(result, indent=1), file=sys.stderr)
    for mode in ("lora", "full"):
        r = result[mode]
        print(f"{mode}: push {r['push_s']:.2f} s / step {r['step_s']:.2f} s = {r['ratio']:.3f} (target < 0.10)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
