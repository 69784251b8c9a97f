"""Rollouts on ``vllm serve`` replicas, fed with weights through vLLM's RL API.

A :class:`ServerFleet` is one or more replicas of one served model (data-parallel; each may be
tensor-parallel itself). Per push:

* full weights (:meth:`ServerFleet.push_weights`): ``/pause`` every replica (in-flight requests
  finish, the prefix cache is cleared: its KV blocks were computed with the old weights), send
  the weights with vLLM's own trainer-side weight-transfer engine (``/start_weight_update``,
  ``/update_weights``..., ``/finish_weight_update``; ``/init_weight_transfer_engine`` once),
  stamp a new weight version (``/update_weight_version``), check that every replica reports it
  (``/weight_info``), ``/resume``, and check that every replica scores a probe sequence as the
  pushed model does (a mismatch raises :class:`~agents.vllm_backend.StaleWeightsError`, as the
  in-process engine's check; a paused server schedules no request, so the probe comes after
  the resume, before the trainer samples);
* a LoRA adapter (:meth:`ServerFleet.push_adapter`): saved to a folder the servers can read and
  loaded under a fresh versioned name (``/v1/load_lora_adapter``: vLLM caches adapters by name),
  probe-checked the same way, and the previous version unloaded.

Transports (``transport``): ``"advgame_file"`` (``agents.weight_transfer``: safetensors files in
``/dev/shm``; CPU, or any single machine) or ``"nccl"`` (vLLM's NCCL engine, one NCCL group per
replica; GPUs, across nodes). The servers must be started with the same backend in
``--weight-transfer-config``. The NCCL path follows vLLM's API but could not be run where it was
written (no GPU there).

Generation goes through :class:`~agents.openai_backend.OpenAIBackend`: :meth:`ServerFleet.backend`
gives a generation backend for the served model, or for an adapter's current version, that splits
each batch across the replicas (:class:`SplitBackend`). ``connect`` builds the backend of one
served name over the fleet's URLs, so any backend over several URLs can replace it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Unpack

import httpx
import torch

from advgame_types import Sampling
from agents.hf import Chat, Generation, HFBackend
from agents.openai_backend import OpenAIBackend
from agents.roles import save_adapter
from agents.vllm_backend import PROBE_CHAT, PROBE_REPLY, StaleWeightsError, full_state_dict

if TYPE_CHECKING:
    from vllm.distributed.weight_transfer.base import TrainerWeightTransferEngine, WeightSource

    from agents.handles import CausalLM, Tokenizer

T = TypeVar("T")

TRANSPORTS = ("advgame_file", "nccl")


class ServerError(RuntimeError):
    """A replica refused or failed a control request (pause, weight update, adapter load...)."""


class Generator(Protocol):
    def generate(self, chats: Sequence[Chat], **sampling: Unpack[Sampling]) -> Sequence[Generation]: ...

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> Sequence[float]: ...


# ----------------------------------------------------------------------------- control plane


class ServerClient:
    """The RL control routes of one ``vllm serve`` (it implements vLLM's ``VLLMWeightSyncClient``)."""

    def __init__(self, url: str, *, timeout: float = 600.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServerError(f"{method} {self.url}{path} failed: {type(error).__name__}: {error}") from None
        if response.status_code == 404 and path in {"/pause", "/init_weight_transfer_engine", "/weight_info"}:
            raise ServerError(
                f"{self.url} has no {path}: start it with --weight-transfer-config (python -m agents.vllm_serve "
                f"switches vLLM's RL routes on with it; a plain vllm serve needs VLLM_SERVER_DEV_MODE=1)"
            )
        if response.status_code >= 400:
            raise ServerError(f"{method} {self.url}{path} answered HTTP {response.status_code}: {response.text[:500]}")
        try:
            return response.json() if response.content else None
        except ValueError:  # some routes answer plain text ("Success: LoRA adapter ... added")
            return response.text

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/v1/models")["data"]]

    def pause(self) -> None:
        # "wait": requests in flight finish with the old weights; the caches are cleared after
        self._call("POST", "/pause", params={"mode": "wait", "clear_cache": "true"})

    def resume(self) -> None:
        self._call("POST", "/resume")

    def weight_version(self) -> str | None:
        version = self._call("GET", "/weight_info")["weight_version"]
        return None if version is None else str(version)

    def update_weight_version(self, version: str) -> None:
        self._call("POST", "/update_weight_version", json={"new_version": version})

    def world_size(self) -> int:
        return int(self._call("GET", "/get_world_size", params={"include_dp": "false"})["world_size"])

    # vLLM's VLLMWeightSyncClient
    def init_weight_transfer_engine(self, init_info: dict[str, object]) -> None:
        self._call("POST", "/init_weight_transfer_engine", json={"init_info": init_info})

    def start_weight_update(self) -> None:
        self._call("POST", "/start_weight_update")

    def update_weights(self, update_info: dict[str, object] | list[dict[str, object]]) -> None:
        self._call("POST", "/update_weights", json={"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._call("POST", "/finish_weight_update", json={"weight_version": weight_version})

    # adapters
    def load_adapter(self, name: str, path: str) -> None:
        self._call("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})

    def unload_adapter(self, name: str) -> None:
        self._call("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    def close(self) -> None:
        self._http.close()


class FanOut:
    """One ``VLLMWeightSyncClient`` over several replicas: each call goes to all at once (for a
    transport whose data reaches every replica by itself, as files on a shared folder)."""

    def __init__(self, clients: Sequence[ServerClient]) -> None:
        self.clients = list(clients)
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.clients)), thread_name_prefix="fan-out")

    def _all(self, call: Callable[[ServerClient], T]) -> list[T]:
        return [f.result() for f in [self._pool.submit(call, c) for c in self.clients]]

    def init_weight_transfer_engine(self, init_info: dict[str, object]) -> None:
        self._all(lambda c: c.init_weight_transfer_engine(init_info))

    def start_weight_update(self) -> None:
        self._all(lambda c: c.start_weight_update())

    def update_weights(self, update_info: dict[str, object] | list[dict[str, object]]) -> None:
        self._all(lambda c: c.update_weights(update_info))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all(lambda c: c.finish_weight_update(weight_version))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def trainer_engines(
    transport: str,
    clients: Sequence[ServerClient],
    source: WeightSource,
    *,
    nccl_address: str = "127.0.0.1",
    nccl_port: int = 29600,
) -> list[TrainerWeightTransferEngine[Any]]:
    """vLLM trainer-side weight-transfer engines that reach every replica (made once per fleet).

    ``advgame_file``: one engine, its files read by all replicas. ``nccl``: one NCCL group per
    replica (the trainer at rank 0, the replica's TP×PP workers after it), each on a port of its
    own from ``nccl_port``; vLLM's engine pairs each broadcast with the replica's ``/update_weights``.
    """
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if transport == "advgame_file":
        from agents.weight_transfer import FileTrainerInitInfo

        info = FileTrainerInitInfo(rank=rank)
        return [WeightTransferTrainerFactory.trainer_init(info, client=FanOut(clients), source=source)]
    if transport == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        return [
            WeightTransferTrainerFactory.trainer_init(
                NCCLTrainerInitInfo(
                    rank=rank,
                    master_address=nccl_address,
                    master_port=nccl_port + i,
                    world_size=1 + client.world_size(),
                ),
                client=client,
                source=source,
            )
            for i, client in enumerate(clients)
        ]
    raise ValueError(f"weight transport {transport!r} is not one of {TRANSPORTS}")


# ----------------------------------------------------------------------------- generation


class SplitBackend:
    """Generation over several backends of one served model: a batch is cut into contiguous
    parts, one per backend, generated concurrently and put back in order. Chat ``i`` keeps its
    seed ``seed + i``, so the samples do not depend on how many replicas there are."""

    def __init__(self, backends: Sequence[Generator]) -> None:
        if not backends:
            raise ValueError("SplitBackend needs at least one backend")
        self.backends = list(backends)
        self._pool = ThreadPoolExecutor(max_workers=len(self.backends), thread_name_prefix="split")

    def generate(self, chats: Sequence[Chat], **sampling: Unpack[Sampling]) -> list[Generation]:
        seed = sampling.get("seed")

        def part(lo: int) -> Sampling:  # chat i keeps seed + i, whichever part it lands in
            return {**sampling, "seed": None if seed is None else seed + lo}

        n = len(self.backends)
        bounds = [len(chats) * k // n for k in range(n + 1)]
        parts = [(b, bounds[k], bounds[k + 1]) for k, b in enumerate(self.backends) if bounds[k + 1] > bounds[k]]
        futures = [self._pool.submit(b.generate, chats[lo:hi], **part(lo)) for b, lo, hi in parts]
        return [g for f in futures for g in f.result()]

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        return list(self.backends[0].score(chats, continuations))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def split_openai(urls: Sequence[str], model: str) -> SplitBackend:
    """The default ``connect``: one OpenAIBackend per replica, each batch split across them."""
    return SplitBackend([OpenAIBackend(url, model) for url in urls])


class Served:
    """The generation backend of one role on a fleet: whatever the fleet serves for ``name``
    *now* (the base model, or an adapter's latest version); ``adapter`` is accepted and must be
    that name (a policy passes its adapter on every call)."""

    def __init__(self, fleet: ServerFleet, name: str | None) -> None:
        self.fleet, self.name = fleet, name

    def generate(
        self, chats: Sequence[Chat], *, adapter: str | None = None, **sampling: Unpack[Sampling]
    ) -> Sequence[Generation]:
        if adapter is not None and adapter != self.name:
            raise ValueError(f"this backend serves {self.name!r}, not adapter {adapter!r}")
        return self.fleet.generator(self.fleet.served_name(self.name)).generate(chats, **sampling)


# ----------------------------------------------------------------------------- the fleet


class ServerFleet:
    """Replicas at ``urls`` serving one model, kept at the trainer's weights (module docstring).

    ``tokenizer``: the trainer's (the probe's reference log-prob is computed with it).
    ``tolerance``: how far (nats) the served probe log-prob may be from the trainer's: ~1e-4
    apart in float32 on both sides; use ~0.5 for a bf16 server.
    ``nccl_address``/``nccl_port``: transport ``nccl`` only, the trainer's address as the servers
    reach it and the first port of the per-replica NCCL groups.
    ``sender``: whether this process drives the servers. In a run of several trainer processes
    only rank 0 does; the others take part in the weight source's gathers (sharded tensors) and
    track the adapters' versioned names, which every rank counts alike.
    """

    def __init__(
        self,
        urls: Sequence[str],
        tokenizer: Tokenizer,
        *,
        transport: str = "advgame_file",
        tolerance: float = 5e-3,
        connect: Callable[[Sequence[str], str], Generator] = split_openai,
        scratch: str | Path | None = None,
        sender: bool = True,
        nccl_address: str = "127.0.0.1",
        nccl_port: int = 29600,
    ) -> None:
        if not urls:
            raise ValueError("a server fleet needs at least one URL (rollout.urls)")
        if transport not in TRANSPORTS:
            raise ValueError(f"weight transport {transport!r} is not one of {TRANSPORTS}")
        self.urls, self.tokenizer, self.transport, self.tolerance = list(urls), tokenizer, transport, tolerance
        self.connect, self.sender = connect, sender
        self.nccl_address, self.nccl_port = nccl_address, nccl_port
        self.clients = [ServerClient(url) for url in self.urls]
        served = [c.models() for c in self.clients]
        self.model = served[0][0]  # the base model's served name (the first of /v1/models)
        if any(s[0] != self.model for s in served):
            raise ValueError(f"the replicas serve different models: {[s[0] for s in served]} at {self.urls}")
        self.weights_version = 0
        self.adapters: dict[str, str] = {}  # role -> its served versioned adapter name
        self._adapter_pushes = 0
        self._engines: list[TrainerWeightTransferEngine[Any]] | None = (
            None  # vLLM trainer engines, made at the first push
        )
        self._generators: dict[str, Generator] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix="advgame-adapters-", dir=scratch or _shared_root()))

    # names and generation

    def served_name(self, name: str | None) -> str:
        """The model name a request uses: the base's, or adapter ``name``'s current version."""
        if name is None:
            return self.model
        if name not in self.adapters:
            raise KeyError(f"no adapter {name!r} has been pushed to the servers yet (push_adapter first)")
        return self.adapters[name]

    def generator(self, served: str) -> Generator:
        if served not in self._generators:
            self._generators[served] = self.connect(self.urls, served)
        return self._generators[served]

    def backend(self, name: str | None = None) -> Served:
        return Served(self, name)

    def _drop_generator(self, served: str) -> None:
        old = self._generators.pop(served, None)
        if old is not None and hasattr(old, "close"):
            old.close()

    # full weights

    def push_weights(self, model: CausalLM, *, check: bool = True) -> None:
        """Pause, send ``model``'s full weights (merged, for a PEFT model), stamp the version,
        check every replica, resume (also after a failure, so the servers are never left paused)."""
        state = full_state_dict(model)
        if not self.sender:
            self._send(state)
            self.weights_version += 1
            return
        self._all(lambda c: c.pause())
        try:
            self._send(state)
            self.weights_version += 1
            version = str(self.weights_version)
            self._all(lambda c: c.update_weight_version(version))
            stale = {c.url: v for c, v in zip(self.clients, self._all(lambda c: c.weight_version()), strict=True)}
            if any(v != version for v in stale.values()):
                raise StaleWeightsError(f"weights version {version} pushed, but the replicas report {stale}")
        finally:
            self._all(lambda c: c.resume())
        if check:  # a paused server schedules no request, the probe's neither: checked once resumed
            self.check(model, None)

    def _send(self, state: dict[str, torch.Tensor]) -> None:
        from agents.weight_transfer import StateSource

        source = StateSource(state)
        if self._engines is None:
            self._engines = trainer_engines(
                self.transport, self.clients, source, nccl_address=self.nccl_address, nccl_port=self.nccl_port
            )
        for engine in self._engines:
            engine.source = source  # the sampling policy's tensors of this push
            engine.send_weights()

    # adapters

    def push_adapter(self, name: str, peft_model: CausalLM, adapter_name: str = "default") -> str:
        """Serve ``peft_model``'s adapter ``adapter_name`` as a new version of ``name``; returns the
        served name. The folder must be readable by the servers (same machine or a shared mount)."""
        self._adapter_pushes += 1
        version = f"{name}-v{self._adapter_pushes}"
        if not self.sender:
            self.adapters[name] = version
            return version
        save_adapter(peft_model, self._scratch / version, adapter_name)  # gathered FSDP2 players too
        # PEFT saves a non-default adapter in a sub-folder of its name
        saved = self._scratch / version if adapter_name == "default" else self._scratch / version / adapter_name
        self._all(lambda c: c.load_adapter(version, str(saved)))
        old = self.adapters.get(name)
        self.adapters[name] = version
        try:
            self.check(peft_model, adapter_name, served=version)
        finally:
            if old is not None:
                self._drop_generator(old)
                self._all(lambda c: c.unload_adapter(old))
                shutil.rmtree(self._scratch / old, ignore_errors=True)
        return version

    # checks

    def check(self, model: CausalLM, adapter: str | None, *, served: str | None = None) -> None:
        """Raise StaleWeightsError unless every replica scores the probe as ``model`` does (with
        ``adapter`` on, for a PEFT model)."""
        with torch.no_grad():
            want = HFBackend(model, self.tokenizer).score([PROBE_CHAT], [PROBE_REPLY], adapter=adapter)[0]
        name = served or self.model
        for url in self.urls:
            with OpenAIBackend(url, name, concurrency=1, deadline=120) as probe:
                (have,) = probe.score([PROBE_CHAT], [PROBE_REPLY])
            if abs(have - want) > self.tolerance:
                what = f"adapter {name}" if served else f"weights version {self.weights_version}"
                raise StaleWeightsError(
                    f"{url} scores the probe at {have:.4f} nats but the pushed model at {want:.4f}: "
                    f"{what} did not take effect (tolerance {self.tolerance:g})"
                )

    def _all(self, call: Callable[[ServerClient], T]) -> list[T]:
        return [call(c) for c in self.clients]

    def close(self) -> None:
        for served in list(self._generators):
            self._drop_generator(served)
        if self.sender:  # leave the servers serving what they were started with
            for version in self.adapters.values():
                for client in self.clients:
                    with contextlib.suppress(ServerError):
                        client.unload_adapter(version)
        self.adapters.clear()
        for engine in self._engines or []:
            engine.shutdown()
            fan_out = getattr(engine, "client", None)
            if isinstance(fan_out, FanOut):
                fan_out.close()
        for client in self.clients:
            client.close()
        shutil.rmtree(self._scratch, ignore_errors=True)


def _shared_root() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


# ----------------------------------------------------------------------------- a local server


def launch(
    model: str,
    port: int,
    log: str | Path,
    *extra: str,
    transport: str = "advgame_file",
    dtype: str = "float32",
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python -m agents.vllm_serve MODEL`` on loopback with the RL routes and ``transport``
    (what a test, a benchmark or a CPU user runs; on GPUs start ``vllm serve`` as usual with
    ``--weight-transfer-config '{"backend": "nccl"}'`` and ``VLLM_SERVER_DEV_MODE=1``). The
    server's processes import this checkout's ``agents`` (``PYTHONPATH``), which registers the
    transport. Stop it with ``terminate()``; ``new_session``: in a process group of its own, so
    that the caller can signal the server and the engine processes it started together."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, read by the CPU build only
    command = [sys.executable, "-m", "agents.vllm_serve", model, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", dtype, "--weight-transfer-config", f'{{"backend": "{transport}"}}', *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=new_session
        )


def wait_ready(url: str, process: subprocess.Popen[bytes], log: str | Path, seconds: float = 600) -> None:
    """Return once ``url`` answers ``/health``; raise with the log's tail if the server dies or is late."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"vllm serve did not answer in {seconds:g} s:\n{Path(log).read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
