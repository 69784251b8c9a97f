"""A training run's set-up, before the loop: the judge, each player's start (model folder or
LoRA adapter, checked before any model loads), the seed files and their streams, the auxiliary
SFT files and the precision the updates run in."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, cast

import torch

from advgame_env import Label, RuleJudge, Seed, bundled_seeds, load_seeds
from advgame_env.judges import Judge
from advgame_env.roles import ROLES
from advgame_env.seeds import Split
from agents.backends import build_backend
from agents.models import adapter_base, portable_name, resolve_model
from agents.openai_backend import OpenAIBackend
from agents.replicas import ReplicatedBackend
from algorithms.config import ConfigError, TrainConfig
from algorithms.training.per_role import PerRole
from algorithms.training.seed_stream import SeedStream
from algorithms.training.sft import SFTExample, load_sft, read_sft

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from algorithms.config import JudgeConfig
    from algorithms.training.algorithm import Algorithm, Example

SPLITS = (Label.HARMFUL, Label.BENIGN)  # every step plays (and trains on) a batch of each, in this order
SFT_SHUFFLE = PerRole(attacker=19, defender=17)  # each role's SFT stream: shuffled by the run seed + this


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
            tokenizer = cast("PreTrainedTokenizerBase", backend.tokenizer)  # a Hugging Face one, either engine's
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
    chosen = cfg.roles[role].model if role in ROLES else None  # policy: a shared one, none of its own
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


def seed_file(spec: str, split: Split) -> list[Seed]:
    """The seeds of ``data.seeds`` or ``data.validation_seeds``: a JSONL file, or the bundled set's ``split``."""
    return bundled_seeds(split) if spec == "bundled" else load_seeds(spec)


def seed_streams(cfg: TrainConfig, seeds: Sequence[Seed]) -> dict[Label, SeedStream[Seed]]:
    """Each split's endless stream of training seeds, shuffled by the run seed."""
    return {
        label: SeedStream([s for s in seeds if s.label is label], cfg.run.seed + i) for i, label in enumerate(SPLITS)
    }


EXTRA_BENIGN_SHUFFLE = 23  # the extra benign seeds' stream: shuffled by the run seed + this


def extra_benign_seeds(cfg: TrainConfig) -> list[Seed]:
    """The seeds of ``data.extra_benign_seeds`` (none without it); every one must be benign."""
    if cfg.data.extra_benign_seeds is None:
        return []
    seeds = load_seeds(cfg.data.extra_benign_seeds)
    harmful = [s.id for s in seeds if s.label is not Label.BENIGN]
    if harmful:
        raise ConfigError(
            f"config.data.extra_benign_seeds: {cfg.data.extra_benign_seeds} holds {len(harmful)} harmful seeds "
            f"(first: {harmful[0]}); the file is mixed into the benign split only: put harmful seeds in data.seeds"
        )
    return seeds


def extra_benign_stream(cfg: TrainConfig, seeds: Sequence[Seed]) -> SeedStream[Seed] | None:
    """The endless stream of the extra benign seeds, shuffled by the run seed (None without them)."""
    return SeedStream(seeds, cfg.run.seed + EXTRA_BENIGN_SHUFFLE) if seeds else None


def validation_seeds(cfg: TrainConfig) -> list[Seed]:
    """The held-out seeds validation answers: up to half harmful, the rest benign."""
    seeds = seed_file(cfg.data.validation_seeds, "heldout")
    half = cfg.data.validation_size // 2
    harmful = [s for s in seeds if s.label is Label.HARMFUL][:half]
    benign = [s for s in seeds if s.label is Label.BENIGN][: cfg.data.validation_size - len(harmful)]
    return harmful + benign


def sft_files(cfg: TrainConfig) -> dict[str, str]:
    """The auxiliary SFT file of each role that has one (read only with a coefficient)."""
    if not cfg.algorithm.sft_coef:  # set with a file
        return {}
    return {role: path for role in ROLES if (path := cfg.roles[role].sft_data)}


def read_sft_files(cfg: TrainConfig) -> None:
    """Every SFT file the run names is read (and checked) before any model loads."""
    for path in sft_files(cfg).values():
        read_sft(path)


def sft_streams(
    cfg: TrainConfig, roles: Sequence[str], tokenizer: PreTrainedTokenizerBase, prefills: Mapping[str, str]
) -> dict[str, SeedStream[SFTExample]]:
    """The auxiliary SFT chats of each of a learner's ``roles`` that has a file."""
    return {
        role: SeedStream(load_sft(path, tokenizer, prefills[role]), cfg.run.seed + SFT_SHUFFLE[role])
        for role, path in sft_files(cfg).items()
        if role in roles
    }


def bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the players compute in bf16 (``model.precision``; auto: where the GPU has it;
    native: where this machine multiplies bf16 in hardware, GPU or CPU)."""
    p = cfg.model.precision
    if p == "native":
        from agents.hf import native_bfloat16

        return native_bfloat16(device)
    return p == "bf16" or (p == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())


def precision(cfg: TrainConfig, device: torch.device, sharded: bool) -> contextlib.AbstractContextManager[None]:
    """The context of an update's forwards: autocast to bf16 for unsharded players. Sharded
    players compute in bf16 through FSDP2's MixedPrecisionPolicy (``shard_module``) instead,
    which keeps no cast cache of the weights."""
    if bf16(cfg, device) and not sharded:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_roles(cfg: TrainConfig, shares_policy: bool, fixed: Collection[str], learns: Collection[str]) -> None:
    """Who plays each role fits the run: a fixed backend plays a role that never learns, and has
    no weights for an opponent pool to snapshot; a shared policy starts from ``model.name``."""
    if not set(fixed) <= set(ROLES) - set(learns):
        raise ConfigError(
            "a fixed backend plays a frozen role (attacker or defender, not trained under train.schedule "
            f"{cfg.train.schedule}), not {sorted(set(fixed) - (set(ROLES) - set(learns)))}"
        )
    if fixed and cfg.opponents.pooled:  # a fixed backend has no weights to snapshot
        raise ConfigError(
            f"config.opponents.draw: {cfg.opponents.draw} keeps a pool of each player's snapshots, but "
            f"{', '.join(sorted(fixed))} is played by a fixed backend; set opponents.draw=latest"
        )
    if shares_policy and (cfg.roles.attacker.model or cfg.roles.defender.model):
        raise ConfigError(
            f"config.roles.attacker.model / roles.defender.model: algorithm {cfg.algorithm.name} plays both roles with "
            "one policy, which starts from model.name; unset them"
        )


def trained_roles(cfg: TrainConfig, step: int) -> list[str]:
    """The roles whose player learns at ``step``: ``train.schedule`` (a frozen opponent, or
    turns of ``train.period`` steps, the attacker first), within ``roles.<role>.train``."""
    t = cfg.train
    if t.schedule == "alternate":
        scheduled: tuple[str, ...] = (ROLES[(step // t.period) % 2],)
    else:
        scheduled = ROLES if t.schedule == "both" else (t.schedule,)
    return [r for r in scheduled if cfg.roles[r].train]


def optimizer_steps(cfg: TrainConfig, algorithm: Algorithm[Example], roles: Collection[str]) -> int:
    """How many optimizer steps the learner of ``roles`` takes in the run: its cosine schedule's
    length (a player of an alternating baseline steps only while it trains)."""
    per_step = algorithm.minibatches * (1 if algorithm.mix_splits else len(SPLITS))
    steps = sum(any(r in roles for r in trained_roles(cfg, k)) for k in range(cfg.run.steps))
    return steps * per_step
