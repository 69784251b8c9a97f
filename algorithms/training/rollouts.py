"""The rollout engines the players sample from, and the play of a batch of rounds.

The players' policies sample either from the HF models themselves, from vLLM engines in this
process fed by weight pushes, or from ``vllm serve`` replicas fed through vLLM's weight-transfer
API (``Sampler``); ``play`` runs both phases of a batch of rounds, each one batched generation
and one judge call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch

from advgame_env import Game, JudgeError, Round, Seed
from advgame_env.conversation import ConversationGame, Dialogue
from advgame_env.roles import ATTACKER, ROLES
from agents.hf import HFBackend, SamplingCopy, native_bfloat16
from agents.models import resolve_model
from agents.policy import Policy
from algorithms.config import TrainConfig
from algorithms.training.conversations import play_dialogues
from algorithms.training.distributed import unsharded
from algorithms.training.per_role import PerRole
from algorithms.training.players import Player, Which
from algorithms.training.run_setup import start_model

if TYPE_CHECKING:
    from agents.handles import CausalLM
    from agents.vllm_backend import VLLMBackend
    from agents.vllm_server import Served, ServerFleet


def prefills(cfg: TrainConfig) -> PerRole[str]:
    """Each role's assistant prefill: the think opening for players with hidden reasoning
    (``rollout.think_prefill``, else the template set's: the paper's for Self-RedTeam's set)."""
    game, prefill = cfg.game, cfg.rollout.think_prefill or cfg.game.templates.prefill
    return PerRole(attacker=prefill if game.attacker_think else "", defender=prefill if game.defender_think else "")


def gathered(players: Iterable[Player]) -> contextlib.AbstractContextManager[None]:
    """Every sharded player's full weights for forwards outside an update (``Player.gathered``);
    a collective: every process enters together."""
    modules = [m for p in players if p.sharded for m in p.modules()]
    return unsharded(modules) if modules else contextlib.nullcontext()


class Sampler:
    """The players' rollout engine: the HF models themselves, vLLM engines in this process fed by
    weight pushes (``rollout.backend: vllm``, the colocated mode), or ``vllm serve`` replicas fed
    through vLLM's weight-transfer API (``vllm_server``, ``agents.vllm_server``)."""

    def __init__(
        self, cfg: TrainConfig, players: dict[str, Player], lora: bool, engine: VLLMBackend | None = None
    ) -> None:
        """``engine``: a running LoRA-enabled VLLMBackend of the base model to use instead of
        starting one (notebooks, tests); it then serves both players' adapters."""
        self.cfg, self.players, self.lora = cfg, players, lora
        self.low_precision = hf_sampling_dtype(cfg.rollout.hf_dtype, players) == "bfloat16"
        self.copies: dict[int, SamplingCopy] = {}  # by id of the module copied
        self.engines: dict[str, VLLMBackend] = {}
        self.fleets: dict[str, ServerFleet] = {}
        if cfg.rollout.backend == "vllm":
            from agents.vllm_backend import VLLMBackend

            dtype = engine_dtype(cfg.rollout.engine_dtype)
            if lora:  # one engine serves both players' adapters
                engine = engine or VLLMBackend(
                    resolve_model(cfg.model.name),
                    dtype=dtype,
                    max_model_len=cfg.rollout.max_model_len,
                    enable_lora=True,
                    max_lora_rank=cfg.model.lora_rank,
                )
                self.engines = dict.fromkeys(ROLES, engine)
            else:
                self.engines = {
                    role: VLLMBackend(start_model(cfg, role), dtype=dtype, max_model_len=cfg.rollout.max_model_len)
                    for role in ROLES
                }
        elif cfg.rollout.backend == "vllm_server":
            self.fleets = server_fleets(cfg, players, lora)

    def sync(self, which: Mapping[str, Which]) -> None:
        """Make the engines sample from policy ``which[role]`` of each player (no-op for HF)."""
        targets: list[tuple[str, VLLMBackend | ServerFleet]] = [*self.engines.items(), *self.fleets.items()]
        # sharded players are gathered (every process enters together), so each push reads full
        # tensors and its probe forward is local
        with gathered(self.players.values()) if targets else contextlib.nullcontext():
            for role, engine in targets:
                module, adapter = self.players[role].sampling(which[role])
                if adapter is not None:
                    engine.push_adapter(role, module, adapter_name=adapter)
                else:
                    engine.push_weights(module)
        if self.fleets and torch.distributed.is_initialized():
            torch.distributed.barrier()  # no rank samples before the pushes (made by rank 0) are in

    def policy(
        self,
        role: str,
        which: Which,
        seed: int,
        *,
        greedy: bool = False,
        hf: bool = False,
        source: tuple[CausalLM, str | None] | None = None,
    ) -> Policy:
        """Policy ``which`` of a player; ``hf`` runs the player's own module even when engines
        sample; ``source``: (module, adapter) to run instead, a snapshot's (``Player.opponent``)."""
        rollout = self.cfg.rollout
        backend: VLLMBackend | Served | HFBackend
        if role in self.engines and not hf and source is None:
            backend, adapter = self.engines[role], (role if self.lora else None)
        elif role in self.fleets and not hf and source is None:
            adapter = role if self.lora else None
            backend = self.fleets[role].backend(adapter)
        else:
            module, adapter = source or self.players[role].sampling(which)
            backend = HFBackend(
                module,
                self.players[role].tokenizer,
                batch_size=rollout.batch_size,
                max_context=rollout.max_model_len,
                # a pool's snapshot (source) samples in float32: a copy kept per snapshot would grow with the pool
                sampling_copy=self.sampling_copy(module) if source is None else None,
            )
        max_tokens = self.cfg.roles[role].max_tokens
        temperature = 0.0 if greedy else rollout.temperature
        system = self.cfg.game.system_message(role)
        return Policy(backend, max_tokens, temperature, rollout.top_p, seed, adapter, prefills(self.cfg)[role], system)

    def sampling_copy(self, module: CausalLM) -> SamplingCopy | None:
        """The bfloat16 copy HF sampling runs on (``rollout.hf_dtype``), one per module, made on
        first use; ``None``: sample from the float32 module itself."""
        if not self.low_precision or next(module.parameters()).dtype != torch.float32:
            return None
        if id(module) not in self.copies:  # the copy holds its module: the id stays that module's
            self.copies[id(module)] = SamplingCopy(module, torch.bfloat16)
        return self.copies[id(module)]

    def close(self) -> None:
        self.copies.clear()
        engines: list[VLLMBackend | ServerFleet] = [*self.engines.values(), *self.fleets.values()]
        for engine in {id(e): e for e in engines}.values():
            engine.close()


def engine_dtype(setting: Literal["auto", "float32", "bfloat16"]) -> Literal["float32", "bfloat16"]:
    """The in-process vLLM engines' dtype for ``rollout.engine_dtype`` (auto: bfloat16 where a
    GPU supports it, float32 on the CPU build)."""
    if setting != "auto":
        return setting
    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def hf_sampling_dtype(
    setting: Literal["auto", "float32", "bfloat16"], players: Mapping[str, Player]
) -> Literal["float32", "bfloat16"]:
    """The dtype HF sampling runs in for ``rollout.hf_dtype`` (auto: bfloat16 where the machine
    multiplies it in hardware). Sharded players sample from their gathered float32 modules: a
    copy of a sharded module would hold every process's full weights twice."""
    sharded = [role for role, p in players.items() if p.sharded]
    if setting == "bfloat16" and sharded:
        raise ValueError(
            f"rollout.hf_dtype bfloat16 samples from a bfloat16 copy of each player, which sharded players "
            f"({', '.join(sharded)}: parallel.sharding fsdp2) cannot have: set rollout.hf_dtype to auto or "
            "float32, or sample with rollout.backend vllm"
        )
    if setting != "auto":
        return setting
    return "bfloat16" if native_bfloat16() and not sharded else "float32"


def server_fleets(cfg: TrainConfig, players: dict[str, Player], lora: bool) -> dict[str, ServerFleet]:
    """The ``vllm serve`` replicas of each role (``rollout.urls`` for LoRA players, their
    adapters on one served base; per-player URLs under full fine-tuning). Only rank 0 drives
    them (a pusher per run); the others sample from them."""
    from agents.vllm_server import ServerFleet

    r = cfg.rollout
    sender = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0

    def fleet(urls: Sequence[str], role: str) -> ServerFleet:
        return ServerFleet(
            urls,
            players[role].tokenizer,
            transport=r.weight_transport,
            tolerance=r.probe_tolerance,
            sender=sender,
            nccl_address=r.nccl_address,
            nccl_port=r.nccl_port,
        )

    if lora:
        shared = fleet(r.urls, ATTACKER)
        return dict.fromkeys(ROLES, shared)
    own = {role: cfg.roles[role].urls for role in ROLES}
    return {role: fleet(urls, role) for role, urls in own.items() if urls}


def new_round(game: Game, seed: Seed, direct: bool = False) -> Round:
    """A round of ``game``: a :class:`Dialogue` in the multi-turn game (``game.turns > 1``)."""
    return Dialogue(seed, direct=direct) if isinstance(game, ConversationGame) else Round(seed, direct=direct)


def play(
    game: Game,
    attacker: Policy,
    defender: Policy,
    rounds: list[Round],
    retries: int = 0,
    on_phase: Callable[[str], None] | None = None,
) -> list[Round]:
    """Both phases of a batch of rounds, each as one batched generation and judge call (in the
    multi-turn game, turn by turn: ``conversations.play_dialogues``); ``retries``: how many
    times more a failed judge call is made (``judge.retries``). ``on_phase(text)`` names each
    generation and judge call as it starts (the training bar shows it: a step's judge calls
    take minutes with an LLM judge on CPU, and the bar moves once per step)."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        # as the config checks judge.retries: -1 would make no call at all and play nothing
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    said = on_phase or (lambda _: None)
    n, a, d = len(rounds), game.config.num_attacks, game.config.num_responses
    if isinstance(game, ConversationGame):
        said(f"{n} conversations, turn by turn (attacker, defender, judge)")
        return play_dialogues(game, attacker, defender, rounds, retries)
    said(f"attacker writing {n * a} attacks")
    attacks = attacker.attack([game.attacker_observation(r) for r in rounds], a)
    said(f"judge reading {n * a} attacks")
    judged(lambda: game.attack(rounds, attacks), retries)
    said(f"defender writing {n * a * d} answers")
    answers = defender.respond([game.defender_observation(r) for r in rounds], d)
    said(f"judge comparing {n * a * d} answers")
    judged(lambda: game.respond(rounds, answers), retries)
    return rounds


def judged(call: Callable[[], object], retries: int) -> None:
    # A failed judge call leaves the rounds untouched, so it can simply be made again.
    for attempt in range(retries + 1):
        try:
            call()
            return
        except JudgeError:
            if attempt == retries:
                raise
