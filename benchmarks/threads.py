"""Threads on a shared CPU: generation and a training step of the bundled model at one torch
thread against one per core, on the machine as it is and beside a busy process (one core spun by
a second process), interleaved in one process. Prints ratios (time at all cores / time at one);
above 1 means the extra threads cost time. Not part of run.py (it wants a quiet machine to say
anything about the idle case)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import torch
from common import describe_machine, interleaved

from agents import HFBackend, load_model


def spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        x += 1


def workloads() -> dict[str, object]:
    model, tokenizer = load_model()
    backend = HFBackend(model, tokenizer, batch_size=4)
    chats = [[{"role": "user", "content": f"Name {n} fruits and say one thing about each."}] for n in range(4)]
    batch = tokenizer(
        [f"A sentence number {n} about apples and pears." for n in range(8)], return_tensors="pt", padding=True
    )

    def generate() -> None:
        backend.generate(chats, max_tokens=16, temperature=0.0)

    def step() -> None:
        model.train()
        out = model(**batch, labels=batch["input_ids"])
        out.loss.backward()
        model.zero_grad()
        model.eval()

    return {"generate 4 x 16 tokens": generate, "forward+backward 8 sequences": step}


def at(threads: int, fn):  # type: ignore[no-untyped-def]
    def run() -> None:
        torch.set_num_threads(threads)
        fn()

    return run


def measure(work: dict[str, object], repeats: int) -> dict[str, dict[str, float]]:
    cores = os.cpu_count() or 1
    out = {}
    for name, fn in work.items():
        times = interleaved({"1": at(1, fn), str(cores): at(cores, fn)}, repeats=repeats)  # type: ignore[arg-type]
        out[name] = {
            "one thread s": times["1"],
            f"{cores} threads s": times[str(cores)],
            "ratio": times[str(cores)] / times["1"],
        }
        print(name, out[name], file=sys.stderr, flush=True)
    return out


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = workloads()
    results = {"machine": describe_machine(), "as is": measure(work, repeats)}
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True)
    busy.start()
    try:
        results["beside a busy process"] = measure(work, repeats)
    finally:
        stop.set()
        busy.join()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
