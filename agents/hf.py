"""Hugging Face transformers backend of the generation protocol (CPU or GPU).

Batched chat generation with left padding, returning text, token ids, per-token log-probs
(under the model's own distribution, before temperature and top-p, as vLLM's raw log-probs) and
the finish reason; and summed log-probs of given continuations (right padding, so positions
stay exact).

Sampling applies only the temperature and top-p asked for (``decode``, our loop): the model's
``generation_config`` (Qwen2.5 ships repetition_penalty 1.05 and top_k 20) plays no part, so at
temperature 1 and top-p 1 the tokens are drawn from exactly the distribution whose log-probs
are recorded and that scoring (and training) computes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.checkpoint import checkpoint

from advgame_types import Chat

if TYPE_CHECKING:
    from transformers import Cache

    from agents.handles import CausalLM, Tokenizer


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop" (end of turn) or "length" (hit max_tokens)
    # The end-of-turn token the generation stopped on (a model may have several, e.g.
    # <|im_end|> and <|endoftext|>); not part of token_ids or text. None when cut at the
    # limit, or when the backend cannot tell.
    stop_token_id: int | None = None


def render_chat(tokenizer: Tokenizer, chat: Chat) -> str:
    """The chat as the model's prompt text; a final assistant message is continued."""
    messages = [dict(m) for m in chat]
    if not messages:
        raise ValueError("a chat needs at least one message")
    prefill = messages[-1]["role"] == "assistant"
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
        )
    )


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer: Tokenizer, chats: Sequence[Chat], max_context: int, max_tokens: int) -> list[list[int]]:
    """Each chat's prompt tokens, cut from the left so ``max_tokens`` still fit the context."""
    budget = max_context - max_tokens
    if budget < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for a prompt in a {max_context}-token context")
    return [encode(tokenizer, render_chat(tokenizer, c))[-budget:] for c in chats]


def continuation_pairs(
    tokenizer: Tokenizer, chats: Sequence[Chat], continuations: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) per chat, tokenised separately as at generation time."""
    if len(chats) != len(continuations):
        raise ValueError(f"{len(chats)} chats but {len(continuations)} continuations")
    return [
        (encode(tokenizer, render_chat(tokenizer, c)), encode(tokenizer, t))
        for c, t in zip(chats, continuations, strict=True)
    ]


def stop_token_ids(model: CausalLM, tokenizer: Tokenizer) -> set[int]:
    """Every end-of-turn id of the model and of the tokenizer (the chat template's), as vLLM
    stops on: Qwen2.5 lists <|im_end|> and <|endoftext|>."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
    return {int(i) for i in ids if i is not None}


def padded_vocab_ids(vocab_size: int, tokenizer: Tokenizer) -> list[int]:
    """Ids of the embedding rows past the tokenizer's vocabulary (Qwen2.5 pads 151,665 tokens to
    152,064 rows): they decode to nothing, so a player never samples them (AdvGame's
    ``allowed_token_ids``, A §3.1)."""
    return list(range(len(tokenizer), vocab_size))


def pad_rows(rows: Sequence[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token rows padded to the longest, on the left or the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


# Prompt positions a shared stage of the prompt cache (the prefix all prompts start with, or each
# group's) must save (its length times its prompts but one) to pay for its extra forward (and
# backward) through every layer. benchmarks/prefix_sharing.py, the demo's LoRA player in
# bfloat16, 2 threads, the common prefix alone: 7 x 24 saved positions (the defender's SFT
# batch: the system turn) cost 16% more time, 7 x 53 (the attacker's SFT batch, both templates)
# broke even, 7 x 158 (one split's attacker pairs, one template) took 0.71 of the time.
MIN_SAVED_POSITIONS = 512


@dataclass
class PromptCache:
    """The KV cache of every row's prompt but its last token (``shared_prompt_cache``), and the
    cache's attention mask (1 on each row's real positions), shape [rows, cached positions]."""

    cache: Cache
    mask: torch.Tensor


def shared_prompt_cache(model: CausalLM, prompts: list[list[int]], pad_id: int) -> PromptCache | None:
    """The KV cache of every prompt but its last token, each token the prompts share encoded
    once where that saves enough (``_prefix_stages``: the prefix all prompts start with, each
    group's own prefix, each distinct prompt's rest), copied to every row that asks for it;
    ``None`` when nothing is shared.

    A rollout samples many answers to one prompt (the CPU demo: 8 per rewrite), and the
    prompt is most of each row's tokens, so encoding it once per row is most of the forward
    work; the attacker's prompts are one of two instruction templates (150-158 of their about
    205 tokens in the demo) around different requests. Each stage's spans are left-padded
    after the cache of the stage before, so a row's mask may have gaps; positions count real
    tokens, as in one left-padded forward. The caller then feeds each row's last prompt token
    on this cache: the rows, their order and the random draws are unchanged, so a seed gives
    the same tokens; the logits differ from one full forward only by float summation order
    (about 1e-6 in float32, tests/test_rollout_speed.py)."""
    stages = _sharing(prompts)
    if stages is None:
        return None
    device = next(model.parameters()).device
    # the decoder alone: the cache is all that is wanted, and the head's projection of a
    # last-position slice ran as a batched matmul over a copy of the head per prompt in bfloat16
    # (3.3 s of the CPU demo's 25 s defender call)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    cache: Cache | None = None
    mask = torch.zeros((1, 0), dtype=torch.long, device=device)
    for stage in stages:
        parent = torch.tensor(stage.parent, device=device)
        mask = mask[parent]
        if cache is not None:
            cache.batch_select_indices(parent)  # an index copy: gradients flow back to the shared rows
        if not any(stage.spans):
            continue
        ids, span_mask = (t.to(device) for t in pad_rows([list(span) for span in stage.spans], pad_id, left=True))
        positions = (mask.sum(-1, keepdim=True) + span_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([mask, span_mask], dim=-1)
        cache = decoder(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        ).past_key_values
    assert cache is not None  # every prompt has 2+ tokens, so some stage had one
    distinct = {p: i for i, p in enumerate(dict.fromkeys(tuple(p) for p in prompts))}
    index = torch.tensor([distinct[tuple(p)] for p in prompts], device=device)
    cache.batch_select_indices(index)
    return PromptCache(cache, mask[index])


@dataclass
class _Stage:
    """One forward of ``shared_prompt_cache``: a span of tokens per node, each continuing the
    cache of its ``parent`` node (an index into the stage before's nodes; 0 for the first)."""

    spans: list[tuple[int, ...]]
    parent: list[int]


def _sharing(prompts: Sequence[Sequence[int]]) -> list[_Stage] | None:
    """The stages that build the prompts' shared cache; ``None`` when no prompt repeats and no
    prefix is worth encoding once, or a prompt has fewer than 2 tokens."""
    distinct = list(dict.fromkeys(tuple(p) for p in prompts))
    if min(len(p) for p in distinct) < 2:
        return None
    stages = _prefix_stages(distinct)
    return None if len(distinct) == len(prompts) and len(stages) == 1 else stages


def _prefix_stages(distinct: list[tuple[int, ...]]) -> list[_Stage]:
    """The cache of the distinct prompts but their last tokens as stages: the prefix all share,
    once; then, within each group of prompts that agree on the token after it, the group's own
    prefix, once (the attacker's two templates in one SFT batch); then each prompt's rest.
    A shared stage is kept only where it saves ``MIN_SAVED_POSITIONS``; the last stage always is.

    Two levels rather than a whole prefix tree: every stage is one more forward (and backward)
    through every layer, which on a small model costs about as much as a few hundred positions."""
    stop = [len(p) - 1 for p in distinct]  # the caller feeds each prompt's last token
    top = _common_length(distinct, min(stop))
    shared = top if top * (len(distinct) - 1) >= MIN_SAVED_POSITIONS else 0
    by_next: dict[int, list[int]] = {}
    for i, p in enumerate(distinct):
        by_next.setdefault(p[top] if top < stop[i] else -1, []).append(i)
    groups = list(by_next.values())
    heads = [_common_length([distinct[i] for i in g], min(stop[i] for i in g)) for g in groups]
    saved = sum((len(g) - 1) * (head - shared) for g, head in zip(groups, heads, strict=True))
    grouped = len(groups) > 1 and saved >= MIN_SAVED_POSITIONS
    if not grouped:
        groups, heads = [list(range(len(distinct)))], [shared]
    stages = [_Stage([distinct[0][:shared]], [0])] if shared else []
    if grouped:
        stages.append(
            _Stage([distinct[g[0]][shared:head] for g, head in zip(groups, heads, strict=True)], [0] * len(groups))
        )
    group_of = {i: k for k, g in enumerate(groups) for i in g}
    rests = [p[heads[group_of[i]] : stop[i]] for i, p in enumerate(distinct)]
    return [*stages, _Stage(rests, [group_of[i] for i in range(len(distinct))])]


def _common_length(rows: Sequence[tuple[int, ...]], limit: int) -> int:
    """How many first tokens all ``rows`` share, at most ``limit``."""
    common = 0
    for column in zip(*rows, strict=False):  # stops at the shortest row
        if common == limit or any(token != column[0] for token in column):
            break
        common += 1
    return common


GQA_SDPA = "advgame_sdpa_gqa"


def _gqa_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with grouped-query heads left to the kernel (``enable_gqa``).

    With a padding mask transformers copies every key/value head once per query head it serves
    before calling SDPA (``repeat_kv``: its GPU kernels take GQA only without a mask); on CPU
    that copy of the whole KV cache, per layer per decoded token, took 14% of a rollout of the
    bundled model (3 KV heads serve 9 query heads), and torch's CPU kernel takes the groups as
    they are, with the same result. A decode step (one query position per row) on CPU goes to
    ``_one_position_attention``. Every other case goes to transformers' own function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    special = any(kwargs.get(k) is not None for k in ("position_bias", "cache")) or kwargs.get("output_attentions")
    cpu = query.device.type == "cpu" and not special and not dropout
    if cpu and query.shape[2] == 1:  # a decode step: one new position per row
        out = _one_position_attention(query, key, value, attention_mask, scaling)
    elif cpu and attention_mask is not None and groups > 1:
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True
        )
    else:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    return out.transpose(1, 2).contiguous(), None


def _one_position_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float | None
) -> torch.Tensor:
    """Attention of one query position per row over the KV cache, as two batched float32 matmuls
    (the query heads grouped under the key/value head they share: no copy of the cache per head),
    cast back to the query's dtype.

    Written by hand because torch's CPU SDPA kernel tiles over query positions and gains nothing
    from a single one: in bfloat16 it took 3.6-6x as long as this at the CPU demo's decode shapes
    (16-128 rows, 9 query heads on 3 KV heads, 100-300 cached positions;
    benchmarks/decode_attention.py), 14.5 s of a 3-step demo profile's 137 s. In float32, as the
    kernel accumulates: with the scores rounded to bfloat16 the error was 6x the kernel's, and
    GRPO's importance ratio over the sampler's log-probs noticed (tests/test_sampling_copy.py).
    Results agree with the kernel's to float rounding (tests/test_rollout_speed.py)."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.float().reshape(rows, kv_heads, heads // kv_heads, dim)  # query head h reads KV head h // groups
    scores = torch.matmul(grouped, key.float().transpose(-1, -2)) * (dim**-0.5 if scaling is None else scaling)
    if mask is not None:  # (rows, 1, 1, positions): boolean (True attends) or additive
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(scores.softmax(-1), value.float())
    return out.to(query.dtype).reshape(rows, heads, 1, dim)


@contextlib.contextmanager
def gqa_attention(model: CausalLM) -> Iterator[None]:
    """Within: a model that runs transformers' "sdpa" attention runs ``_gqa_sdpa`` (same masks)."""
    config: Any = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GQA_SDPA, _gqa_sdpa)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
    config._attn_implementation = GQA_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


def finished_generation(tokenizer: Tokenizer, stop_ids: set[int], row: list[int], logprobs: list[float]) -> Generation:
    """A sampled row of new tokens as a generation: cut at its first end-of-turn token."""
    end = next((i for i, t in enumerate(row) if t in stop_ids), None)
    kept = row if end is None else row[:end]
    return Generation(
        text=str(tokenizer.decode(kept, skip_special_tokens=True)),
        token_ids=kept,
        logprobs=logprobs[: len(kept)],
        finish_reason="length" if end is None else "stop",
        stop_token_id=None if end is None else row[end],
    )


def native_bfloat16(device: torch.device | None = None) -> bool:
    """Whether ``device`` (default: the GPU if there is one, else the CPU) multiplies bfloat16 in
    hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX that oneDNN runs
    bfloat16 matmuls on. There they run about twice as fast as float32's
    (benchmarks/roofline.py: 216 against 99 GFLOP/s on the reference machine, one thread);
    elsewhere torch emulates them, and on CPUs without AVX-512 they ran 0.04 times as fast, so a
    rollout in bfloat16 would take many times as long."""
    kind = device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:  # oneDNN's own check accepts AVX512-BW CPUs that only emulate bfloat16; the flags do not
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class SamplingCopy:
    """Copies of ``model`` in ``dtype`` (bfloat16) that sampling runs on, brought up to date with
    ``model`` before each use (``current``).

    The learner trains in float32; sampling in bfloat16 runs its matmuls at about twice the speed
    on machines that multiply bfloat16 in hardware (``native_bfloat16``). Autocast would re-cast
    every frozen weight at every decoded token; a copy casts each weight once, and afterwards
    only the tensors that changed since its last use: torch's version counter of a tensor moves
    with every in-place write (the optimizer's step, an EMA update, an adapter copy), so a LoRA
    step touches the adapters and leaves the shared base as it is. Buffers stay as they are (the
    rotary frequencies in float32). What changes is the numerics of sampling only: the tokens are
    drawn from the bfloat16 model's distribution and the recorded log-probs are its own; every
    update recomputes the learner's log-probs in float32 (docs/paper-fidelity.md, "Sampling in
    bfloat16").

    A PEFT model sampled as one of its LoRA adapters gets a plain copy of its base with that
    adapter merged into the weights, W + s·B·A (``MergedCopy``), one per adapter: at decode, each
    of the ~210 adapted linears of the bundled model is then one matmul instead of PEFT's three
    and its bookkeeping (measured on the CPU demo's calls: 16 rows x 64 tokens 8.4 s -> 6.5 s,
    128 rows x 24 tokens 10.2 s -> 9.0 s). Any other model, or an adapter PEFT cannot merge
    linearly (DoRA, a LoRA on an embedding), gets a cast copy of the whole model (``CastCopy``)."""

    def __init__(self, model: CausalLM, dtype: torch.dtype = torch.bfloat16) -> None:
        self.model, self.dtype = model, dtype
        self.copies: dict[str | None, CastCopy | MergedCopy] = {}

    def current(self, adapter: str | None = None) -> CausalLM:
        """A copy that samples as ``model`` with ``adapter`` active (None: as ``model`` is), every
        parameter of ``model`` written since its last use taken in."""
        key = adapter if adapter is not None and mergeable(self.model, adapter) else None
        if key not in self.copies:
            merged = [c for c in self.copies.values() if isinstance(c, MergedCopy)]
            self.copies[key] = (
                CastCopy(self.model, self.dtype)
                if key is None
                else MergedCopy(self.model, key, self.dtype, like=merged[0] if merged else None)
            )
        model = self.copies[key].current()
        if key is None and adapter is not None:
            model.set_adapter(adapter)
        return model


class CastCopy:
    """``model`` cast to ``dtype``, whole (a PEFT model with all its adapters)."""

    def __init__(self, model: CausalLM, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype
        self._copy_anew()

    def _copy_anew(self) -> None:
        self.copy: CausalLM = copy.deepcopy(self.model)
        self.copy.eval()
        for param in self.copy.parameters():
            param.requires_grad_(False)
            param.grad = None
            param.data = param.data.to(self.dtype)  # one Parameter per tied group: cast once
        self._targets = dict(self.copy.named_parameters())
        self._stamps = {name: stamp(p) for name, p in self.model.named_parameters()}

    def current(self) -> CausalLM:
        source: dict[str, torch.Tensor] = dict(self.model.named_parameters())
        if source.keys() != self._targets.keys():  # an adapter came or went: copy anew
            self._copy_anew()
            return self.copy
        with torch.no_grad():
            for name, param in source.items():
                now = stamp(param)
                if self._stamps[name] != now:
                    self._targets[name].copy_(param)
                    self._stamps[name] = now
        return self.copy


def check_adapter(model: CausalLM, adapter: str | None) -> None:
    if adapter is not None and adapter not in getattr(model, "peft_config", {}):
        raise KeyError(f"the model has no adapter named {adapter!r}")


def lora_layers(model: CausalLM, adapter: str) -> dict[str, Any]:  # peft.tuners.lora.LoraLayer
    """The LoRA layers of a PEFT model that carry ``adapter``, by their path in its base model."""
    from peft.tuners.lora import LoraLayer

    base: torch.nn.Module = model.get_base_model()  # type: ignore[operator]  # PeftModel's
    return {path: m for path, m in base.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}


def mergeable(model: CausalLM, adapter: str) -> bool:
    """Whether ``adapter`` of ``model`` (a PEFT model) adds W + s·B·A to linears and nothing else."""
    if adapter not in getattr(model, "peft_config", {}):
        return False
    from peft.tuners.lora import Linear

    layers = lora_layers(model, adapter).values()
    return all(isinstance(m, Linear) and not m.use_dora.get(adapter) and not m.fan_in_fan_out for m in layers)


class MergedCopy:
    """A plain copy of a PEFT model's base in ``dtype``, ``adapter`` merged into its weights; the
    parameters no adapter touches (embeddings, norms) are shared with ``like``, another adapter's."""

    def __init__(self, model: CausalLM, adapter: str, dtype: torch.dtype, like: MergedCopy | None) -> None:
        self.model, self.adapter, self.dtype = model, adapter, dtype
        self.shared: dict[str, torch.Tensor] = {}  # by name in the copy
        self._copy_anew(like)

    def _copy_anew(self, like: MergedCopy | None = None) -> None:
        self.layers = lora_layers(self.model, self.adapter)
        if like is not None and like.layers.keys() == self.layers.keys():
            # deepcopy's memo maps each shared parameter to itself: only the merged ones are new
            shared = {id(p): p for name, p in like.copy.named_parameters() if name in like.shared}
            self.copy: CausalLM = copy.deepcopy(like.copy, memo=shared)
        else:
            self.copy = copy.deepcopy(self.model).unload()  # type: ignore[operator]  # the base, LoRA removed
            for param in self.copy.parameters():
                param.requires_grad_(False)
                param.grad = None
                param.data = param.data.to(self.dtype)
        self.copy.eval()
        targets = dict(self.copy.named_parameters())
        self.merged = {path: targets[f"{path}.weight"] for path in self.layers}
        merged = {f"{path}.weight" for path in self.layers}
        self.shared = {name: p for name, p in targets.items() if name not in merged}  # biases included
        self._stamps: dict[str, tuple[object, ...]] = {}

    def current(self) -> CausalLM:
        if lora_layers(self.model, self.adapter) != self.layers:  # layers came, went or were replaced
            self._copy_anew()
        source = dict(self.model.get_base_model().named_parameters())  # type: ignore[operator]
        with torch.no_grad():
            for name, target in self.shared.items():  # a LoRA layer's bias is its base layer's
                path, leaf = name.rsplit(".", 1)
                param = source[f"{path}.base_layer.{leaf}" if path in self.layers else name]
                if self._stamps.get(name) != (now := stamp(param)):
                    target.copy_(param)
                    self._stamps[name] = now
            for path, layer in self.layers.items():
                parts = (layer.base_layer.weight, layer.lora_A[self.adapter].weight, layer.lora_B[self.adapter].weight)
                now = (*(stamp(t) for t in parts), layer.scaling[self.adapter])
                if self._stamps.get(path) != now:
                    self.merged[path].copy_(parts[0] + layer.get_delta_weight(self.adapter))
                    self._stamps[path] = now
        return self.copy


def stamp(tensor: torch.Tensor) -> tuple[int, int]:
    """Where a tensor's data lives and how often it was written in place: equal stamps, same values."""
    return tensor.data_ptr(), tensor._version


def check_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


# Rows one generate() call runs at once, unless told. A decode step's cost on a CPU is mostly
# per-step work (every weight read, every op dispatched) until a batch is large: the demo's
# greedy evaluation (169 held-out seeds, 64 tokens, the bundled model in float32, 2 threads) took
# 53.6 s at 64 rows against 87.7 s at 16, with the same 169 answers (benchmarks/eval_batch.py).
BATCH_SIZE = 64


class HFBackend:
    """Generation and scoring with a transformers causal LM.

    ``max_context`` bounds prompt + generation; longer prompts are cut from the left (the
    start of a long conversation goes first) -- a defined truncation, recorded nowhere else.
    """

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Tokenizer,
        *,
        batch_size: int = BATCH_SIZE,
        max_context: int | None = None,
        share_prompts: bool = True,
        sampling_copy: SamplingCopy | None = None,
    ) -> None:
        """``sampling_copy``: a lower-precision copy of ``model`` that ``generate`` samples from
        (scoring stays on ``model``)."""
        if sampling_copy is not None and sampling_copy.model is not model:
            raise ValueError("sampling_copy must be a copy of the backend's own model")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.sampling_copy = sampling_copy
        # encode a prompt that several rows of a batch share once (off: the benchmark's baseline)
        self.share_prompts = share_prompts
        self.gqa_in_kernel = True  # generate with _gqa_sdpa (off: the benchmark's baseline)
        self.max_context = max_context or int(getattr(model.config, "max_position_embeddings", 2048))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.stop_ids = stop_token_ids(model, tokenizer)
        self.padded_ids = padded_vocab_ids(int(model.config.vocab_size), tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pad(self, rows: Sequence[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id, left=left)
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
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
        check_sampling(max_tokens, temperature, top_p)
        if self.sampling_copy is None:
            model = self.model
            self.use_adapter(adapter, model)
        else:
            check_adapter(self.model, adapter)  # the copy samples as that adapter
            model = self.sampling_copy.current(adapter)
        prompts = prompt_ids(self.tokenizer, chats, self.max_context, max_tokens)
        if seed is not None:
            torch.manual_seed(seed)
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._generate_batch(model, prompts[start : start + self.batch_size], max_tokens, temperature, top_p)
        return out

    def _generate_batch(
        self, model: CausalLM, prompts: list[list[int]], max_tokens: int, temperature: float, top_p: float
    ) -> list[Generation]:
        cut = self.padded_ids[0] if self.padded_ids else None

        def next_logprobs(logits: list[torch.Tensor]) -> torch.Tensor:
            scores = logits[0].float()
            if cut is not None:  # sampled and recorded from the masked distribution
                scores[:, cut:] = -math.inf
            return scores.log_softmax(-1)

        return decode(
            [fixed(model)],
            next_logprobs,
            prompts,
            self.tokenizer,
            stop_ids=self.stop_ids,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            share_prompts=self.share_prompts,
            gqa_in_kernel=self.gqa_in_kernel,
        )

    def use_adapter(self, adapter: str | None, model: CausalLM | None = None) -> None:
        """Activate a LoRA adapter of a PEFT model (default: the backend's; ``None``: leave the
        model as it is)."""
        model = self.model if model is None else model
        check_adapter(model, adapter)
        if adapter is not None:
            model.set_adapter(adapter)

    @torch.no_grad()
    def score(self, chats: Sequence[Chat], continuations: Sequence[str], *, adapter: str | None = None) -> list[float]:
        self.use_adapter(adapter)
        pairs = continuation_pairs(self.tokenizer, chats, continuations)
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            out += self.sequence_logprobs(pairs[start : start + self.batch_size]).tolist()
        return out

    @torch.no_grad()
    def choice_logprobs(
        self, chats: Sequence[Chat], options: Sequence[str], *, adapter: str | None = None
    ) -> list[list[float]]:
        """``score(chat, option)`` of every option for each chat, in one forward per chat (per
        branch point) rather than one per option: a judge's one-token answers (A/B, yes/no, the
        digits) share the prompt and differ only in their last token, so a single forward over
        the prompt reads all of them off one next-token distribution (0-10: over prompt + "1")."""
        self.use_adapter(adapter)
        wanted = [encode(self.tokenizer, o) for o in options]
        if not all(wanted):
            raise ValueError("every option must be non-empty text")
        paths = branch_paths(wanted)
        prompts = prompt_ids(self.tokenizer, chats, self.max_context, max(len(path) for path in paths))
        rows = [(prompt, path) for prompt in prompts for path in paths]
        dists: list[torch.Tensor] = []  # per row: [len(path) + 1, vocab] log-probs after prompt + path[:j]
        for start in range(0, len(rows), self.batch_size):
            dists += self._next_token_logprobs(rows[start : start + self.batch_size])
        out = []
        for i in range(len(chats)):
            per_path = dict(zip(paths, dists[i * len(paths) : (i + 1) * len(paths)], strict=True))
            out.append([_option_logprob(per_path, tuple(o)) for o in wanted])
        return out

    def _next_token_logprobs(self, rows: Sequence[tuple[list[int], tuple[int, ...]]]) -> list[torch.Tensor]:
        """Left-padded, so every row's last positions line up and only they are projected to the
        vocabulary (a judge prompt is hundreds of tokens; its options one or two)."""
        ids, attention = self._pad([p + list(path) for p, path in rows], left=True)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(path) for _, path in rows) + 1
        logits = self.model(
            input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep, use_cache=False
        ).logits.float()
        logps = logits.log_softmax(-1)
        return [logps[i, keep - len(path) - 1 :] for i, (_, path) in enumerate(rows)]

    def sequence_logprobs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
        """Summed log-probs of each continuation given its prompt (token ids), shape [batch];
        differentiable when called with gradients enabled (training uses this)."""
        logps, mask = token_logprobs(
            self.model, pairs, pad_id=self.tokenizer.pad_token_id, max_context=self.max_context
        )
        return (logps * mask).sum(-1)


def branch_paths(options: Sequence[list[int]]) -> list[tuple[int, ...]]:
    """Fewest token paths whose forwards reach every option: option o is read off a path that
    starts with o[:-1] (the distribution after it holds o's last token)."""
    paths: list[tuple[int, ...]] = []
    for option in sorted(options, key=len, reverse=True):
        stem = tuple(option[:-1])
        if not any(path[: len(stem)] == stem for path in paths):
            paths.append(stem)
    return paths


def _option_logprob(per_path: Mapping[tuple[int, ...], torch.Tensor], option: tuple[int, ...]) -> float:
    stem = option[:-1]
    dist = next(d for path, d in per_path.items() if path[: len(stem)] == stem)
    return float(sum(dist[j, token] for j, token in enumerate(option)))


# Logit elements one chunk of scored positions may hold (float32: 256 MiB): 441 positions at
# Qwen2.5's 152k vocabulary, 1365 at SmolLM2's 49k.
CHUNK_LOGITS = 2**26


def token_logprobs(
    model: CausalLM,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    max_context: int,
    chunk_logits: int | None = CHUNK_LOGITS,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each continuation given its prompt, in one right-padded forward
    (a prompt that several pairs share: ``shared_prompt_logprobs``; ``share_prompts=False`` never).

    Returns ``(logps, mask)`` of shape [batch, longest continuation]: row i holds continuation
    i's token log-probs from its first token on, ``mask`` is 1 on real tokens. Rows longer than
    ``max_context`` lose prompt tokens from the left first (then continuation tokens, which
    then count as unscored: mask 0). Differentiable when gradients are enabled.

    Only scored positions are projected onto the vocabulary, ``chunk_logits`` logit elements at
    a time (``TargetLogprobs``), so no [positions x vocabulary] tensor exists; ``None`` takes
    the model's full logits instead (and so does a model that post-processes its logits).
    """
    if not pairs:
        raise ValueError("token_logprobs needs at least one (prompt, continuation) pair")
    if share_prompts and chunk_logits is not None and prompts_shareable(model, pairs, max_context):
        return shared_prompt_logprobs(model, pairs, pad_id=pad_id, chunk_logits=chunk_logits)
    rows = [(p + c)[-max_context:] for p, c in pairs]
    width = max(len(r) for r in rows)
    device = next(model.parameters()).device
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
    ids, attention = ids.to(device), attention.to(device)
    scored = [min(len(c), len(row) - 1) for row, (_, c) in zip(rows, pairs, strict=True)]  # a cut row keeps its last n
    # Logits only from the first position that predicts a scored token: the vocabulary projection
    # is a large share of a small model's work, and prompt positions are most of every row.
    first = min(len(row) - 1 - n for row, n in zip(rows, scored, strict=True))
    spans = [(len(row) - 1 - n - first, len(row) - 1 - first) for row, n in zip(rows, scored, strict=True)]
    targets = ids[:, first + 1 :]  # position first + j predicts token first + j + 1
    forward = functools.partial(model, input_ids=ids, attention_mask=attention, logits_to_keep=width - first)
    if chunk_logits is None or _post_processes_logits(model):
        logits = forward(use_cache=False).logits[:, :-1].float()
        all_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    else:
        wanted = torch.zeros(targets.shape, dtype=torch.bool)
        for i, (start, end) in enumerate(spans):
            wanted[i, start:end] = True
        head = model.get_output_embeddings()
        model.set_output_embeddings(TargetLogprobs(head, targets, wanted.to(device), chunk_logits))
        try:  # the stand-in head runs inside the model's own forward (FSDP2 gathers its weight there)
            all_logps = forward(use_cache=False).logits
        finally:
            model.set_output_embeddings(head)

    longest = max(len(c) for _, c in pairs)
    logps = all_logps.new_zeros((len(rows), max(longest, 1)))
    mask = all_logps.new_zeros((len(rows), max(longest, 1)))
    for i, ((_, cont), n, (start, end)) in enumerate(zip(pairs, scored, spans, strict=True)):
        logps[i, len(cont) - n : len(cont)] = all_logps[i, start:end]
        mask[i, len(cont) - n : len(cont)] = 1.0
    return logps, mask


def prompts_shareable(model: CausalLM, pairs: Sequence[tuple[list[int], list[int]]], max_context: int) -> bool:
    """Whether ``shared_prompt_logprobs`` applies: a prompt repeats or the prompts share a
    prefix (``shared_prompt_cache``), no row is cut to the context, and the model is a plain
    (unsharded) decoder whose cache can carry gradients (no recomputed layers, which run
    without a cache, and no logit post-processing)."""
    if _sharing([p for p, _ in pairs]) is None:
        return False
    if any(len(p) + len(c) > max_context for p, c in pairs):
        return False
    if _post_processes_logits(model) or not hasattr(model, "get_decoder"):
        return False
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return False  # transformers turns the cache off in recomputed layers
    if torch.distributed.is_available():  # FSDP2's sharded parameters run only in the model's own forward
        from torch.distributed.tensor import DTensor

        return not isinstance(next(model.parameters()), DTensor)
    return True


def shared_prompt_logprobs(
    model: CausalLM, pairs: Sequence[tuple[list[int], list[int]]], *, pad_id: int, chunk_logits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` with each distinct prompt encoded once, and the prefixes prompts share
    once where that pays (``shared_prompt_cache``): the KV cache (all but each prompt's last token, with
    gradients when they are on) is copied to every pair that asks for it, and each pair runs
    only its prompt's last token and its continuation on that cache.

    A preference pair's chosen and rejected answers share their prompt, as do a GRPO group's
    answers, and the prompt is most of each row (the CPU demo: a rewrite of a few hundred tokens,
    answers of 24), so encoding it once per pair rather than once per row removes most of an
    update's forward and backward work. The values are the one-forward path's up to float
    summation order (tests/test_update_prompt_sharing.py)."""
    device = next(model.parameters()).device
    prompts = [p for p, _ in pairs]
    # an index copy, as in sampling: the rows' gradients flow back to the one encoded prompt
    shared = shared_prompt_cache(model, prompts, pad_id)
    assert shared is not None  # prompts_shareable: a prompt repeats or they share a prefix; each has 2+ tokens
    cache, prefix_mask = shared.cache, shared.mask
    # each row: its prompt's last token, then its continuation (right-padded)
    segments, segment_mask = (t.to(device) for t in pad_rows([[p[-1], *c] for p, c in pairs], pad_id, left=False))
    width = segments.shape[1]
    starts = torch.tensor([len(p) - 1 for p, _ in pairs], device=device)  # position of each prompt's last token
    wanted = torch.zeros((len(pairs), width - 1), dtype=torch.bool)
    for i, (_, c) in enumerate(pairs):
        wanted[i, : len(c)] = True
    head = model.get_output_embeddings()
    model.set_output_embeddings(TargetLogprobs(head, segments[:, 1:], wanted.to(device), chunk_logits))
    try:
        scored = model(
            input_ids=segments,
            attention_mask=torch.cat([prefix_mask, segment_mask], dim=-1),
            position_ids=starts.unsqueeze(-1) + torch.arange(width, device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=width,
        ).logits
    finally:
        model.set_output_embeddings(head)
    longest = max(1, max(len(c) for _, c in pairs))
    logps, mask = scored.new_zeros((len(pairs), longest)), scored.new_zeros((len(pairs), longest))
    for i, (_, c) in enumerate(pairs):
        logps[i, : len(c)] = scored[i, : len(c)]
        mask[i, : len(c)] = 1.0
    return logps, mask


class TargetLogprobs(torch.nn.Module):
    """Stands in for a causal LM's output head for one forward: instead of logits it returns
    the float32 log-prob of each wanted target token, [batch, positions - 1] (0 elsewhere).

    The wanted positions are projected a chunk at a time; with gradients, each chunk runs under
    activation checkpointing, so its logits are recomputed in backward rather than kept: the
    peak is one chunk's logits, not [positions x vocabulary]. Values are today's full-logits
    ones up to float rounding (the same head, the same float32 log-softmax)."""

    def __init__(self, head: torch.nn.Module, targets: torch.Tensor, wanted: torch.Tensor, chunk_logits: int) -> None:
        super().__init__()
        self.head = head
        self.targets, self.wanted = targets, wanted
        vocabulary = int(head.weight.shape[0])  # type: ignore[index]
        self.positions = max(1, chunk_logits // vocabulary)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        picked, targets = hidden[:, :-1][self.wanted], self.targets[self.wanted]
        parts = []
        for start in range(0, len(picked), self.positions):
            part = (picked[start : start + self.positions], targets[start : start + self.positions])
            if torch.is_grad_enabled():
                parts.append(checkpoint(self._logprobs, *part, use_reentrant=False))
            else:
                parts.append(self._logprobs(*part))
        out = torch.zeros(self.wanted.shape, dtype=torch.float32, device=hidden.device)
        return out.masked_scatter(self.wanted, torch.cat(parts)) if parts else out

    def _logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float()
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def _post_processes_logits(model: CausalLM) -> bool:
    """Models whose forward changes the head's output (Gemma-2's soft-capping, Cohere's scale):
    the stand-in head's log-probs would be changed too."""
    config = getattr(model, "config", None)
    return any(getattr(config, key, None) not in (None, 1.0) for key in ("final_logit_softcapping", "logit_scale"))


# ----------------------------------------------------------------------------- geometric mixtures (Nash-MD)

# Enters the context in which one policy runs its forwards, yielding the module: a plain model
# (``fixed(model)``), or one adapter of a PEFT model switched on (a player's ``active(which)``),
# so a learner and its reference can be two adapters, or adapter on / off, of one shared base.
PolicyForward = Callable[[], contextlib.AbstractContextManager["CausalLM"]]


def fixed(model: CausalLM) -> PolicyForward:
    """A model that runs as it is."""
    return lambda: contextlib.nullcontext(model)


def mixture_logprobs(learner_logits: torch.Tensor, reference_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """log π_mix(·) ∝ (1 − β)·log π_θ(·) + β·log π_ref(·) over the last (vocabulary) axis,
    renormalised: the geometric mixture of Nash-MD (Munos et al. 2023, π^β_t ∝ π_t^(1−β) μ^β).
    β = 0 is the learner itself, β = 1 the reference."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"the mixture coefficient beta must lie in [0, 1], got {beta}")
    learner, reference = learner_logits.float().log_softmax(-1), reference_logits.float().log_softmax(-1)
    return ((1.0 - beta) * learner + beta * reference).log_softmax(-1)


NUCLEUS_CANDIDATES = 256  # most likely tokens searched for each row's nucleus before a whole sort


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Each row's top-p nucleus as a mask over ``probs`` [batch, vocab]: the most likely tokens,
    each kept while the mass of the tokens ranked before it is at most ``top_p``.

    The ranking is ``topk`` of the ``NUCLEUS_CANDIDATES`` most likely tokens; a row whose
    candidates hold no more than ``top_p`` of its mass is ranked by a whole sort instead. A
    whole sort of every row cost 11 times an untruncated draw at 128 rows x 49,152 tokens (279
    against 24 ms a decode step; the candidates 48 ms: benchmarks/sampling.py); the candidates'
    prefix sums are the whole sort's first ones, so the nucleus is the same
    (tests/test_mixture_sampling.py)."""
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    top, order = probs.topk(k, dim=-1)  # descending
    kept = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, top.cumsum(-1) - top <= top_p)
    short = top.sum(-1) <= top_p  # the nucleus may reach past the candidates: rank the whole row
    if bool(short.any()):
        ranked, ranking = probs[short].sort(-1, descending=True)
        kept[short] = torch.zeros_like(ranked, dtype=torch.bool).scatter(
            -1, ranking, ranked.cumsum(-1) - ranked <= top_p
        )
    return kept


def sample_token(logprobs: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row of ``logprobs`` [batch, vocab]: greedy at temperature 0, else from the
    temperature-scaled distribution cut to its top-p nucleus (the most likely token always kept).

    Drawn by inverting each row's cumulative distribution at one uniform number (summed in
    float64: no rounding of a 49,152-term sum moves a token's share): ``torch.multinomial`` draws an exponential
    number per vocabulary entry, 6.3M per step of a 128-row batch over 49,152 tokens, which took
    a seventh of a CPU rollout. Same distribution, another random stream."""
    if temperature == 0:
        return logprobs.argmax(-1)
    probs = (logprobs if temperature == 1.0 else logprobs / temperature).softmax(-1)
    if top_p < 1.0:
        probs = probs.masked_fill(~nucleus(probs, top_p), 0.0)
    cumulative = probs.double().cumsum(-1)
    drawn = torch.rand((len(probs), 1), dtype=torch.float64, device=probs.device) * cumulative[:, -1:]
    # the first token whose cumulative mass exceeds the draw: never one of mass zero
    return torch.searchsorted(cumulative, drawn, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def decode(
    policies: Sequence[PolicyForward],
    next_logprobs: Callable[[list[torch.Tensor]], torch.Tensor],
    prompts: list[list[int]],
    tokenizer: Tokenizer,
    *,
    stop_ids: set[int],
    max_tokens: int,
    temperature: float,
    top_p: float,
    share_prompts: bool = True,
    gqa_in_kernel: bool = True,
) -> list[Generation]:
    """Up to ``max_tokens`` tokens after each prompt, each drawn (``sample_token``) from the
    distribution ``next_logprobs`` makes of the policies' next-token logits (one policy: its own
    log-softmax; Nash-MD: the geometric mixture of two), as generations cut at their stop token,
    with their log-probs under that distribution before temperature and top-p.

    The prompts are left-padded into one batch; a prompt that several rows share is encoded once
    per policy (``shared_prompt_cache``). Written by hand, not with transformers' ``generate()``:
    a mixture runs two models in step, one cached forward each per token, which no logits
    processor can; the sampled token's log-prob is read as it is drawn, where ``generate()``
    returns every step's full logits (24 x 128 x 49,152 floats for one batch of the CPU demo's
    defender) to be normalised afterwards; and a row that has stopped leaves the batch, its
    cache rows dropped, where ``generate()`` computes it to the end."""
    with policies[0]() as first:
        device = next(first.parameters()).device
    pad_id = tokenizer.pad_token_id
    ids, mask = (t.to(device) for t in pad_rows(prompts, pad_id, left=True))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    attention = gqa_attention if gqa_in_kernel else (lambda _model: contextlib.nullcontext())
    caches: list[Cache | None] = [None] * len(policies)
    if share_prompts:
        shared = []
        for policy in policies:
            with policy() as model, attention(model):
                shared.append(shared_prompt_cache(model, prompts, pad_id))
        if shared[0] is not None:  # all or none: the same prompts, so the same layout and mask
            caches = [s.cache if s is not None else None for s in shared]
            ids, positions, mask = ids[:, -1:], positions[:, -1:], torch.cat([shared[0].mask, mask[:, -1:]], dim=-1)
    stops = torch.tensor(sorted(stop_ids), device=device)
    n = len(prompts)
    tokens = torch.full((n, max_tokens), pad_id, dtype=torch.long)
    logprobs = torch.zeros((n, max_tokens))
    lengths = torch.zeros(n, dtype=torch.long)
    alive = torch.arange(n)  # the prompt each row of the running batch answers
    done = torch.zeros(n, dtype=torch.bool, device=device)  # per running row: its stop token drawn
    selectable = True  # every cache can drop rows (DynamicCache can; checked once they exist)
    for t in range(max_tokens):
        logits = []
        for k, policy in enumerate(policies):
            with policy() as model, attention(model):
                step = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=caches[k],
                    use_cache=True,
                    logits_to_keep=1,
                )
            caches[k] = step.past_key_values
            logits.append(step.logits[:, -1])
        dist = next_logprobs(logits)
        token = sample_token(dist, temperature, top_p)
        writing = alive[~done.cpu()]  # a stopped row that could not leave the batch is not written
        tokens[writing, t] = token[~done].cpu()
        logprobs[writing, t] = dist[~done].gather(-1, token[~done].unsqueeze(-1)).squeeze(-1).float().cpu()
        lengths[writing] = t + 1
        done |= torch.isin(token, stops)
        if bool(done.all()):
            break
        ids, positions = token.unsqueeze(-1), positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=-1)
        selectable = selectable and all(hasattr(c, "batch_select_indices") for c in caches)
        if bool(done.any()) and selectable:
            keep = (~done).nonzero().squeeze(-1)
            alive, done, ids, positions, mask = alive[keep.cpu()], done[keep], ids[keep], positions[keep], mask[keep]
            for cache in caches:
                cache.batch_select_indices(keep)  # type: ignore[union-attr]  # checked just above
    return [
        finished_generation(tokenizer, stop_ids, tokens[i, : lengths[i]].tolist(), logprobs[i, : lengths[i]].tolist())
        for i in range(n)
    ]


class MixtureBackend:
    """``generate()`` of the generation protocol, sampling every token from the geometric
    mixture π_mix(y_t | x, y<t) ∝ π_θ(y_t | x, y<t)^(1−β) · π_ref(y_t | x, y<t)^β.

    Two forwards per token, one per policy, each with its own KV cache; the recorded
    per-token log-probs are log π_mix of the sampled tokens, before temperature and top-p (as
    ``HFBackend`` records the model's own). Written by hand: ``generate()`` runs one model, and
    a logits processor cannot run a second model's cached forward in step with it.

    Only an in-process backend can do this: vLLM's engine and OpenAI-compatible servers sample
    from one model's logits per request and accept no per-token combination with a second
    model (see ``mixture_backend``).
    """

    def __init__(
        self,
        learner: PolicyForward,
        reference: PolicyForward,
        tokenizer: Tokenizer,
        *,
        beta: float,
        batch_size: int = BATCH_SIZE,
        max_context: int = 2048,
        share_prompts: bool = True,
    ) -> None:
        mixture_logprobs(torch.zeros(1), torch.zeros(1), beta)  # checks beta
        self.learner, self.reference, self.tokenizer = learner, reference, tokenizer
        self.beta, self.batch_size, self.max_context = beta, batch_size, max_context
        self.share_prompts = share_prompts  # as HFBackend's: a repeated prompt encoded once per policy
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        with learner() as model:
            self.stop_ids = stop_token_ids(model, tokenizer)
            self.device = next(model.parameters()).device

    @torch.no_grad()
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
        if adapter is not None:
            raise ValueError("a MixtureBackend's two policies choose their adapters themselves; pass adapter=None")
        check_sampling(max_tokens, temperature, top_p)
        prompts = prompt_ids(self.tokenizer, chats, self.max_context, max_tokens)
        if seed is not None:
            torch.manual_seed(seed)
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._generate_batch(prompts[start : start + self.batch_size], max_tokens, temperature, top_p)
        return out

    def _generate_batch(
        self, prompts: list[list[int]], max_tokens: int, temperature: float, top_p: float
    ) -> list[Generation]:
        def next_logprobs(logits: list[torch.Tensor]) -> torch.Tensor:
            if logits[0].shape != logits[1].shape:
                raise ValueError(
                    f"the learner's vocabulary has {logits[0].shape[-1]} tokens but the reference's "
                    f"{logits[1].shape[-1]}: a geometric mixture needs two policies over one vocabulary"
                )
            return mixture_logprobs(logits[0], logits[1], self.beta)

        return decode(
            [self.learner, self.reference],
            next_logprobs,
            prompts,
            self.tokenizer,
            stop_ids=self.stop_ids,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            share_prompts=self.share_prompts,
        )


def check_mixable(backend: object, name: str) -> HFBackend:
    """``backend`` if it can take part in a geometric mixture (an in-process HF backend), else a
    TypeError that says why not: vLLM and OpenAI-compatible servers sample each request from
    one model's logits, so they cannot mix two policies per token."""
    if not isinstance(backend, HFBackend):
        raise TypeError(
            f"geometric-mixture sampling needs in-process HF backends, but the {name} is a "
            f"{type(backend).__name__}: vLLM and OpenAI-compatible servers sample from one model's "
            "logits per request and cannot mix two policies per token; use rollout.backend: hf"
        )
    return backend


def mixture_backend(learner: object, reference: object, *, beta: float) -> MixtureBackend:
    """The geometric mixture of two in-process HF backends (same tokenizer, or at least the
    same vocabulary); any other backend is refused with the reason (``check_mixable``)."""
    learner, reference = check_mixable(learner, "learner"), check_mixable(reference, "reference")
    return MixtureBackend(
        fixed(learner.model),
        fixed(reference.model),
        learner.tokenizer,
        beta=beta,
        batch_size=learner.batch_size,
        max_context=min(learner.max_context, reference.max_context),
    )
