"""The held-out measurements of a run, shared by ``advgame demo`` and ``advgame compare``: the
held-out seeds (half harmful, half benign) the defenders answer, and red-team runs of the run's
attackers against its initial defender on the held-out harmful seeds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from advgame_env import Game, Judge, Label, RuleJudge, Seed, bundled_seeds
from advgame_env.metrics import Rate
from agents import HFBackend, load_model
from agents.hf import BATCH_SIZE
from agents.policy import Policy
from algorithms.config import TrainConfig
from algorithms.evaluation.evaluate import checkpoint_models


def heldout(size: int | None) -> list[Seed]:
    """The held-out seeds, or the first ``size`` of them, half harmful and half benign."""
    seeds = bundled_seeds("heldout")
    if size is None:
        return seeds
    harmful = [s for s in seeds if s.label is Label.HARMFUL][: size // 2]
    return harmful + [s for s in seeds if s.label is Label.BENIGN][: size - len(harmful)]


def attacker_rows(
    cfg: TrainConfig,
    run: Path,
    n_seeds: int,
    *,
    steps: str = "0,last",
    judge: Judge | None = None,
    folder: Path | None = None,
) -> list[tuple[str, dict[str, Rate | float]]]:
    """Red-team runs of the run's attacker at ``steps`` (start and final by default) against the
    initial defender, judged by ``judge`` (default: the model-free one), records under ``folder``
    (default RUN/eval) in ``redteam_STEP`` (a rerun resumes from them)."""
    from algorithms.evaluation.redteam import RedTeamConfig, diversity, redteam, summarise

    seeds = [s for s in bundled_seeds("heldout") if s.label is Label.HARMFUL][:n_seeds]
    start = load_model(checkpoint_models(run, "defender", steps="0")[0][1])
    target = HFBackend(*start)
    game = Game(judge or RuleJudge(), replace(cfg.game, num_attacks=1, direct_fraction=0.0))
    prefill = cfg.rollout.think_prefill if cfg.game.attacker_think else ""
    rows: list[tuple[str, dict[str, Rate | float]]] = []
    for name, model in checkpoint_models(run, "attacker", steps=steps):
        backend = target if name == "step 0" else HFBackend(*load_model(model))
        policy = Policy(
            backend, cfg.roles.attacker.max_tokens, cfg.rollout.temperature, cfg.rollout.top_p, prefill=prefill
        )
        settings = {"attacker": model, "seeds": n_seeds}
        where = (folder or run / "eval") / f"redteam_{name.replace(' ', '_')}"
        # one batch as large as the backend's (the demo's 24 seeds x 2 samples): decoding 16 rows
        # costs most of what 48 do (benchmarks/eval_batch.py: the 48 rewrites 29.5 s -> 19.2 s)
        rc = RedTeamConfig(
            samples=2, target_max_tokens=cfg.roles.defender.max_tokens, baseline=False, batch_size=BATCH_SIZE
        )
        records = redteam(policy, target, game, seeds, where, rc, settings=settings, log=lambda _: None)
        figures: dict[str, Rate | float] = {**summarise(records), **diversity(records)}
        rows.append((name, figures))
    return rows
