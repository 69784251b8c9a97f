"""The one training loop every algorithm shares.

    for step in steps:
        push the sampling weights (EMA or learner) to the rollout engine
        for split in (harmful, benign):
            play a batch of rounds (attacker, defender, judge)     -> rewards
        for split in (harmful, benign):                            # Self-RedTeam: both at once
            each trained player: examples -> loss -> optimizer step(s)
        EMA update; log; validate; checkpoint

Both splits are played before any update, by the policies of the step's start, on every
backend: as the reference, whose rollout engine is synced once per step (an in-process HF
sampler would otherwise play the benign split with the weights after the harmful update).
As in the paper, each step gives each player one optimizer step per split and one EMA update;
Self-RedTeam instead takes ``minibatches`` steps on the two splits' samples mixed, as its
reference's replay buffer. Unlike the AdvGame reference code, the cosine schedule advances
once per optimizer step, over the optimizer steps the player actually takes.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from advgame_env import Game, JudgeError, Label, Round, RuleJudge, Seed, bundled_seeds, load_seeds
from advgame_env.game import direct_seed_ids
from advgame_env.judges import Judge
from advgame_env.parsing import Failure
from advgame_env.protocol import GenerationBackend
from advgame_env.roles import ATTACKER, DEFENDER, ROLES
from advgame_env.rule_judge import Behaviour, behaviour
from agents.backends import build_backend
from agents.hf import HFBackend
from agents.models import adapter_base, load_model, portable_name, resolve_model
from agents.openai_backend import OpenAIBackend
from agents.policy import Policy
from agents.replicas import ReplicatedBackend
from algorithms.config import ConfigError, TrainConfig, check_resumed_config, load_config, save_config, to_dict
from algorithms.training.algorithm import Algorithm, Example, build_algorithm
from algorithms.training.checkpoints import (
    CheckpointState,
    ResumePoint,
    checkpoint_step,
    checkpoints,
    load_checkpoint,
    load_shards,
    newest_intact_checkpoint,
    optimizer_key,
    record_resume,
    restore_rng,
    rng_state,
    save_checkpoint,
    save_sharded_checkpoint,
    set_aside,
    sft_stream_key,
    split_weight_key,
    weight_key,
)
from algorithms.training.distributed import Dist, local_value, unsharded
from algorithms.training.game_format import GameFormat, write_format
from algorithms.training.judge_monitor import JudgeMonitor
from algorithms.training.opponents import CURRENT, FOLDER, Opponents, Snapshot, attack_success, members, rival
from algorithms.training.players import Player, Which, build_players
from algorithms.training.runlog import RunLog, repair_metrics
from algorithms.training.seed_stream import SeedStream, derived_seed
from algorithms.training.sft import load_sft, read_sft, sft_loss

if TYPE_CHECKING:
    from agents.vllm_backend import VLLMBackend
    from agents.vllm_server import ServerFleet
    from algorithms.config import JudgeConfig

SPLITS = (Label.HARMFUL, Label.BENIGN)


# ----------------------------------------------------------------------------- rollouts


def prefills(cfg: TrainConfig) -> dict[str, str]:
    """Each role's assistant prefill: the think opening for players with hidden reasoning
    (``rollout.think_prefill``, else the template set's: the paper's for Self-RedTeam's set)."""
    game, prefill = cfg.game, cfg.rollout.think_prefill or cfg.game.templates.prefill
    return {ATTACKER: prefill if game.attacker_think else "", DEFENDER: prefill if game.defender_think else ""}


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
        source: tuple[Any, str | None] | None = None,
    ) -> Policy:
        """Policy ``which`` of a player; ``hf`` runs the player's own module even when engines
        sample; ``source``: (module, adapter) to run instead, a snapshot's (``Player.opponent``)."""
        rollout = self.cfg.rollout
        backend: Any
        if role in self.engines and not hf and source is None:
            backend, adapter = self.engines[role], (role if self.lora else None)
        elif role in self.fleets and not hf and source is None:
            adapter = role if self.lora else None
            backend = self.fleets[role].backend(adapter)
        else:
            module, adapter = source or self.players[role].sampling(which)
            backend = HFBackend(
                module, self.players[role].tokenizer, batch_size=rollout.batch_size, max_context=rollout.max_model_len
            )
        max_tokens = self.cfg.roles[role].max_tokens
        temperature = 0.0 if greedy else rollout.temperature
        system = self.cfg.game.system_message(role)
        return Policy(backend, max_tokens, temperature, rollout.top_p, seed, adapter, prefills(self.cfg)[role], system)

    def close(self) -> None:
        engines: list[VLLMBackend | ServerFleet] = [*self.engines.values(), *self.fleets.values()]
        for engine in {id(e): e for e in engines}.values():
            engine.close()


def engine_dtype(setting: Literal["auto", "float32", "bfloat16"]) -> Literal["float32", "bfloat16"]:
    """The in-process vLLM engines' dtype for ``rollout.engine_dtype`` (auto: bfloat16 where a
    GPU supports it, float32 on the CPU build)."""
    if setting != "auto":
        return setting
    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


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


def play(game: Game, attacker: Policy, defender: Policy, rounds: list[Round], retries: int = 0) -> list[Round]:
    """Both phases of a batch of rounds, each as one batched generation and judge call;
    ``retries``: how many times more a failed judge call is made (``judge.retries``)."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        # as the config checks judge.retries: -1 would make no call at all and play nothing
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    attacks = attacker.attack([game.attacker_observation(r) for r in rounds], game.config.num_attacks)
    _judged(lambda: game.attack(rounds, attacks), retries)
    answers = defender.respond([game.defender_observation(r) for r in rounds], game.config.num_responses)
    _judged(lambda: game.respond(rounds, answers), retries)
    return rounds


def _judged(call: Callable[[], object], retries: int) -> None:
    # A failed judge call leaves the rounds untouched, so it can simply be made again.
    for attempt in range(retries + 1):
        try:
            call()
            return
        except JudgeError:
            if attempt == retries:
                raise


# ----------------------------------------------------------------------------- the update


class Optimizer:
    """AdamW + cosine schedule (with optional warm-up) + clipping for one player."""

    def __init__(self, player: Player, cfg: TrainConfig, total_steps: int) -> None:
        """``total_steps``: the optimizer steps of the run; the cosine spans ``optim.schedule_steps``
        instead when that is set."""
        o = cfg.optim
        total_steps = o.schedule_steps or total_steps
        self.params = player.trainable()  # sharded players: DTensors, so AdamW's states are sharded too
        self.sharded = player.sharded
        self.max_grad_norm = o.max_grad_norm
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: cosine_scale(k, total_steps, o.warmup_steps, o.final_lr_scale)
        )

    def step(self, dist: Dist) -> dict[str, float]:
        if not self.sharded:  # FSDP2 has reduce-scattered the gradients in backward already
            dist.sum_grads(self.params)
        # of DTensor gradients: the global norm (a replicated DTensor), each shard clipped by it
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return {"grad_norm": local_value(norm), "lr": float(lr)}

    def shards(self, player: Player) -> dict[str, Any]:
        """This process's shards of the AdamW states (a sharded player), for a checkpoint."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        fresh = not self.optimizer.state
        # a fresh optimizer's states are made by a zero step over the parameters that require
        # grad; under LoRA only the active adapter does (set_adapter)
        with player.active("learner"):
            state: dict[str, Any] = get_optimizer_state_dict(player.learner_module(), self.optimizer)
        if fresh:
            # That zero step (zero gradients, lr 0) leaves zero moments, as AdamW's own first
            # step starts from, but counts itself: with step 1 already taken, the bias
            # correction would make the first real update about a quarter smaller than an
            # unsharded learner's. Back to step 0, in the optimizer and in what is saved.
            for moments in [*self.optimizer.state.values(), *state["state"].values()]:
                moments["step"].zero_()
        return state

    def skip(self) -> None:
        """No example anywhere: the weights stay, but the schedule counts the step."""
        self.optimizer.step()  # every grad is None: AdamW leaves each parameter alone
        self.scheduler.step()


def cosine_scale(k: int, total: int, warmup: int, final_scale: float) -> float:
    """LR multiplier at optimizer step k: linear warm-up, then cosine from 1 to ``final_scale``."""
    if k < warmup:
        return (k + 1) / warmup
    progress = min(1.0, (k - warmup) / max(1, total - warmup))
    return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))


def update(
    player: Player,
    optimizer: Optimizer,
    algorithm: Algorithm[Example],
    examples: Sequence[Example],
    micro_batch_size: int,
    dist: Dist,
    precision: contextlib.AbstractContextManager[Any],
    auxiliary: Callable[[Player], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One optimizer step on Σ weight·loss / Σ weight, the sums over every process's examples.

    An example the algorithm does not train (``algorithm.trains``: GRPO's failed rollouts) counts
    in Σ weight but is not trained. ``auxiliary(player)``: an extra loss (Self-RedTeam's SFT term) added to every
    micro-batch, weighted by the micro-batch's share of the examples; summed over processes,
    the shares make it the weighted mean of the processes' terms.
    """
    total = dist.sum([sum(algorithm.weight(e) for e in examples)])[0]
    examples = [e for e in examples if algorithm.trains(e)]
    weights = [algorithm.weight(e) for e in examples]
    (count,) = dist.sum([len(examples)])
    if count == 0:
        if auxiliary is None:
            optimizer.skip()
            return {"examples": 0.0}
        # no game example anywhere: the auxiliary term still takes its step, as the mean of
        # the processes' terms (the gradients are summed over processes)
        with precision, player.updating():
            alone = auxiliary(player)
        alone.div(dist.world).backward()
        return {"examples": 0.0, "sft_loss": float(alone.detach())} | optimizer.step(dist)
    # every process sums the same keys, in the same order, even with no example of its own
    sums = dict.fromkeys(("loss", *algorithm.metric_names), 0.0)
    sft_loss = 0.0  # this process's weighted auxiliary term
    chunks = [
        (examples[start : start + micro_batch_size], weights[start : start + micro_batch_size])
        for start in range(0, len(examples), micro_batch_size)
    ]
    real = len(chunks)
    if player.sharded:
        chunks += padding(chunks, examples, dist)
    for n, (chunk, chunk_weights) in enumerate(chunks):
        w = torch.tensor(chunk_weights)
        with precision, player.updating():
            losses, metrics = algorithm.loss(player, chunk)
            objective = (losses * w.to(losses.device)).sum().div(total)
            if auxiliary is not None:
                share = float(w.sum()) / total
                term = auxiliary(player)
                objective = objective + term * share
                sft_loss += float(term.detach()) * share
        objective.backward()
        if n >= real:  # a padding micro-batch: weight 0, no figures
            continue
        sums["loss"] += float((losses.detach().cpu() * w).sum())
        for key, value in metrics.items():
            sums[key] += value
    reduced = dict(zip(sums, dist.sum(list(sums.values())), strict=True))
    out = {"loss": reduced.pop("loss") / total, "examples": count}
    out |= {key: value / count for key, value in reduced.items()}  # per-example means
    if auxiliary is not None:
        out["sft_loss"] = sft_loss
    return out | optimizer.step(dist)


def padding(
    chunks: Sequence[tuple[list[Example], list[float]]], examples: Sequence[Example], dist: Dist
) -> list[tuple[list[Example], list[float]]]:
    """Zero-weight micro-batches that bring this process up to the most any process has.

    Every forward and backward through an FSDP2 module is a collective (all-gather, then
    reduce-scatter), so every process must run the same number of them; processes hold
    different numbers of examples. A padding micro-batch repeats a real example with weight 0:
    its gradient is exactly zero and it adds nothing to the sums. A process with no example
    borrows the first example of the first process that has one."""
    counts = dist.gather([len(chunks)])
    missing = max(counts) - len(chunks)
    filler = list(examples[:1])
    if min(counts) == 0:  # some process has nothing to repeat: every process takes part in the gather
        everyone = dist.gather(list(examples[:1]))
        filler = filler or everyone[:1]
    return [(filler, [0.0])] * missing


# ----------------------------------------------------------------------------- metrics


def game_metrics(rounds: Sequence[Round]) -> dict[str, float]:
    attacks = [a for r in rounds if not r.direct for a in r.attacks]
    answers = [s for r in rounds for row in r.responses for s in row if s.failure is not Failure.PROMPT_INVALID]
    out: dict[str, float] = {"rounds": len(rounds)}
    for role, samples in ((ATTACKER, attacks), (DEFENDER, answers)):
        if not samples:
            continue
        rewards = [s.reward for s in samples if s.reward is not None]
        if rewards:
            out[f"{role}_reward"] = sum(rewards) / len(rewards)
        out[f"{role}_valid"] = sum(s.failure is None for s in samples) / len(samples)
    if attacks:
        for failure in (Failure.BAD_FORMAT, Failure.UNFAITHFUL, Failure.OVER_LENGTH):
            out[f"attacker_{failure.value}"] = sum(a.failure is failure for a in attacks) / len(attacks)
    if answers:
        out["defender_over_length"] = sum(s.failure is Failure.OVER_LENGTH for s in answers) / len(answers)
    return out


def refusal_rates(rounds: Sequence[Round]) -> dict[str, float]:
    """Share of answers that refuse or deflect, per seed label (model-free, keyword based)."""
    out = {}
    for label in SPLITS:
        texts = [s.public or "" for r in rounds if r.seed.label is label for row in r.responses for s in row]
        if texts:
            out[f"refusal_{label.value}"] = sum(behaviour(t) is not Behaviour.COMPLIANCE for t in texts) / len(texts)
    return out


@dataclass
class StepMetrics:
    """A step's figures, kept by what they are about; ``flat()`` names them as metrics.jsonl does.

    ``game[split]``: the game figures of a split's global batch; ``train[split][learner]``: a
    learner's update figures on a split (split None: both splits' examples mixed in one update);
    ``seconds``: where the step's time went, by phase."""

    game: dict[str, dict[str, float]] = field(default_factory=dict)
    train: dict[str | None, dict[str, dict[str, float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    pool: dict[str, float] = field(default_factory=dict)  # the opponent pools' figures (``pool/x``)

    def flat(self) -> dict[str, float]:
        """``game_<split>/x``, ``train_<split>/<learner>_x`` (``train/<learner>_x`` for a mixed
        update), ``time/<phase>_s`` and, with opponent pools, ``pool/x``; plus ``game/x`` and
        ``train/<learner>_x``, the mean over the splits that have it (the sum, for example
        counts), for the progress bar and the plots."""
        out: dict[str, float] = {}
        for split, figures in self.game.items():
            out |= {f"game_{split}/{k}": v for k, v in figures.items()}
        for part, learners in self.train.items():
            prefix = "train" if part is None else f"train_{part}"
            out |= {f"{prefix}/{name}_{k}": v for name, figures in learners.items() for k, v in figures.items()}
        out |= _across_splits("game", [{"": figures} for figures in self.game.values()])
        out |= _across_splits("train", [learners for part, learners in self.train.items() if part is not None])
        out |= {f"pool/{k}": v for k, v in self.pool.items()}
        return out | {f"time/{k}_s": v for k, v in self.seconds.items()}


def _across_splits(family: str, per_split: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for learners in per_split:
        for name, figures in learners.items():
            for k, v in figures.items():
                values.setdefault(f"{family}/{name}_{k}" if name else f"{family}/{k}", []).append(v)
    return {key: sum(v) if key.endswith("_examples") else sum(v) / len(v) for key, v in values.items()}


# ----------------------------------------------------------------------------- the trainer


@dataclass
class Learner:
    """One set of trained weights: its player, the roles it plays (both, for a shared policy),
    its optimizer and schedule (None when the schedule never trains it) and the auxiliary SFT
    stream of each of its roles that has one."""

    name: str  # "attacker", "defender", or "policy" for one policy of both roles
    player: Player
    roles: tuple[str, ...]
    optimizer: Optimizer | None = None
    sft: dict[str, SeedStream] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """One set of rounds a step plays per split: the roles that learn from it, and the snapshot
    that plays a role instead of its player as it is now (the rest play as they are now)."""

    learners: tuple[str, ...]
    against: Mapping[str, Snapshot] = field(default_factory=dict)


EVERYONE = Match(ROLES)  # no opponent pool, or every learning role drew its rival as it is now


def matches(drawn: Mapping[str, Snapshot | None]) -> list[Match]:
    """The step's matches given each learning role's draw (``Opponents.draw``): one of players as
    they are now for the roles that drew that, and one per role that drew a snapshot, in which
    that role plays (and learns) against the snapshot of its rival."""
    past = {role: s for role, s in drawn.items() if s is not None}
    if not past:
        return [EVERYONE]
    now = [Match(tuple(r for r in ROLES if r not in past))] if len(past) < len(drawn) else []
    return now + [Match((role,), {rival(role): s}) for role, s in past.items()]


def match_figures(match: Match, figures: Mapping[str, float], alone: bool) -> dict[str, float]:
    """The game figures a match gives a step's log: all of them when it is the step's only
    match; else each learning role's own (``<role>_x``), the defender's refusal rates and the
    round count too where the defender learns (figures of a snapshot are not the run's)."""
    if alone:
        return dict(figures)
    keep = tuple(f"{role}_" for role in match.learners)
    if DEFENDER in match.learners:
        keep += ("refusal_", "rounds")
    return {k: v for k, v in figures.items() if k.startswith(keep)}


def build_judge(cfg: TrainConfig, section: JudgeConfig | None = None) -> Judge:
    """The judge of ``section`` (default: the run's ``judge``; an ensemble's member, the audit's judge)."""
    j = cfg.judge if section is None else section
    if j.kind == "rule":
        return RuleJudge()
    from advgame_env import LLMJudge
    from advgame_env.ensemble import EnsembleJudge
    from advgame_env.wildguard import PASS_THROUGH_CHAT_TEMPLATE, WildGuardJudge, check_game

    if j.kind == "ensemble":
        ensemble = EnsembleJudge([build_judge(cfg, member) for member in j.members], both_orders=j.both_orders)
        try:
            check_game(cfg.game, ensemble)  # an ensemble plays only the roles all its members play
        except ValueError as error:
            raise ConfigError(f"judge.kind: ensemble: {error}") from None
        return ensemble
    if j.kind == "wildguard":
        if j.mode != "generative" or j.both_orders:
            raise ConfigError(
                "judge.kind: wildguard reads WildGuard's generated labels: judge.mode and judge.both_orders do not apply"
            )
        try:
            check_game(cfg.game)  # before any model loads
        except ValueError as error:
            raise ConfigError(f"judge.kind: wildguard: {error}") from None
    try:
        # WildGuard over openai: the server must render the message as it is (see advgame_env.wildguard)
        backend = build_backend(j.backend, j.model, j.endpoints, deadline=j.deadline, cooldown=j.replica_cooldown)
    except ValueError as error:
        raise ConfigError(f"judge.backend: {error}; set judge.url or judge.urls") from None
    if j.kind == "wildguard":
        if not isinstance(
            backend, OpenAIBackend | ReplicatedBackend
        ):  # the in-process engines render chats with their tokenizer
            tokenizer: Any = backend.tokenizer  # a Hugging Face tokenizer, whichever engine holds it
            tokenizer.chat_template = PASS_THROUGH_CHAT_TEMPLATE
        return WildGuardJudge(backend, max_tokens=j.max_tokens, seed=cfg.run.seed)
    return LLMJudge(
        backend,
        mode=j.mode,
        both_orders=j.both_orders,
        max_tokens=j.max_tokens,
        temperature=j.temperature,
        top_p=j.top_p,
        seed=cfg.run.seed,
    )


def start_model(cfg: TrainConfig, role: str) -> str:
    """Where ``role``'s player starts: its own model (or, under LoRA, adapter) folder, else ``model.name``."""
    chosen = cfg.roles[role].model
    return resolve_model(chosen or cfg.model.name)


def adapter_starts(cfg: TrainConfig) -> dict[str, str]:
    """Under LoRA, the adapter folder each role with a start of its own begins from (its adapter
    is loaded on the shared base, ``model.name``, which must be the base the adapter names);
    checked here, before the base loads. Under full fine-tuning a start is a model folder."""
    m, out = cfg.model, {}
    for role in ROLES:
        chosen = cfg.roles[role].model
        if not chosen:
            continue
        key = f"roles.{role}.model"
        try:
            folder = resolve_model(chosen)
            base = adapter_base(folder)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"config.{key}: {error}") from None
        if not m.lora:
            if base is not None:
                raise ConfigError(
                    f"config.{key}: {chosen} is a LoRA adapter folder; full fine-tuning (model.lora: false) "
                    "starts from a full model folder: set model.lora: true to start the adapter from it"
                )
            continue
        if base is None:
            raise ConfigError(
                f"config.{key}: {chosen} is a full model folder; under LoRA a player starts from an adapter "
                f"folder of model.name ({m.name}): give an adapter (a LoRA run's export) or set model.lora: false"
            )
        if portable_name(resolve_model(base)) != portable_name(resolve_model(m.name)):
            raise ConfigError(
                f"config.{key}: the adapter in {chosen} is of base {portable_name(base)}, not of model.name "
                f"({m.name}): set model.name to the adapter's base"
            )
        out[role] = folder
    return out


def _seeds(spec: str, split: str) -> list[Seed]:
    return bundled_seeds(split) if spec == "bundled" else load_seeds(spec)  # type: ignore[arg-type]


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: bool = False,
        allow_change: Sequence[str] = (),
        fixed: Mapping[str, GenerationBackend] | None = None,
    ) -> None:
        """``fixed[role]``: a backend that plays a frozen role instead of its player (a served
        model, or a scripted test double), sampled with the role's rollout settings."""
        self.cfg, self.dist = cfg, Dist()
        self.fixed = dict(fixed or {})
        self.run_dir = Path(cfg.run.out_dir)
        adapters = adapter_starts(cfg)  # the players' own starts fit the run: checked before any model loads
        # every data file the config names is read before any model loads: a missing or malformed
        # one fails in a second, not after the models (16.5 s for the bundled one on 2 cores)
        seeds, self.validation = _seeds(cfg.data.seeds, "train"), self._validation_seeds()
        for path in self._sft_files().values():
            read_sft(path)
        found = checkpoints(self.run_dir)
        if not resume and (found or (self.run_dir / "metrics.jsonl").exists()):
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it, or set run.out_dir"
            )
        resumed = self._resume_point(allow_change) if resume else None  # before any model is loaded
        self.algorithm: Algorithm[Example] = build_algorithm(cfg.algorithm, cfg.rollout.max_model_len)
        learns = {role for step in range(cfg.run.steps) for role in self.trained_roles(step)}
        if not set(self.fixed) <= set(ROLES) - learns:
            raise ConfigError(
                "a fixed backend plays a frozen role (attacker or defender, not trained under train.schedule "
                f"{cfg.train.schedule}), not {sorted(set(self.fixed) - (set(ROLES) - learns))}"
            )
        # A role that never learns in the run, of a policy shared with the other role, plays a
        # frozen copy of the starting weights, not the shared weights its rival is training
        # (Self-RedTeam's attacker-only baseline, S §2.3).
        frozen = set(ROLES) - learns - set(self.fixed)
        self.base_roles = frozen if self.algorithm.shares_policy and learns else set()
        if self.fixed and cfg.opponents.pooled:  # a fixed backend has no weights to snapshot
            raise ConfigError(
                f"config.opponents.draw: {cfg.opponents.draw} keeps a pool of each player's snapshots, but "
                f"{', '.join(sorted(self.fixed))} is played by a fixed backend; set opponents.draw=latest"
            )
        device = self.dist.device
        self.sharded = cfg.parallel.sharding == "fsdp2"
        torch.manual_seed(cfg.run.seed)  # LoRA initialisation, identical on every process
        shared = self.algorithm.shares_policy
        if shared and (cfg.roles.attacker.model or cfg.roles.defender.model):
            raise ConfigError(
                f"config.roles.attacker.model / roles.defender.model: algorithm {cfg.algorithm.name} plays both roles with "
                "one policy, which starts from model.name; unset them"
            )
        # under LoRA the shared base is model.name; a role's own start is its adapter (above)
        players = build_players(
            roles=("policy",) if shared else ROLES,
            load=lambda role: load_model(
                cfg.model.name if cfg.model.lora else start_model(cfg, role), device=str(device)
            ),
            lora=cfg.model.lora,
            copies=self.algorithm.copies() | ({"initial"} if self.base_roles and not cfg.model.lora else set()),
            lora_rank=cfg.model.lora_rank,
            lora_alpha=cfg.model.lora_alpha,
            adapters=adapters,
            mesh=self.dist.mesh if self.sharded else None,
            bf16=self._bf16(),
        )
        self.learners = {name: Learner(name, player, ROLES if shared else (name,)) for name, player in players.items()}
        if cfg.model.gradient_checkpointing:
            for learner in self.learners.values():
                learner.player.enable_recompute()
        for learner in self.learners.values():
            steps = self.optimizer_steps(learner.name)  # a learner the schedule never trains has none
            learner.optimizer = Optimizer(learner.player, cfg, steps) if steps else None
        for learner in self.learners.values():
            learner.sft = self._sft_streams(learner)
        self.tokenizers = {role: player.tokenizer for role, player in self.players.items()}
        judge, audit = build_judge(cfg), cfg.judge.audit
        # judge.audit: a second judge re-scores a share of the verdicts; canaries ride in each call
        self.monitor = JudgeMonitor(audit, judge, build_judge(cfg, audit.judge), cfg.run.seed) if audit else None
        self.game = Game(self.monitor.judge if self.monitor else judge, cfg.game)
        self.streams = {
            label: SeedStream([s for s in seeds if s.label is label], cfg.run.seed + i)
            for i, label in enumerate(SPLITS)
        }
        self.direct_ids = direct_seed_ids(seeds, cfg.game) if cfg.game.direct_rounds == "seed" else None
        self.opponents = self._opponents()
        self.step = 0
        if resumed is not None:
            self._restore(resumed.path, resumed.state)
            resumed.state = None  # the tensors are in the models now
            if self.dist.main:
                record_resume(self.run_dir, resumed.record(self.step))
        self.sampler = Sampler(cfg, self.players, cfg.model.lora)

    # ------------------------------------------------------------------ the loop

    def train(self) -> Path:
        cfg = self.cfg
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        log = self._log() if self.dist.main else None
        try:
            if self.step == 0 and cfg.run.validate_every:
                self._validate(log)
            while self.step < cfg.run.steps:
                metrics = self.train_step()
                if self.monitor is not None:
                    metrics |= self.monitor.after_step(self.step)
                if log is not None:
                    log.log(self.step, metrics)
                if self.monitor is not None:
                    self.monitor.check(self.step)  # warns, or stops the run with JudgeAlarm
                if cfg.run.validate_every and self.step % cfg.run.validate_every == 0:
                    self._validate(log)
                if self.step % cfg.run.checkpoint_every == 0 or self.step == cfg.run.steps:
                    self.save()
            if self.dist.main or self.sharded:  # sharded: every process takes part in the gathers
                self.export(self.run_dir / "final")
        finally:
            if log is not None:
                log.close()
            self.sampler.close()
        return self.run_dir

    def train_step(self) -> dict[str, float]:
        """One trainer step: sync, then per split play + update, then EMA."""
        cfg, step = self.cfg, self.step
        torch.manual_seed(derived_seed(cfg.run.seed, step, self.dist.rank))
        # seconds per phase (this process): where a step's time goes, for the logs and benchmarks/
        clock = {"sync": 0.0, "play": 0.0, "update": 0.0}
        started = mark = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            clock[phase] += now - mark
            mark = now

        trained = self.trained_roles(step)
        which = self.sampling(step)
        self.sampler.sync(which)
        lap("sync")
        metrics = StepMetrics()
        # with opponent pools, each learning role's rival may be a snapshot (seeded by the step)
        drawn = self.opponents.draw(step, trained) if self.opponents is not None else {}
        games = matches(drawn)
        # every split is played by the same policies, those of the step's start (see the top);
        # sharded players are gathered for it, so each process samples as long as it needs
        with self._gathered():
            played = {
                label: [(EVERYONE, self._play_split(label, s, which))]
                if games == [EVERYONE]
                else self._play_matches(label, s, which, games)
                for s, label in enumerate(SPLITS)
            }
        lap("play")
        batches: list[tuple[str | None, int, list[Example]]] = []  # (split name, split index, examples)
        for s, (label, split_games) in enumerate(played.items()):
            figures: dict[str, float] = {}
            examples: list[Example] = []
            alone = len(split_games) == 1
            for match, rounds in split_games:
                everyone = self.dist.gather(rounds)  # the game figures of the global batch
                figures |= match_figures(match, game_metrics(everyone) | refusal_rates(everyone), alone)
                made = self.algorithm.examples(rounds, self.game, self.tokenizers, self.prefills, self.dist)
                # a match trains only its learning roles (the other side was a snapshot, or it is
                # trained in the match against the snapshot it drew)
                examples += made if alone else [e for e in made if e.role in match.learners]
            metrics.game[label.value] = figures
            batches.append((label.value, s, examples))
        if self.algorithm.mix_splits:  # one update on both splits' samples, mixed
            batches = [(None, len(SPLITS), [e for _, _, examples in batches for e in examples])]
        for split, s, examples in batches:
            for learner in self.learners.values():
                roles = [r for r in trained if r in learner.roles]
                if roles:  # a frozen opponent is never updated
                    result = self._update(learner, roles, [e for e in examples if e.role in roles], s)
                    metrics.train.setdefault(split, {})[learner.name] = result
        lap("update")
        if "ema" in self.algorithm.copies():
            decay = self.algorithm.ema_decay
            if decay is None:
                raise ConfigError(f"algorithm {cfg.algorithm.name} keeps an EMA but gives no ema_decay")
            for learner in self.learners.values():
                if any(r in learner.roles for r in trained):
                    learner.player.ema_update(decay)
        lap("update")
        self.step += 1
        if self.opponents is not None:
            metrics.pool = self.opponents.metrics(step, drawn) | self._grow_pools()
            clock["pool"] = 0.0
            lap("pool")
        metrics.seconds = clock | {"step": time.perf_counter() - started}
        return metrics.flat()

    def _update(self, learner: Learner, roles: list[str], examples: list[Example], split: int) -> dict[str, float]:
        """The algorithm's optimizer step(s) of one learner, trained in ``roles``, on its examples of one split."""
        cfg, algorithm, player = self.cfg, self.algorithm, learner.player
        micro = cfg.optim.micro_batch_size
        with self._precision(), player.gathered():  # forwards only: as many as each process needs
            algorithm.prepare(player, examples, self.dist, micro)
        parts = algorithm.minibatches
        if parts > 1:  # PPO-style: several steps on one batch, in a seeded random order
            random.Random(derived_seed(cfg.run.seed, self.step, split, self.dist.rank, 11)).shuffle(examples)
        # each role's SFT chats reach only the player in that role (both, for a shared policy)
        sft_roles = [r for r in roles if r in learner.sft]
        auxiliary = functools.partial(self._sft_terms, roles=sft_roles) if sft_roles else None
        assert learner.optimizer is not None  # it trains at this step, so its schedule has steps
        results = []
        for k in range(parts):
            part = examples[k::parts]
            results.append(
                update(player, learner.optimizer, algorithm, part, micro, self.dist, self._precision(), auxiliary)
            )
        keys = dict.fromkeys(key for r in results for key in r)
        # counts add up over the minibatches; every other figure is the mean of the steps taken
        return {
            key: sum(r.get(key, 0.0) for r in results)
            if key == "examples"
            else statistics.fmean(r[key] for r in results if key in r)
            for key in keys
        }

    def trained_roles(self, step: int) -> list[str]:
        """The roles whose player learns at ``step``: ``train.schedule`` (a frozen opponent, or
        turns of ``train.period`` steps, the attacker first), within ``roles.<role>.train``."""
        t = self.cfg.train
        if t.schedule == "alternate":
            scheduled: tuple[str, ...] = (ROLES[(step // t.period) % 2],)
        else:
            scheduled = ROLES if t.schedule == "both" else (t.schedule,)
        return [r for r in scheduled if self.cfg.roles[r].train]

    @property
    def players(self) -> dict[str, Player]:
        """Who plays each role (one player for both roles where the policy is shared)."""
        return {role: learner.player for learner in self.learners.values() for role in learner.roles}

    @property
    def optimizers(self) -> dict[str, Optimizer]:
        """Each learner's optimizer, by learner name, for the learners the schedule trains."""
        return {name: learner.optimizer for name, learner in self.learners.items() if learner.optimizer is not None}

    @property
    def sft(self) -> dict[str, SeedStream]:
        """Each role's auxiliary SFT stream, for the roles that have a file."""
        return {role: stream for learner in self.learners.values() for role, stream in learner.sft.items()}

    def sampling(self, step: int) -> dict[str, Which]:
        """Whose weights each role plays with at ``step``: the algorithm's sampler for a player
        that learns this step; a frozen player plays its final weights (its learner), not an
        EMA that stopped moving when the player stopped learning."""
        trained = self.trained_roles(step)
        learns = {role: any(r in lr.roles for r in trained) for lr in self.learners.values() for role in lr.roles}
        return {role: self.algorithm.sampler_of(role) if learns[role] else "learner" for role in ROLES}

    def optimizer_steps(self, name: str) -> int:
        """How many optimizer steps learner ``name`` takes in the run: its cosine schedule's
        length (a player of an alternating baseline steps only while it trains)."""
        roles = self.learners[name].roles
        per_step = self.algorithm.minibatches * (1 if self.algorithm.mix_splits else len(SPLITS))
        steps = sum(any(r in roles for r in self.trained_roles(k)) for k in range(self.cfg.run.steps))
        return steps * per_step

    @property
    def prefills(self) -> dict[str, str]:
        return prefills(self.cfg)

    def _sft_files(self) -> dict[str, str]:
        """The auxiliary SFT file of each role that has one (read only with a coefficient)."""
        if not self.cfg.algorithm.sft_coef:  # set with a file
            return {}
        return {role: path for role in (DEFENDER, ATTACKER) if (path := self.cfg.roles[role].sft_data)}

    def _sft_streams(self, learner: Learner) -> dict[str, SeedStream]:
        """The auxiliary SFT chats of each of the learner's roles that has a file."""
        return {
            role: SeedStream(
                load_sft(path, learner.player.tokenizer, self.prefills[role]),
                self.cfg.run.seed + (17 if role == DEFENDER else 19),
            )
            for role, path in self._sft_files().items()
            if role in learner.roles
        }

    def _sft_terms(self, player: Player, roles: list[str]) -> torch.Tensor:
        return torch.stack([self._sft_loss(player, role) for role in roles]).sum()

    def _sft_loss(self, player: Player, role: str) -> torch.Tensor:
        a = self.cfg.algorithm
        assert a.sft_batch_size is not None and a.sft_coef is not None  # set: there is an SFT file
        batch = self.sft[role].take(a.sft_batch_size)
        with player.active("learner") as model:
            loss = sft_loss(model, batch, player.tokenizer.pad_token_id, self.cfg.rollout.max_model_len)
        return a.sft_coef * loss

    def _play_split(self, label: Label, split: int, which: Mapping[str, Which] | None = None) -> list[Round]:
        """A split's batch of rounds, played by the players as they are now."""
        return self._play_matches(label, split, which or self.sampling(self.step), [EVERYONE])[0][1]

    def _play_matches(
        self, label: Label, split: int, which: Mapping[str, Which], games: Sequence[Match]
    ) -> list[tuple[Match, list[Round]]]:
        """The rounds of each match on one batch of the split's seeds (the stream moves once).
        A match where the defender does not learn skips the direct rounds (no attacker in them)."""
        cfg, dist = self.cfg, self.dist
        # every process draws the same global batch and plays its own share of it
        batch = self.streams[label].take(cfg.data.batch_size * dist.world)
        mine = batch[dist.rank :: dist.world]
        pick = random.Random(derived_seed(cfg.run.seed, self.step, split, dist.rank, 7))
        direct = [pick.random() < cfg.game.direct_fraction for _ in mine]  # drawn always: a stable stream
        if self.direct_ids is not None:  # Self-RedTeam: fixed per seed row
            direct = [s.id in self.direct_ids for s in mine]
        out = []
        for n, match in enumerate(games):
            rounds = [
                Round(s, direct=d) for s, d in zip(mine, direct, strict=True) if DEFENDER in match.learners or not d
            ]
            # the first match samples as a run without pools does; the others with seeds of their own
            seed = derived_seed(cfg.run.seed, self.step, split, dist.rank, *((31, n) if n else ()))
            attacker = self._rollout_policy(ATTACKER, which[ATTACKER], seed, match.against.get(ATTACKER))
            defender = self._rollout_policy(DEFENDER, which[DEFENDER], seed + 1, match.against.get(DEFENDER))
            with self._precision(), torch.no_grad():
                out.append((match, play(self.game, attacker, defender, rounds, cfg.judge.retries) if rounds else []))
        return out

    def _rollout_policy(self, role: str, which: Which, seed: int, snapshot: Snapshot | None = None) -> Policy:
        """The policy that plays ``role`` this step: policy ``which`` of its player, on the backend
        the algorithm makes of it where that player learns this step (``Algorithm.rollout_backend``);
        with ``snapshot``, that past policy of the player, as it played (an opponent of a pool)."""
        if snapshot is not None:
            assert self.opponents is not None
            source = self.players[role].opponent(self.opponents.tensors(snapshot))
            return self.sampler.policy(role, which, seed, source=source)
        if role in self.base_roles:
            return self.sampler.policy(role, which, seed, source=self.players[role].frozen_base())
        policy = self.sampler.policy(role, which, seed)
        if role in self.fixed:
            return replace(policy, backend=self.fixed[role], adapter=None)
        learner = next(lr for lr in self.learners.values() if role in lr.roles)
        if any(r in learner.roles for r in self.trained_roles(self.step)):
            backend = self.algorithm.rollout_backend(role, learner.player, policy.backend)
            if backend is not policy.backend:  # the policy object stays the sampler's own otherwise
                policy = replace(policy, backend=backend)
        return policy

    # ------------------------------------------------------------------ opponent pools

    def _opponents(self) -> Opponents | None:
        """The opponent pools of ``opponents.draw`` (None for latest: no pool is kept)."""
        o = self.cfg.opponents
        if not o.pooled:
            return None
        if self.algorithm.shares_policy:
            raise ConfigError(
                f"config.opponents.draw: {o.draw} keeps a pool of each player's snapshots, but algorithm "
                f"{self.cfg.algorithm.name} trains one policy in both roles; set opponents.draw=latest"
            )
        return Opponents(o, self.cfg.run.seed, self.run_dir / FOLDER)

    def _grow_pools(self) -> dict[str, float]:
        """After a step: every ``snapshot_every`` steps each role's sampling weights join its pool
        (LoRA: the adapter's tensors; full weights: a file of the run folder), and with meta_nash
        every ``meta_every`` steps the mixtures are recomputed. The figures for the log."""
        assert self.opponents is not None
        o, step = self.cfg.opponents, self.step
        if step % o.snapshot_every == 0:
            which = self.sampling(step)  # what each role plays with next
            for role, player in self.players.items():
                tensors = player.weights(which[role])
                snapshot = (
                    Snapshot(step, tensors=tensors)
                    if self.cfg.model.lora
                    else self.opponents.save_file(role, step, tensors, write=self.dist.main)
                )
                self.opponents.add(role, snapshot, step)
            self.dist.barrier()  # every process finds the files the main one wrote
        if o.draw == "meta_nash" and o.meta_every is not None and step % o.meta_every == 0:
            return self._meta_nash()
        return {}

    def _member_policy(self, role: str, member: int, seed: int) -> Policy:
        """A pool member as a policy: the player as it is now (sampling weights), or a snapshot."""
        assert self.opponents is not None
        which = self.sampling(self.step)[role]
        if member == CURRENT:
            return self.sampler.policy(role, which, seed)
        snapshot = next(s for s in self.opponents.pools[role] if s.step == member)
        return self.sampler.policy(
            role, which, seed, source=self.players[role].opponent(self.opponents.tensors(snapshot))
        )

    def _meta_nash(self) -> dict[str, float]:
        """The cross-play of every attacker member against every defender member on
        ``opponents.meta_seeds`` harmful training seeds (seeded by the step; each attacker
        rewrites once, each defender answers its rewrites), its attack success solved as a
        zero-sum meta-game (``metagame.solve``); the mixtures then weigh the draws."""
        from algorithms.gametheory import MetaGameError, solve  # scipy: only runs that solve one

        cfg, game, count = self.cfg, self.game, self.cfg.opponents.meta_seeds
        assert self.opponents is not None and count is not None  # meta_nash sets it
        ids = {role: members(self.opponents.pools[role]) for role in ROLES}
        success = [[0.0] * len(ids[DEFENDER]) for _ in ids[ATTACKER]]
        if self.dist.main:  # one process plays it; the sum below hands the matrix to every other
            harmful = list(self.streams[Label.HARMFUL].seeds)
            pick = random.Random(derived_seed(cfg.run.seed, self.step, 37))
            seeds = pick.sample(harmful, min(count, len(harmful)))
            base = derived_seed(cfg.run.seed, self.step, 41)
            with self._precision(), torch.no_grad():
                for i, a in enumerate(ids[ATTACKER]):
                    rounds = [Round(seed) for seed in seeds]
                    attacker = self._member_policy(ATTACKER, a, base + i)
                    attacks = attacker.attack([game.attacker_observation(r) for r in rounds], game.config.num_attacks)
                    _judged(functools.partial(game.attack, rounds, attacks), cfg.judge.retries)
                    for j, d in enumerate(ids[DEFENDER]):
                        defender = self._member_policy(DEFENDER, d, base + 1_000 + j)
                        observations = [game.defender_observation(r) for r in rounds]
                        answers = defender.respond(observations, game.config.num_responses)
                        success[i][j] = attack_success(rounds, answers, game.judge, game.config)
        flat = self.dist.sum([v for row in success for v in row])
        width = len(ids[DEFENDER])
        try:
            nash = solve([flat[i * width : (i + 1) * width] for i in range(len(ids[ATTACKER]))])
        except MetaGameError as error:  # every process has the same matrix, so all land here
            # the last solved mixtures stay (none yet: uniform draws); the run goes on and says so
            if self.dist.main:
                print(f"advgame train: step {self.step}: {error}; the opponents' mixtures stay", file=sys.stderr)
            return {"meta_unsolved": 1.0}
        mixtures = {ATTACKER: nash.attacker_mixture, DEFENDER: nash.defender_mixture}
        if max(flat) == min(flat):  # every mixture is an equilibrium: uniform (as the maximum-entropy one)
            mixtures = {role: (1.0 / len(ids[role]),) * len(ids[role]) for role in ROLES}
        self.opponents.mixtures = {role: dict(zip(ids[role], mixtures[role], strict=True)) for role in ROLES}
        out = {"meta_value": nash.value}
        for role in ROLES:
            out |= {
                f"{role}_mixture_{'now' if m == CURRENT else f'step_{m}'}": w
                for m, w in self.opponents.mixtures[role].items()
            }
        return out

    def _bf16(self) -> bool:
        p = self.cfg.model.precision
        on_gpu = self.dist.device.type == "cuda"
        return p == "bf16" or (p == "auto" and on_gpu and torch.cuda.is_bf16_supported())

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        """The context of an update's forwards: autocast to bf16 for unsharded players. Sharded
        players compute in bf16 through FSDP2's MixedPrecisionPolicy (``shard_module``) instead,
        which keeps no cast cache of the weights."""
        if self._bf16() and not self.sharded:
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ validation

    def _validation_seeds(self) -> list[Seed]:
        seeds = _seeds(self.cfg.data.validation_seeds, "heldout")
        half = self.cfg.data.validation_size // 2
        harmful = [s for s in seeds if s.label is Label.HARMFUL][:half]
        benign = [s for s in seeds if s.label is Label.BENIGN][: self.cfg.data.validation_size - len(harmful)]
        return harmful + benign

    def _validate(self, log: RunLog | None) -> dict[str, float]:
        """The learner defender answers held-out seeds directly (greedy); judged and keyword-classified."""
        metrics: dict[str, float] = {}
        with self._gathered():  # the main process alone runs the sharded defender's forwards
            if self.dist.main and self.validation:
                metrics = self._validate_main(log)
        self.dist.barrier()
        return metrics

    def _gathered(self) -> contextlib.AbstractContextManager[None]:
        return gathered(self.players.values())

    def _validate_main(self, log: RunLog | None) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.validation:
            rounds = [Round(seed, direct=True) for seed in self.validation]
            # the learner itself, not what an engine holds (the EMA, in the MD recipes)
            defender = self.sampler.policy(DEFENDER, "learner", self.cfg.run.seed, greedy=True, hf=True)
            if DEFENDER in self.fixed:
                defender = replace(defender, backend=self.fixed[DEFENDER], adapter=None)
            nobody = Policy(defender.backend)  # direct rounds: the attacker sits out
            with self._precision(), torch.no_grad():
                play(self.game, nobody, defender, rounds, self.cfg.judge.retries)
            metrics = {f"val/{k}": v for k, v in (game_metrics(rounds) | refusal_rates(rounds)).items()}
            if log is not None:
                log.log(self.step, metrics, advance=False)
        return metrics

    # ------------------------------------------------------------------ logs and checkpoints

    def _log(self) -> RunLog:
        run = self.cfg.run
        return RunLog(
            self.run_dir,
            start_step=self.step,
            total_steps=run.steps,
            tensorboard=run.tensorboard,
            wandb_project=run.wandb_project if run.wandb else None,
            progress=run.progress,
            config=to_dict(self.cfg),
        )

    def _kept(self) -> tuple[Which, ...]:
        """The weight copies a checkpoint holds (the initial model is rebuilt from its name)."""
        return ("learner", "ema") if "ema" in self.algorithm.copies() else ("learner",)

    def state(self) -> CheckpointState:
        """What a checkpoint holds; sharded, without the tensors (``shards`` has them)."""
        keep = () if self.sharded else self._kept()
        state = CheckpointState(
            step=self.step,
            weights={
                weight_key(name, which): learner.player.weights(which)
                for name, learner in self.learners.items()
                for which in keep
            },
            optimizers={} if self.sharded else {name: o.optimizer.state_dict() for name, o in self.optimizers.items()},
            schedulers={name: o.scheduler.state_dict() for name, o in self.optimizers.items()},
            data={label.value: stream.state() for label, stream in self.streams.items()}
            | {sft_stream_key(role): stream.state() for role, stream in self.sft.items()},
            rng=rng_state(),
            algorithm=self.algorithm.state_dict(),
        )
        if self.opponents is not None:
            state["opponents"] = self.opponents.state_dict()
        return state

    def shards(self) -> dict[str, Any]:
        """This process's shards of every kept weight copy and optimizer state, laid out for
        torch.distributed.checkpoint (which reshards them on load, at any world size)."""
        out: dict[str, Any] = {}
        for name, learner in self.learners.items():
            for which in self._kept():
                out[weight_key(name, which)] = learner.player.shards(which)
            if learner.optimizer is not None:
                out[optimizer_key(name)] = learner.optimizer.shards(learner.player)
        return out

    def save(self) -> Path | None:
        path = None
        if self.sharded:  # every process writes its shards
            return save_sharded_checkpoint(
                self.run_dir, self.step, self.state(), self.shards(), self.cfg.run.keep_checkpoints, self.dist
            )
        if self.dist.main:
            path = save_checkpoint(self.run_dir, self.step, self.state(), self.cfg.run.keep_checkpoints)
            if self.opponents is not None and self.cfg.run.keep_checkpoints > 0:
                self.opponents.prune(checkpoint_step(checkpoints(self.run_dir)[0]))
        self.dist.barrier()
        return path

    def _resume_point(self, allow_change: Sequence[str]) -> ResumePoint | None:
        """What a resumed run continues from, checked before any model is loaded: the run's own
        config (changed keys refused unless allowed), a torn metrics tail (repaired) and the
        newest intact checkpoint (damaged newer ones are set aside, named in the message)."""
        changes: dict[str, Any] = {}
        if (self.run_dir / "config.yaml").exists():
            try:
                saved = load_config(self.run_dir / "config.yaml")
            except ConfigError as error:
                raise ConfigError(f"cannot resume: the run's own config does not load: {error}") from None
            changes = check_resumed_config(saved, self.cfg, allow_change)
        repaired = repair_metrics(self.run_dir / "metrics.jsonl") if self.dist.main else None
        point = newest_intact_checkpoint(self.run_dir)
        if point is None:
            return None
        path, state, skipped = point
        notes = [f"resuming from {path.name}"] + [f"skipped {reason}" for reason in skipped]
        notes += [repaired] if repaired else []
        notes += [f"changed {key}: {old!r} -> {new!r}" for key, (old, new) in changes.items()]
        if self.dist.main:
            newer = [p for p in checkpoints(self.run_dir) if checkpoint_step(p) > checkpoint_step(path)]
            notes += [f"set aside as {set_aside(p).name}" for p in newer]
            print("advgame train: " + "; ".join(notes), file=sys.stderr, flush=True)
        return ResumePoint(path, state, skipped, repaired, {key: [old, new] for key, (old, new) in changes.items()})

    def _restore(self, path: Path, state: CheckpointState | None = None) -> None:
        state = load_checkpoint(path) if state is None else state
        if bool(state.get("sharded")) != self.sharded:
            raise ConfigError(
                f"{path} was written with parallel.sharding={'fsdp2' if state.get('sharded') else 'none'}; "
                "resume it with the same parallel.sharding"
            )
        if self.sharded:
            self._restore_shards(path)
        for key, tensors in state["weights"].items():
            name, which = split_weight_key(key)
            self.learners[name].player.load_weights(which, tensors)
        for name, optimizer in self.optimizers.items():
            if not self.sharded:
                optimizer.optimizer.load_state_dict(state["optimizers"][name])
            optimizer.scheduler.load_state_dict(state["schedulers"][name])
        for label, stream in self.streams.items():
            stream.restore(state["data"][label.value])
        for role, stream in self.sft.items():
            stream.restore(state["data"][sft_stream_key(role)])
        restore_rng(state["rng"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))  # checkpoints before the hook have none
        if self.opponents is not None and "opponents" in state:  # a run without pools had none
            self.opponents.load_state_dict(state["opponents"])
        self.step = int(state["step"])

    def _restore_shards(self, path: Path) -> None:
        """Weights and optimizer states from a sharded checkpoint, resharded for this run's world size."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        tensors = self.shards()  # the layout to fill: this run's own shards
        load_shards(path, tensors)
        for name, learner in self.learners.items():
            for which in self._kept():
                learner.player.load_shards(which, tensors[weight_key(name, which)])
            if learner.optimizer is not None:
                module, optimizer = learner.player.learner_module(), learner.optimizer.optimizer
                set_optimizer_state_dict(module, optimizer, tensors[optimizer_key(name)])

    def export(self, folder: Path) -> None:
        """Loadable folders of every learner's policy (and EMA): ``folder/defender`` etc.
        (``folder/policy`` for a policy shared by both roles)."""
        fmt = GameFormat.of(self.cfg)  # commands that load the export play it in this format
        for name, learner in self.learners.items():
            exported: list[tuple[Which, Path]] = [("learner", folder / name)]
            if "ema" in self.algorithm.copies():
                exported.append(("ema", folder / f"{name}_ema"))
            for which, path in exported:
                learner.player.export(which, path)
                if self.dist.main:
                    write_format(path, fmt)


def train(cfg: TrainConfig, *, resume: bool = False, allow_change: Sequence[str] = ()) -> Path:
    """Train a run; ``resume`` continues it from its newest intact checkpoint, refusing a changed
    config unless each changed key is in ``allow_change`` (or ``config.RESUME_MAY_CHANGE``)."""
    return Trainer(cfg, resume=resume, allow_change=allow_change).train()
