"""The benchmark suite's own arithmetic (benchmarks/ measures; only its bookkeeping is tested here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def script(name: str) -> ModuleType:
    path = Path(__file__).parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


exponent = script("common").exponent
table = script("run").table


def test_the_fitted_exponent_recovers_a_power_law():
    sizes = [8, 32, 128, 256]
    assert exponent(sizes, [0.5 * s**1.5 for s in sizes]) == pytest.approx(1.5)
    assert exponent(sizes, [3.0 for _ in sizes]) == pytest.approx(0.0, abs=1e-12)


def test_the_table_marks_each_target_and_reports_failures():
    results = {
        "orchestration": {
            "machine": "m",
            "overhead": {"rounds": 256, "wall_s": 10.0, "backend_s": 9.0, "ratio": 10 / 9},
            "scaling": {"rows": [{"rounds": 256, "wall_s": 10.0}], "exponent": 0.9},
        },
        "vllm": {
            "machine": "m",
            "vllm": {
                "prompts": 4,
                "max_tokens": 8,
                "ours_tokens_per_s": 99.0,
                "raw_tokens_per_s": 100.0,
                "ratio": 0.99,
            },
        },
        "gpu": {"skipped": "no GPU on this machine"},
        "memory": {"error": "memory.py exited with status 1"},
    }
    lines = table(results).splitlines()
    assert lines[0] == "Machine: m"
    overhead = next(line for line in lines if line.startswith("| Orchestration overhead"))
    assert "1.111" in overhead and "**missed**" in overhead
    assert "| met |" in next(line for line in lines if line.startswith("| vLLM backend"))
    assert "not measured" in next(line for line in lines if "(GPU)" in line)
    assert "**error**" in next(line for line in lines if line.startswith("| memory"))
