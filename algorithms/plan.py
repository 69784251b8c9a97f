"""``advgame plan``: the bytes one learner GPU (and each rollout / judge GPU) needs for a run config.

    advgame plan --config configs/paper/qwen25_dpo_md.yaml --gpus 8 --gpu-memory 80 --rollout-gpus 2 --judge-gpus 2

Arithmetic only: nothing is loaded but the config and the models' ``config.json`` (or, for the
paper configs' hub models, their published shapes below, so the plan runs offline). The terms
follow what the trainer does (``algorithms.training``), not a generic recipe:

* weights are float32: ``agents.load_model`` loads every player in float32, and bf16 compute
  (``model.precision: bf16``) keeps them as the master copy: under ``parallel.sharding: fsdp2``
  through FSDP2's MixedPrecisionPolicy (each unit gathered as a bf16 copy for its own forward
  and backward, gradients reduced in float32), otherwise through autocast;
* AdamW (``torch.optim.AdamW``) keeps two float32 moments per trained parameter; gradients are float32;
* each player keeps the copies its algorithm names (``Algorithm.copies()``: ``ema`` for the MD
  recipes, ``initial`` for on-policy and GRPO references), full float32 models under full
  fine-tuning (``players.FullPlayer``), an extra adapter (EMA) or nothing (initial: the base with
  adapters off) under LoRA (``players.LoraPlayer``, one frozen base for both players);
* ``parallel.sharding: fsdp2`` (or ``--sharding``) divides weights, copies, gradients and AdamW
  state by the learner processes (FSDP2 ``fully_shard``); a LoRA run's one shared model (base
  and adapters) is sharded alike; unsharded over several learner processes, torch's DDP keeps
  its reduction buckets, one more float32 copy of the trained gradients;
* autocast (unsharded players only) caches the bf16 cast of every trained weight it meets within
  one ``autocast`` region (torch caches casts of leaf tensors that require grad), and the trainer
  opens one region per micro-batch: a bf16 copy of the learner's weights lives through each
  forward + backward. FSDP2's MixedPrecisionPolicy keeps no such cache.

Activations (per learner process, not divided by sharding): a Llama/Qwen decoder layer under
SDPA attention saves about ``9h + 2·kv + 4·I`` values per token for its backward (two RMSNorms
3h each: input, normalised input, output; q and k/v as SDPA saves them plus its output h; the
o_proj input h; SwiGLU gate, up, SiLU(gate) and their product, I each), counted the way
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
arXiv 2205.05198, §4.1) count a GPT layer's 34·s·b·h bytes, without the attention scores that
SDPA/flash attention never stores. With activation checkpointing only each layer's input (h
per token) is kept, plus one layer's full set while it is recomputed. The vocabulary logits
come on top: ``agents.hf.token_logprobs`` projects only the scored positions, one chunk of
``CHUNK_LOGITS`` logit elements at a time (recomputed in the backward), so one chunk's logits,
their float32 copy for log-softmax and their gradient live at once, never all positions'. A DPO example is a (chosen, rejected) pair: two
sequences per example in one forward; other algorithms score one sequence per example. The
update's working memory is the largest of: activations + logits, the AdamW step's float32
temporary (one player's local parameters), and the HF rollout's KV cache when the players
generate on the learner GPU: these phases do not overlap. The state terms assume the steady
state of a run (every AdamW moment exists, gradients accumulate over micro-batches).

All figures are estimates, checked against measured peak memory by ``benchmarks/plan_check.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

if TYPE_CHECKING:
    from algorithms.config import TrainConfig

GIB = 2**30
Sharding = Literal["none", "fsdp2"]

# Headroom on each GPU: the share of memory a plan may fill. The rest goes to the CUDA context,
# NCCL buffers and allocator fragmentation; 0.9 is also vLLM's default gpu_memory_utilization.
USABLE = 0.9
# Template and seed tokens around a player's own text in a training sequence (chat template,
# task instructions, the seed request); the config's token budgets give the rest.
PROMPT_TOKENS = 256
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # agents.roles


# ----------------------------------------------------------------------------- model shapes


@dataclass(frozen=True)
class Shape:
    """A decoder-only Llama/Qwen/Mistral-style model's architecture figures (its config.json)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool  # input embedding and LM head share one matrix
    attention_bias: bool = False  # Qwen2: biases on q, k, v
    head_dim: int | None = None  # None: hidden / heads

    @property
    def head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head

    @property
    def q_dim(self) -> int:
        return self.heads * self.head

    def layer_params(self) -> int:
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        attention = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.attention_bias else 0)
        return attention + 3 * h * i + 2 * h  # + gate/up/down, + the two RMSNorm weights

    def embedding_params(self) -> int:
        """Input embedding, LM head (when untied) and the final norm: FSDP's root group."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def params(self) -> int:
        return self.layers * self.layer_params() + self.embedding_params()

    def lora_params(self, rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
        """Parameters of one LoRA adapter (A: r x in, B: out x r on each target of each layer)."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        sizes = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        return self.layers * sum(rank * (sizes[t][0] + sizes[t][1]) for t in targets)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return self.layers * 2 * self.kv_dim * dtype_bytes


# The paper configs' models, from each model's config.json on the Hugging Face hub (hidden_size,
# num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size, vocab_size,
# tie_word_embeddings; Qwen2 adds q/k/v biases), kept as data so ``plan`` runs offline. An
# abliterated model is its base with directions removed from the weights: same architecture.
_QWEN25_7B = Shape(3584, 28, 28, 4, 18944, 152064, tied=False, attention_bias=True)
_QWEN25_32B = Shape(5120, 64, 40, 8, 27648, 152064, tied=False, attention_bias=True)
_LLAMA31_8B = Shape(4096, 32, 32, 8, 14336, 128256, tied=False)
_LLAMA33_70B = Shape(8192, 80, 64, 8, 28672, 128256, tied=False)
_MISTRAL_7B_V03 = Shape(4096, 32, 32, 8, 14336, 32768, tied=False)  # allenai/wildguard's base
PUBLISHED: dict[str, Shape] = {
    "Qwen/Qwen2.5-7B-Instruct": _QWEN25_7B,
    "Qwen/Qwen2.5-32B-Instruct": _QWEN25_32B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "mlabonne/Meta-Llama-3.1-8B-Instruct-abliterated": _LLAMA31_8B,
    "meta-llama/Llama-3.3-70B-Instruct": _LLAMA33_70B,
    "huihui-ai/Llama-3.3-70B-Instruct-abliterated": _LLAMA33_70B,
    "allenai/wildguard": _MISTRAL_7B_V03,
}


def shape_from_config(config: Mapping[str, Any]) -> Shape:
    """The shape of a transformers ``config.json`` mapping (Llama, Qwen2, Mistral keys)."""
    try:
        return Shape(
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            kv_heads=int(config.get("num_key_value_heads") or config["num_attention_heads"]),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            # Qwen2's config.json does not say it has q/k/v biases: its architecture always does
            attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            head_dim=config.get("head_dim"),
        )
    except KeyError as error:
        raise ValueError(
            f"config.json lacks {error.args[0]!r}: plan reads decoder-only Llama/Qwen/Mistral shapes"
        ) from None


def model_shape(name: str) -> Shape:
    """The shape of a bundled name, a local model folder (its config.json; an adapter folder: its
    base's) or one of the ``PUBLISHED`` hub ids. Offline: a hub id not listed is an error."""
    if name in PUBLISHED:
        return PUBLISHED[name]
    from agents.models import ADAPTER_CONFIG, resolve_model

    try:
        path = Path(resolve_model(name))
    except FileNotFoundError:  # the message below says what plan can read instead
        path = Path(name)
    adapter = path / ADAPTER_CONFIG
    if adapter.is_file():
        return model_shape(json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"])
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"plan needs the shape of {name!r}, but it is neither a local model folder with a config.json nor "
            f"one of the models whose shapes plan knows offline ({', '.join(sorted(PUBLISHED))}); pass a "
            "folder holding the model's config.json as model.name"
        )
    return shape_from_config(json.loads(config.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- what a run holds


@dataclass(frozen=True)
class Setup:
    """Everything the arithmetic reads: a config's settings and the layout's flags."""

    shape: Shape
    players: int  # models trained or played (1 when one policy plays both roles)
    trained: int  # of them, the ones with an optimizer
    copies: tuple[str, ...]  # each player's copies besides the learner ("ema", "initial")
    lora: bool
    lora_rank: int
    learners: int  # learner processes (one per learner GPU)
    sharding: Sharding
    checkpointing: bool
    bf16: bool  # autocast to bf16 in updates (precision bf16, or auto on a GPU)
    micro_batch: int  # examples per forward
    sequences_per_example: int  # 2 for DPO/IPO pairs
    seq_len: int  # tokens of one training sequence
    completion_len: int  # of them, scored (logits kept)
    rollout: str  # rollout.backend
    rollout_gpus: int  # GPUs of vLLM replicas of their own (0: rollouts on the learner GPUs)
    rollout_batch: int  # rollout.batch_size (HF generate)
    max_model_len: int
    judge_shape: Shape | None  # an LLM judge's model (None: the rule judge)
    judge_where: Literal["none", "learner", "gpus", "elsewhere"]
    judge_gpus: int
    judge_context: int  # tokens of one judge call (prompt with the players' texts + its answer)
    gpu_memory: float  # bytes per GPU
    engine_bytes: int = 2  # bytes per weight of an in-process vLLM engine (rollout.engine_dtype)
    on_gpu: bool = True  # False: the CPU check (benchmarks/plan_check.py), usable memory is all of it


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float
    note: str


@dataclass
class Plan:
    setup: Setup
    learner: list[Term]  # per learner GPU
    rollout: list[Term]  # per rollout GPU (empty when colocated or HF)
    judge: list[Term]  # per judge GPU (empty when none)
    facts: dict[str, int] = field(default_factory=dict)  # tp, replicas, KV tokens, sequences that fit
    advice: list[str] = field(default_factory=list)
    placement: list[str] = field(default_factory=list)

    @property
    def learner_total(self) -> float:
        return sum(t.bytes for t in self.learner)

    @property
    def usable(self) -> float:
        return self.setup.gpu_memory * (USABLE if self.setup.on_gpu else 1.0)

    @property
    def fits(self) -> bool:
        return self.learner_total <= self.usable and all(
            self.facts.get(k, True) for k in ("rollout_fits", "judge_fits")
        )

    def to_json(self) -> dict[str, object]:
        terms = lambda ts: {t.name: {"gib": t.bytes / GIB, "note": t.note} for t in ts}  # noqa: E731
        setup = dataclasses.asdict(self.setup)
        return {
            "setup": setup,
            "learner_gpu": terms(self.learner),
            "learner_total_gib": self.learner_total / GIB,
            "usable_gib": self.usable / GIB,
            "fits": self.fits,
            "rollout_gpu": terms(self.rollout),
            "judge_gpu": terms(self.judge),
            "facts": self.facts,
            "advice": self.advice,
            "placement": self.placement,
        }


def _dtype(width: int) -> str:
    return "bf16" if width == 2 else "float32"


def _chunk_positions(s: Setup) -> int:
    """Scored positions projected onto the vocabulary at once (agents.hf.token_logprobs)."""
    from agents.hf import CHUNK_LOGITS

    return min(s.micro_batch * s.sequences_per_example * s.completion_len, max(1, CHUNK_LOGITS // s.shape.vocab))


def _working(s: Setup) -> tuple[float, float, float]:
    """(activations, logits, HF generation) bytes of one learner process: the update's working
    memory and, when the players generate on the learner GPU with HF, the KV cache of a batch."""
    h = s.shape
    per_token = 9 * h.hidden + 2 * h.kv_dim + 4 * h.intermediate  # saved values per token and layer
    width = 2 if s.bf16 else 4
    sequences = s.micro_batch * s.sequences_per_example
    tokens = sequences * s.seq_len
    # the residual stream between layers: float32 under autocast (float32 weights), bf16 under
    # FSDP2's MixedPrecisionPolicy (every unit computes in bf16)
    residual = 2 if s.bf16 and s.sharding == "fsdp2" else 4
    if s.checkpointing:
        activations = (h.layers * h.hidden * residual + per_token * width) * tokens  # layer inputs
    else:
        activations = h.layers * per_token * width * tokens
    # one chunk of scored positions' logits (bf16 under bf16 compute, float32 otherwise), the
    # float32 copy log-softmax reads, and their gradient in the backward (agents.hf.TargetLogprobs)
    logits = _chunk_positions(s) * h.vocab * (width + (4 if s.bf16 else 0) + 4)
    generation = 0.0
    if s.rollout == "hf" and s.rollout_gpus == 0:
        generation = s.rollout_batch * s.seq_len * h.kv_bytes_per_token(width) + s.rollout_batch * h.vocab * 4 * 2
    return float(activations), float(logits), generation


def learner_terms(s: Setup) -> list[Term]:
    """The bytes one learner GPU holds, term by term."""
    h, n = s.shape, s.shape.params()
    shards = s.learners if s.sharding == "fsdp2" else 1
    split = f" / {shards} shards" if shards > 1 else ""
    terms: list[Term] = []
    if s.lora:
        adapter = h.lora_params(s.lora_rank)
        adapters = s.players * (1 + ("ema" in s.copies)) * adapter
        # the shared model (base and adapters) is sharded as one module (players.build_players)
        terms += [
            Term("weights", n * 4 / shards, f"one frozen float32 base shared by both players{split}"),
            Term(
                "adapters",
                adapters * 4 / shards,
                f"{s.players} player(s) x {1 + ('ema' in s.copies)} adapter(s), float32{split}",
            ),
            Term("gradients", s.trained * adapter * 4 / shards, f"float32, trained adapters{split}"),
            Term(
                "optimizer",
                s.trained * adapter * 8 / shards,
                f"AdamW: 2 float32 moments per trained adapter parameter{split}",
            ),
        ]
    else:
        copies = [c for c in s.copies if c in ("ema", "initial")]
        terms += [
            Term("weights", s.players * n * 4 / shards, f"{s.players} learner(s), float32{split}"),
            Term("copies", s.players * len(copies) * n * 4 / shards, f"{'+'.join(copies) or 'none'} per player{split}"),
            Term("gradients", s.trained * n * 4 / shards, f"float32{split}"),
            Term("optimizer", s.trained * n * 8 / shards, f"AdamW: 2 float32 moments{split}"),
        ]
        if s.bf16 and s.sharding == "none":
            terms.append(Term("autocast cache", n * 2, "bf16 casts of the trained weights, kept per micro-batch"))
        if shards > 1:
            # one group unsharded while it runs and the next prefetched (FSDP2's default), the
            # largest group being the root (embeddings, LM head); gathered as the compute dtype
            biggest = max(h.layer_params(), h.embedding_params())
            gathered = 2 if s.bf16 else 4
            terms.append(
                Term("fsdp gather", 2 * biggest * gathered, f"two all-gathered parameter groups, {_dtype(gathered)}")
            )
    if s.sharding == "none" and s.learners > 1 and s.trained:
        # torch's DDP (distributed.Replica) reduces in buckets of its own: a float32 copy of the
        # trained gradients, kept for the run (gradients are not views of them: AdamW must see
        # None, not zeros, for a learner that skips a step)
        trained = s.trained * (h.lora_params(s.lora_rank) if s.lora else n)
        terms.append(Term("ddp buckets", trained * 4, "torch DDP's reduction buckets, float32 gradients"))
    activations, logits, generation = _working(s)
    update = activations + logits
    # AdamW's foreach step makes one float32 temporary the size of the player's (local) trained
    # parameters (the square root of the second moment), after the backward has freed the activations
    stepping = (h.lora_params(s.lora_rank) if s.lora else n / shards) * 4 if s.trained else 0.0
    tokens = f"{s.micro_batch * s.sequences_per_example} x {s.seq_len} tokens"
    kind = "checkpointed" if s.checkpointing else "all layers kept"
    if generation > max(update, stepping):
        terms.append(Term("generation", generation, f"HF KV cache, {s.rollout_batch} x {s.seq_len} tokens"))
    elif stepping > update:
        terms.append(Term("optimizer step", stepping, "AdamW's float32 temporary of one player's parameters"))
    else:
        terms += [
            Term("activations", activations, f"{tokens}, {kind}"),
            Term(
                "logits",
                logits,
                f"{_chunk_positions(s)} positions at a time of {s.micro_batch * s.sequences_per_example} x "
                f"{s.completion_len} scored",
            ),
        ]
    if s.rollout != "hf" and s.rollout_gpus == 0:
        # the rollout engine on the learner GPU: the in-process engine in rollout.engine_dtype
        # (trainer.engine_dtype: bf16 on a GPU that has it); a colocated server serves bf16
        width = s.engine_bytes if s.rollout == "vllm" else 2
        engines = 1 if s.lora else s.players
        terms.append(Term("vllm weights", engines * n * width, f"{engines} colocated engine(s), {width}-byte weights"))
    if s.judge_where == "learner" and s.judge_shape is not None:
        terms.append(Term("judge weights", s.judge_shape.params() * 4, "in-process LLM judge, float32"))
    return terms


def _tp(weight_bytes: float, memory: float, most: int) -> int:
    """The smallest power-of-two tensor parallelism whose weight share leaves half the GPU to the KV cache."""
    tp = 1
    while weight_bytes / tp > 0.5 * memory and tp * 2 <= max(most, 1):
        tp *= 2
    return tp


def _serving(shape: Shape, gpus: int, memory: float, models: int) -> tuple[list[Term], dict[str, int]]:
    """Per-GPU terms of vLLM replicas of ``models`` bf16 models on ``gpus`` GPUs."""
    weights = shape.params() * 2.0
    tp = _tp(weights, memory, gpus // max(models, 1))
    replicas = gpus // tp
    kv = max(memory * USABLE - weights / tp, 0.0)
    kv_tokens = int(kv * tp / shape.kv_bytes_per_token(2))
    terms = [
        Term("weights", weights / tp, f"bf16, tensor-parallel {tp}"),
        Term("kv cache", kv, f"gpu_memory_utilization {USABLE}: {kv_tokens} tokens per replica"),
    ]
    return terms, {"tp": tp, "replicas": replicas, "kv_tokens_per_replica": kv_tokens}


def make_plan(s: Setup) -> Plan:
    plan = Plan(s, learner_terms(s), [], [])
    if s.rollout_gpus:
        models = 1 if s.lora else s.players
        plan.rollout, facts = _serving(s.shape, s.rollout_gpus, s.gpu_memory, models)
        plan.facts |= {f"rollout_{k}": v for k, v in facts.items()}
        plan.facts["rollout_sequences"] = facts["kv_tokens_per_replica"] // s.max_model_len
        plan.facts["rollout_fits"] = facts["replicas"] >= models and facts["kv_tokens_per_replica"] >= s.max_model_len
    elif s.rollout != "hf":
        free = plan.usable - plan.learner_total
        kv_tokens = int(max(free, 0) / s.shape.kv_bytes_per_token(2))
        plan.learner.append(Term("kv cache", max(free, 0.0), f"colocated vLLM: what is left, {kv_tokens} tokens"))
        plan.facts |= {"rollout_kv_tokens": kv_tokens, "rollout_fits": kv_tokens >= s.max_model_len}
    if s.judge_where == "gpus" and s.judge_shape is not None:
        plan.judge, facts = _serving(s.judge_shape, s.judge_gpus, s.gpu_memory, 1)
        plan.facts |= {f"judge_{k}": v for k, v in facts.items()}
        # a replica must hold at least one judge prompt (the players' texts) and its verdict
        plan.facts["judge_fits"] = facts["kv_tokens_per_replica"] >= s.judge_context
    plan.advice = advise(plan)
    return plan


class SetupChange(TypedDict, total=False):
    """The settings ``advise`` tries in place of a setup's own."""

    sharding: Sharding
    checkpointing: bool
    micro_batch: int
    learners: int
    lora: bool


def _total(s: Setup, **change: Unpack[SetupChange]) -> float:
    return sum(t.bytes for t in learner_terms(dataclasses.replace(s, **change)))


def advise(plan: Plan) -> list[str]:
    """What to change when a plan does not fit, each with the learner GPU's total it gives."""
    s, usable, out = plan.setup, plan.usable, []
    if plan.fits:
        return []
    gib = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
    if plan.learner_total > usable:
        if s.sharding == "none" and s.learners > 1:
            out.append(f"parallel.sharding=fsdp2: {gib(_total(s, sharding='fsdp2'))} per learner GPU")
        if not s.checkpointing:
            out.append(f"model.gradient_checkpointing=true: {gib(_total(s, checkpointing=True))}")
        for m in range(s.micro_batch // 2, 0, -1):
            if _total(s, micro_batch=m) <= usable:
                out.append(f"optim.micro_batch_size={m}: {gib(_total(s, micro_batch=m))}")
                break
        if s.bf16 and not s.lora and s.sharding == "none":
            out.append(
                f"parallel.sharding=fsdp2 computes bf16 through FSDP2's MixedPrecisionPolicy (no autocast cast "
                f"cache): {gib(_total(s, sharding='fsdp2'))}"
            )
        together: SetupChange = {"sharding": "fsdp2", "checkpointing": True, "micro_batch": 1}
        if _total(s, **together) <= usable:
            out.append(f"fsdp2 + checkpointing + optim.micro_batch_size=1 together: {gib(_total(s, **together))}")
        if not s.lora:
            for w in range(s.learners + 1, 8 * max(s.learners, 8) + 1):
                if _total(s, learners=w, sharding="fsdp2") <= usable:
                    out.append(f"{w} learner GPUs with fsdp2: {gib(_total(s, learners=w, sharding='fsdp2'))}")
                    break
            out.append(f"model.lora=true: {gib(_total(s, lora=True))}")
            state = [t.bytes for t in plan.learner if t.name in ("weights", "copies", "gradients", "optimizer")]
            out.append(f"offload the sharded state to CPU memory (FSDP2 CPUOffloadPolicy): frees {gib(sum(state))}")
        if s.rollout != "hf" and s.rollout_gpus == 0:
            out.append("give the rollouts GPUs of their own (--rollout-gpus with rollout.backend vllm_server)")
        if s.judge_where == "learner":
            out.append("serve the judge on GPUs of its own (judge.backend openai, --judge-gpus)")
    if not plan.facts.get("rollout_fits", True):
        out.append(
            "the rollout engine has no room for one max_model_len sequence: more --rollout-gpus, or fewer learners"
        )
    if not plan.facts.get("judge_fits", True):
        out.append("the judge replicas have no room for one judge call: more --judge-gpus (higher tensor parallelism)")
    return out


# ----------------------------------------------------------------------------- from a config


def setup_of(
    cfg: TrainConfig,
    *,
    gpus: int,
    nodes: int = 1,
    gpu_memory_gib: float = 80.0,
    rollout_gpus: int = 0,
    judge_gpus: int = 0,
    sharding: str | None = None,
    checkpointing: bool | None = None,
    on_gpu: bool = True,
    shape_of: Callable[[str], Shape] = model_shape,
) -> Setup:
    """The plan's inputs from a loaded config and the layout: ``gpus`` per node on ``nodes`` nodes,
    ``rollout_gpus`` and ``judge_gpus`` of them for vLLM replicas, the rest learners."""
    from algorithms.training.algorithm import build_algorithm
    from algorithms.training.preference import PreferenceOptimization

    if gpus < 1 or nodes < 1:
        raise ValueError("--gpus and --nodes must be at least 1")
    learners = gpus * nodes - rollout_gpus - judge_gpus
    if learners < 1 or rollout_gpus < 0 or judge_gpus < 0:
        raise ValueError(
            f"{gpus * nodes} GPUs cannot hold {rollout_gpus} rollout and {judge_gpus} judge GPUs and a learner: "
            "lower --rollout-gpus / --judge-gpus or raise --gpus / --nodes"
        )
    chosen = sharding or cfg.parallel.sharding  # --sharding plans another setting than the config's
    if chosen not in ("none", "fsdp2"):
        raise ValueError(f"sharding {chosen!r}: plan knows none and fsdp2")
    algorithm = build_algorithm(cfg.algorithm, cfg.rollout.max_model_len)
    shared = algorithm.shares_policy
    roles = ("policy",) if shared else ("attacker", "defender")
    schedule = cfg.train.schedule
    trains = {
        "attacker": cfg.roles.attacker.train and schedule in ("both", "alternate", "attacker"),
        "defender": cfg.roles.defender.train and schedule in ("both", "alternate", "defender"),
    }
    trained = 1 if shared else sum(trains.values())
    r, attacker, defender = cfg.rollout, cfg.roles.attacker, cfg.roles.defender
    seq_len = min(r.max_model_len, PROMPT_TOKENS + attacker.max_tokens + defender.max_tokens)
    completion = min(seq_len, max(attacker.max_tokens, defender.max_tokens))
    judge = cfg.judge
    judge_where: Literal["none", "learner", "gpus", "elsewhere"] = "none"
    judge_shape = None
    if judge.kind != "rule":
        judge_shape = shape_of(judge.model)
        judge_where = "gpus" if judge_gpus else "elsewhere" if judge.backend == "openai" else "learner"
    if judge_gpus and judge.kind == "rule":
        raise ValueError("--judge-gpus: the config's judge is the model-free rule judge; it needs no GPU")
    return Setup(
        shape=shape_of(cfg.model.name),
        players=len(roles),
        trained=trained,
        copies=tuple(sorted(algorithm.copies())),
        lora=cfg.model.lora,
        lora_rank=cfg.model.lora_rank,
        learners=learners,
        sharding=chosen,  # type: ignore[arg-type]
        checkpointing=cfg.model.gradient_checkpointing if checkpointing is None else checkpointing,
        bf16=cfg.model.precision == "bf16" or (cfg.model.precision in ("auto", "native") and on_gpu),
        micro_batch=cfg.optim.micro_batch_size,
        sequences_per_example=2 if isinstance(algorithm, PreferenceOptimization) else 1,
        seq_len=seq_len,
        completion_len=completion,
        rollout=r.backend,
        rollout_gpus=rollout_gpus,
        rollout_batch=r.batch_size,
        max_model_len=r.max_model_len,
        judge_shape=judge_shape,
        judge_where=judge_where,
        judge_gpus=judge_gpus,
        judge_context=seq_len + judge.max_tokens,
        gpu_memory=gpu_memory_gib * GIB,
        engine_bytes={"float32": 4, "bfloat16": 2}.get(r.engine_dtype, 2 if on_gpu else 4),
        on_gpu=on_gpu,
    )


def placement(s: Setup, gpus: int, nodes: int, plan: Plan) -> list[str]:
    """Which GPUs run what, node by node: learners first, then rollout replicas, then judges."""
    jobs = ["learner"] * s.learners + ["rollout"] * s.rollout_gpus + ["judge"] * s.judge_gpus
    lines = []
    for node in range(nodes):
        mine = jobs[node * gpus : (node + 1) * gpus]
        runs = []
        start = 0
        for i in range(1, len(mine) + 1):
            if i == len(mine) or mine[i] != mine[start]:
                runs.append(f"GPUs {start}-{i - 1}: {mine[start]}" if i - 1 > start else f"GPU {start}: {mine[start]}")
                start = i
        lines.append(f"node {node}: " + "; ".join(runs))
    if s.rollout_gpus:
        tp, replicas = plan.facts["rollout_tp"], plan.facts["rollout_replicas"]
        lines.append(
            f"rollouts: {replicas} vllm serve replica(s) x TP {tp} (rollout.backend vllm_server, rollout.urls)"
        )
    elif s.rollout != "hf":
        lines.append("rollouts: vLLM colocated on the learner GPUs")
    else:
        lines.append("rollouts: HF generate on the learner GPUs")
    if s.judge_where == "gpus":
        tp, replicas = plan.facts["judge_tp"], plan.facts["judge_replicas"]
        lines.append(f"judge: {replicas} vllm serve replica(s) x TP {tp} (judge.urls)")
    elif s.judge_where == "elsewhere":
        lines.append("judge: served elsewhere (judge.url); not on these GPUs")
    elif s.judge_where == "learner":
        lines.append("judge: in-process on each learner GPU")
    return lines


class LayoutOptions(TypedDict, total=False):
    """``setup_of``'s optional keywords, as ``plan_config`` passes them on."""

    gpu_memory_gib: float
    rollout_gpus: int
    judge_gpus: int
    sharding: str | None
    checkpointing: bool | None
    on_gpu: bool
    shape_of: Callable[[str], Shape]


def plan_config(cfg: TrainConfig, *, gpus: int, nodes: int = 1, **options: Unpack[LayoutOptions]) -> Plan:
    setup = setup_of(cfg, gpus=gpus, nodes=nodes, **options)
    plan = make_plan(setup)
    plan.placement = placement(setup, gpus, nodes, plan)
    return plan


# ----------------------------------------------------------------------------- text


def _rows(terms: list[Term]) -> Iterator[str]:
    for t in terms:
        yield f"  {t.name:16s} {t.bytes / GIB:9.2f} GiB  {t.note}"


def render(plan: Plan, title: str = "") -> str:
    s = plan.setup
    head = (
        f"{title}: {s.shape.params() / 1e9:.2f}B parameters, {'LoRA r' + str(s.lora_rank) if s.lora else 'full'}, "
        f"{s.learners} learner GPU(s), sharding {s.sharding}, checkpointing {'on' if s.checkpointing else 'off'}, "
        f"{('bf16 (FSDP2 mixed precision)' if s.sharding == 'fsdp2' else 'bf16 autocast') if s.bf16 else 'float32'}"
    )
    lines = [head, "per learner GPU:", *_rows(plan.learner)]
    lines.append(
        f"  {'total':16s} {plan.learner_total / GIB:9.2f} GiB  of {plan.usable / GIB:.1f} usable "
        f"({USABLE:.0%} of {s.gpu_memory / GIB:g} GiB)"
        if s.on_gpu
        else f"  {'total':16s} {plan.learner_total / GIB:9.2f} GiB"
    )
    if plan.rollout:
        lines += [f"per rollout GPU ({plan.facts['rollout_replicas']} replica(s), TP {plan.facts['rollout_tp']}):"]
        lines += _rows(plan.rollout)
    if plan.judge:
        lines += [f"per judge GPU ({plan.facts['judge_replicas']} replica(s), TP {plan.facts['judge_tp']}):"]
        lines += _rows(plan.judge)
    lines += ["placement:", *(f"  {line}" for line in plan.placement)]
    lines.append(f"fits: {'yes' if plan.fits else 'NO'}")
    if plan.advice:
        lines += ["to fit, any of:", *(f"  - {a}" for a in plan.advice)]
    return "\n".join(lines)


def dumps(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=1, default=lambda o: math.nan)
