"""The one training loop every algorithm shares.

    for step in steps:
        push the sampling weights (EMA or learner) to the rollout engine
        play a batch of rounds of each split, both in one batched   -> rewards
            call per phase (attacker, defender, judge)
        for split in (harmful, benign):                            # Self-RedTeam: both at once
            each trained player: examples -> loss -> optimizer step(s)
        EMA update; log; validate; checkpoint

Both splits are played before any update, by the policies of the step's start, on every
backend: as the reference, whose rollout engine is synced once per step (an in-process HF
sampler would otherwise play the benign split with the weights after the harmful update).
They are played together, a phase one generation over both splits' rounds: decoding a few rows
is bound by reading the weights, so 8 rows cost about what 4 do (the CPU demo's attacker).
As in the paper, each step gives each player one optimizer step per split and one EMA update;
Self-RedTeam instead takes ``minibatches`` steps on the two splits' samples mixed, as its
reference's replay buffer. Unlike the AdvGame reference code, the cosine schedule advances
once per optimizer step, over the optimizer steps the player actually takes.

The details sit one call away, beside this module: the rollout engines and the play of a batch
(``rollouts``), the generic update (``update``), the run's set-up (``run_setup``), opponent pools
and their meta-game (``opponents``), the step's figures (``metrics``) and the run's state with its
checkpoints (``checkpoints.RunState``, this trainer's base).
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from advgame_env import Game, Label, Round, Seed
from advgame_env.conversation import ConversationGame
from advgame_env.game import direct_seed_ids
from advgame_env.protocol import GenerationBackend
from advgame_env.roles import ATTACKER, DEFENDER, ROLES
from agents.models import load_model
from agents.policy import Policy
from algorithms.config import ConfigError, TrainConfig, save_config
from algorithms.training.algorithm import Example, build_algorithm
from algorithms.training.checkpoints import RunState, checkpoints, record_resume
from algorithms.training.distributed import Dist
from algorithms.training.judge_monitor import JudgeMonitor
from algorithms.training.metrics import Clock, StepMetrics, game_metrics, refusal_rates, validation_figures
from algorithms.training.opponents import EVERYONE, Match, Snapshot, match_figures, matches, meta_nash, opponent_pools
from algorithms.training.players import Player, Which, build_players
from algorithms.training.rollouts import Sampler, gathered, new_round, play, prefills
from algorithms.training.run_setup import (
    SPLITS,
    adapter_starts,
    bf16,
    build_judge,
    check_roles,
    extra_benign_seeds,
    extra_benign_stream,
    optimizer_steps,
    precision,
    read_sft_files,
    seed_file,
    seed_streams,
    sft_streams,
    start_model,
    trained_roles,
    validation_seeds,
)
from algorithms.training.runlog import RunLog
from algorithms.training.seed_stream import derived_seed, mixed_take
from algorithms.training.sft import sft_coef_at, sft_loss
from algorithms.training.update import Batch, Learner, Optimizer, minibatch_mean, update


class Trainer(RunState):
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
        seeds, self.validation = seed_file(cfg.data.seeds, "train"), validation_seeds(cfg)
        extra = extra_benign_seeds(cfg)
        read_sft_files(cfg)
        if not resume and (checkpoints(self.run_dir) or (self.run_dir / "metrics.jsonl").exists()):
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it, or set run.out_dir"
            )
        resumed = self._resume_point(allow_change) if resume else None  # before any model is loaded
        self.algorithm = build_algorithm(cfg.algorithm, cfg.rollout.max_model_len)
        shared = self.algorithm.shares_policy
        learns = {role for step in range(cfg.run.steps) for role in self.trained_roles(step)}
        check_roles(cfg, shared, self.fixed, learns)
        # A role that never learns in the run, of a policy shared with the other role, plays a
        # frozen copy of the starting weights, not the shared weights its rival is training
        # (Self-RedTeam's attacker-only baseline, S §2.3).
        frozen = set(ROLES) - learns - set(self.fixed)
        self.base_roles = frozen if shared and learns else set()
        device = self.dist.device
        self.sharded = cfg.parallel.sharding == "fsdp2"
        torch.manual_seed(cfg.run.seed)  # LoRA initialisation, identical on every process
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
            bf16=bf16(cfg, device),
        )
        self.learners = {name: Learner(name, player, ROLES if shared else (name,)) for name, player in players.items()}
        for learner in self.learners.values():
            if cfg.model.gradient_checkpointing:
                learner.player.enable_recompute()
            steps = optimizer_steps(cfg, self.algorithm, learner.roles)  # none: the schedule never trains it
            learner.optimizer = Optimizer(learner.player, cfg, steps) if steps else None
            learner.sft = sft_streams(cfg, learner.roles, learner.player.tokenizer, prefills(cfg))
        self.tokenizers = {role: player.tokenizer for role, player in self.players.items()}
        judge, audit = build_judge(cfg), cfg.judge.audit
        # judge.audit: a second judge re-scores a share of the verdicts; canaries ride in each call
        self.monitor = JudgeMonitor(audit, judge, build_judge(cfg, audit.judge), cfg.run.seed) if audit else None
        # game.turns > 1: the rounds are conversations (advgame_env.conversation)
        game_class = ConversationGame if cfg.game.turns > 1 else Game
        self.game = game_class(self.monitor.judge if self.monitor else judge, cfg.game)
        self.streams = seed_streams(cfg, seeds)
        self.extra_benign = extra_benign_stream(cfg, extra)
        self.direct_ids = direct_seed_ids([*seeds, *extra], cfg.game) if cfg.game.direct_rounds == "seed" else None
        self.opponents = opponent_pools(cfg, shared, self.run_dir)
        self.step = 0
        if resumed is not None:
            self._restore(resumed.path, resumed.state)
            resumed.state = None  # the tensors are in the models now
            if self.dist.main:
                record_resume(self.run_dir, resumed.record(self.step))
        self.sampler = Sampler(cfg, self.players, cfg.model.lora)
        # what the step under way is doing, as it starts (train() shows it on the progress bar)
        self.on_phase: Callable[[str], None] = lambda _: None

    # ------------------------------------------------------------------ the loop

    def train(self) -> Path:
        cfg = self.cfg
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        log = RunLog.of_run(cfg, self.run_dir, self.step) if self.dist.main else None
        if log is not None:
            self.on_phase = log.phase
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
        """One step: play both splits, build each player's examples, update, EMA; its figures."""
        step, clock, metrics = self.step, Clock(), StepMetrics()
        torch.manual_seed(derived_seed(self.cfg.run.seed, step, self.dist.rank))
        trained, which = self.trained_roles(step), self.sampling(step)
        self.sampler.sync(which)  # the rollout engines hold the policies of the step's start
        clock.lap("sync")
        # with opponent pools, each learning role's rival may be a snapshot (seeded by the step)
        drawn = self.opponents.draw(step, trained) if self.opponents is not None else {}
        played = self._play(which, matches(drawn))
        clock.lap("play")
        for batch in self._examples(played, metrics):
            if figures := self._update_learners(batch, trained):
                metrics.train[batch.split] = figures
        self._ema(trained)
        clock.lap("update")
        self.step += 1
        if self.opponents is not None:
            metrics.pool = self.opponents.metrics(step, drawn) | self._grow_pools()
            clock.lap("pool")
        metrics.seconds = clock.seconds()
        return metrics.flat()

    def play_splits(self) -> dict[Label, list[Round]]:
        """Both splits' next rounds, played as a step without opponent pools plays them; nothing learnt."""
        return {label: games[0][1] for label, games in self._play(self.sampling(self.step), [EVERYONE]).items()}

    def _examples(self, played: Mapping[Label, list[tuple[Match, list[Round]]]], metrics: StepMetrics) -> list[Batch]:
        """Each split's game figures (into ``metrics``) and its examples for the learners; one
        batch of both splits' examples where the algorithm updates on them mixed."""
        batches = []
        for s, (label, split_games) in enumerate(played.items()):
            figures: dict[str, float] = {}
            examples: list[Example] = []
            alone = len(split_games) == 1
            for match, rounds in split_games:
                everyone = self.dist.gather(rounds)  # the game figures of the global batch
                figures |= match_figures(match, game_metrics(everyone) | refusal_rates(everyone), alone)
                made = self.algorithm.examples(rounds, self.game, self.tokenizers, prefills(self.cfg), self.dist)
                # a match trains only its learning roles (the other side was a snapshot, or it is
                # trained in the match against the snapshot it drew)
                examples += made if alone else [e for e in made if e.role in match.learners]
            metrics.game[label.value] = figures
            batches.append(Batch(label.value, s, examples))
        if self.algorithm.mix_splits:  # one update on both splits' samples, mixed
            return [Batch(None, len(SPLITS), [e for batch in batches for e in batch.examples])]
        return batches

    def _update_learners(self, batch: Batch, trained: Sequence[str]) -> dict[str, dict[str, float]]:
        """Each learner's update on its examples of ``batch``, where it learns in one of the ``trained`` roles."""
        self.on_phase(f"updating on {len(batch.examples)} examples")
        out = {}
        for learner in self.learners.values():
            roles = [r for r in trained if r in learner.roles]
            if roles:  # a frozen opponent is never updated
                examples = [e for e in batch.examples if e.role in roles]
                out[learner.name] = self._update(learner, roles, examples, batch.index)
        return out

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
        sft_roles = [r for r in roles if r in learner.sft] if self._sft_coef() else []
        auxiliary = functools.partial(self._sft_terms, roles=sft_roles) if sft_roles else None
        assert learner.optimizer is not None  # it trains at this step, so its schedule has steps
        step = functools.partial(update, player, learner.optimizer, algorithm, dist=self.dist, auxiliary=auxiliary)
        return minibatch_mean(
            [step(examples[k::parts], micro_batch_size=micro, precision=self._precision()) for k in range(parts)]
        )

    def _ema(self, trained: Sequence[str]) -> None:
        """Each player that learnt this step moves its EMA towards its weights (where the algorithm keeps one)."""
        if "ema" not in self.algorithm.copies():
            return
        decay = self.algorithm.ema_decay
        if decay is None:
            raise ConfigError(f"algorithm {self.cfg.algorithm.name} keeps an EMA but gives no ema_decay")
        for learner in self.learners.values():
            if any(r in learner.roles for r in trained):
                learner.player.ema_update(decay)

    # ------------------------------------------------------------------ who learns, who plays

    def trained_roles(self, step: int) -> list[str]:
        """The roles whose player learns at ``step`` (``run_setup.trained_roles``: the schedule)."""
        return trained_roles(self.cfg, step)

    def sampling(self, step: int) -> dict[str, Which]:
        """Whose weights each role plays with at ``step``: the algorithm's sampler for a player
        that learns this step; a frozen player plays its final weights (its learner), not an
        EMA that stopped moving when the player stopped learning."""
        trained = self.trained_roles(step)
        learns = {role: any(r in lr.roles for r in trained) for lr in self.learners.values() for role in lr.roles}
        return {role: self.algorithm.sampler_of(role) if learns[role] else "learner" for role in ROLES}

    def _precision(self) -> contextlib.AbstractContextManager[None]:
        return precision(self.cfg, self.dist.device, self.sharded)

    def _sft_terms(self, player: Player, roles: list[str]) -> torch.Tensor:
        return torch.stack([self._sft_loss(player, role) for role in roles]).sum()

    def _sft_coef(self) -> float:
        """The SFT term's coefficient at this step (``algorithm.sft_stop_step``: off late; 0 without a file)."""
        a = self.cfg.algorithm
        if a.sft_coef is None:  # no SFT file
            return 0.0
        return sft_coef_at(self.step, a.sft_coef, a.sft_stop_step, a.sft_decay_steps or 0)

    def _sft_loss(self, player: Player, role: str) -> torch.Tensor:
        a = self.cfg.algorithm
        assert a.sft_batch_size is not None  # set: there is an SFT file
        batch = self.sft[role].take(a.sft_batch_size)
        with player.active("learner") as model:
            loss = sft_loss(model, batch, player.tokenizer.pad_token_id, self.cfg.rollout.max_model_len)
        return self._sft_coef() * loss

    # ------------------------------------------------------------------ play

    def _seeds(self, label: Label, split: int, n: int) -> list[Seed]:
        """A split's next ``n`` seeds. With ``data.extra_benign_seeds`` each benign one comes from
        that file with probability ``data.extra_benign_share`` (the same draw on every process)."""
        share, extra = self.cfg.data.extra_benign_share, self.extra_benign
        if label is not Label.BENIGN or extra is None or share is None:
            return self.streams[label].take(n)
        draw = random.Random(derived_seed(self.cfg.run.seed, self.step, split, 13))
        return mixed_take(self.streams[label], extra, share, n, draw)

    def _play(self, which: Mapping[str, Which], games: Sequence[Match]) -> dict[Label, list[tuple[Match, list[Round]]]]:
        """The rounds of each match on one batch of each split's seeds (each stream moves once),
        played by the policies of the step's start (see the top), both splits' rounds of a match
        in one ``play`` call; sharded players are gathered for it, so each process samples as
        long as it needs. A match where the defender does not learn skips the direct rounds."""
        cfg, dist = self.cfg, self.dist
        drawn = {}
        for split, label in enumerate(SPLITS):
            # every process draws the same global batch and plays its own share of it
            batch = self._seeds(label, split, cfg.data.batch_size * dist.world)
            mine = batch[dist.rank :: dist.world]
            pick = random.Random(derived_seed(cfg.run.seed, self.step, split, dist.rank, 7))
            direct = [pick.random() < cfg.game.direct_fraction for _ in mine]  # drawn always: a stable stream
            if self.direct_ids is not None:  # Self-RedTeam: fixed per seed row
                direct = [s.id in self.direct_ids for s in mine]
            drawn[label] = list(zip(mine, direct, strict=True))
        out: dict[Label, list[tuple[Match, list[Round]]]] = {label: [] for label in SPLITS}
        with gathered(self.players.values()):
            for n, match in enumerate(games):
                rounds = {
                    label: [new_round(self.game, s, direct=d) for s, d in pairs if DEFENDER in match.learners or not d]
                    for label, pairs in drawn.items()
                }
                # the first match samples as a run without pools does; the others with seeds of their own
                seed = derived_seed(cfg.run.seed, self.step, 0, dist.rank, *((31, n) if n else ()))
                attacker = self._rollout_policy(ATTACKER, which[ATTACKER], seed, match.against.get(ATTACKER))
                defender = self._rollout_policy(DEFENDER, which[DEFENDER], seed + 1, match.against.get(DEFENDER))
                together = [r for label in SPLITS for r in rounds[label]]
                if together:
                    with self._precision(), torch.no_grad():
                        play(self.game, attacker, defender, together, cfg.judge.retries, self._phase_of(n, len(games)))
                for label in SPLITS:
                    out[label].append((match, rounds[label]))
        return out

    def _phase_of(self, n: int, matches: int) -> Callable[[str], None]:
        """``on_phase`` with the match, where opponent pools play several."""
        if matches == 1:
            return self.on_phase
        return lambda text: self.on_phase(f"match {n + 1}/{matches}: {text}")

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

    def _grow_pools(self) -> dict[str, float]:
        """After a step: every ``snapshot_every`` steps each role's sampling weights join its pool
        (LoRA: the adapter's tensors; full weights: a file of the run folder), and with meta_nash
        every ``meta_every`` steps the mixtures are recomputed. The figures for the log."""
        assert self.opponents is not None
        o, step = self.cfg.opponents, self.step
        if step % o.snapshot_every == 0:
            which = self.sampling(step)  # what each role plays with next
            self.opponents.grow(
                step, lambda role: self.players[role].weights(which[role]), self.cfg.model.lora, self.dist
            )
        if o.draw == "meta_nash" and o.meta_every is not None and step % o.meta_every == 0:
            return self._meta_nash()
        return {}

    def _meta_nash(self) -> dict[str, float]:
        """The pools' meta-game, solved on a cross-play of their members (``opponents.meta_nash``)."""
        assert self.opponents is not None
        harmful, retries = self.streams[Label.HARMFUL].seeds, self.cfg.judge.retries
        return meta_nash(
            self.opponents, self._member_policy, self.game, harmful, self.step, retries, self.dist, self._precision()
        )

    def _member_policy(self, role: str, member: int, seed: int) -> Policy:
        """A pool member as a policy: the player as it is now (sampling weights), or a snapshot."""
        assert self.opponents is not None
        which = self.sampling(self.step)[role]
        snapshot = next((s for s in self.opponents.pools[role] if s.step == member), None)  # None: CURRENT
        return (
            self.sampler.policy(role, which, seed)
            if snapshot is None
            else self._rollout_policy(role, which, seed, snapshot)
        )

    # ------------------------------------------------------------------ validation

    def _validate(self, log: RunLog | None) -> dict[str, float]:
        """The learner defender answers held-out seeds directly (greedy); judged and keyword-classified."""
        metrics: dict[str, float] = {}
        with gathered(self.players.values()):  # the main process alone runs the sharded defender's forwards
            if self.dist.main and self.validation:
                # the learner itself, not what an engine holds (the EMA, in the MD recipes)
                defender = self.sampler.policy(DEFENDER, "learner", self.cfg.run.seed, greedy=True, hf=True)
                if DEFENDER in self.fixed:
                    defender = replace(defender, backend=self.fixed[DEFENDER], adapter=None)
                metrics = validation_figures(
                    self.game, defender, self.validation, self.cfg.judge.retries, self._precision()
                )
                if log is not None:
                    log.log(self.step, metrics, advance=False)
        self.dist.barrier()
        return metrics


def train(cfg: TrainConfig, *, resume: bool = False, allow_change: Sequence[str] = ()) -> Path:
    """Train a run; ``resume`` continues it from its newest intact checkpoint, refusing a changed
    config unless each changed key is in ``allow_change`` (or ``config.RESUME_MAY_CHANGE``)."""
    return Trainer(cfg, resume=resume, allow_change=allow_change).train()
