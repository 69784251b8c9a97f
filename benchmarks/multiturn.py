"""What a second turn costs: one batch of 2-turn conversations against one batch of single-turn
rounds, side by side in one process (interleaved), on the bundled SmolLM2-135M-Instruct.

    python benchmarks/multiturn.py [--json FILE] [--repeats 2] [--tiny]

The CPU demo's game (A = 2 attacks, D = 8 answers of 24 tokens, sampled, the model-free judge) on
the same training seeds. The attacker is scripted (each message is the seed in the ``<prompt>``
format, a test double of a model, ``agents.testing.ScriptedBackend``), so the figures are the
defender's and the judge's share of a step: ``play`` (both turns' answers and judging) and
``update`` (the defender's AdvGame-DPO-MD loss and backward on the batch's pairs, its trajectories
two segments long in the 2-turn game). The attacker's own generation would add about as much again
per turn. Reports the seconds of each and the 2-turn / 1-turn ratios.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
from common import describe_machine, interleaved

from advgame_env import GameConfig, Label, RuleJudge, bundled_seeds
from advgame_env.conversation import ConversationGame
from advgame_env.game import Game
from agents import HFBackend, load_model, tiny_model
from agents.policy import Policy
from agents.testing import ScriptedBackend
from algorithms.algorithm_configs import DPOMDConfig
from algorithms.training.players import FullPlayer
from algorithms.training.preference import PreferenceOptimization
from algorithms.training.rollouts import new_round, play

SEEDS_PER_LABEL = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny random model: checks the script, measures nothing"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = tiny_model(seed=0) if args.tiny else load_model("smollm2-135m-instruct")
    train = bundled_seeds("train")
    seeds = [s for label in Label for s in [s for s in train if s.label is label][:SEEDS_PER_LABEL]]

    def reply(chat: list[dict[str, str]]) -> str:
        text = chat[-1]["content"]
        seed = next(s for s in seeds if s.prompt in text)
        return f"<prompt>{seed.prompt}</prompt>"

    attacker = Policy(ScriptedBackend(reply), max_tokens=64)
    defender = Policy(HFBackend(model, tokenizer, batch_size=32), max_tokens=24, temperature=1.0, seed=0)
    config = GameConfig(num_attacks=2, num_responses=8, attacker_think=False, judge_truncated_responses=True)
    games: dict[str, Game] = {
        "1 turn": Game(RuleJudge(), config),
        "2 turns": ConversationGame(RuleJudge(), replace(config, turns=2)),
    }
    player = FullPlayer("defender", model, tokenizer, {"ema"})
    dpo = PreferenceOptimization(DPOMDConfig(), 2048)
    played: dict[str, list] = {}

    def playing(name: str):
        def run() -> None:
            game = games[name]
            played[name] = play(game, attacker, defender, [new_round(game, s) for s in seeds])

        return run

    def updating(name: str):
        def run() -> None:
            pairs = [p for p in dpo.examples(played[name], games[name], tokenizer) if p.role == "defender"]
            losses, _ = dpo.loss(player, pairs)
            losses.sum().backward()
            model.zero_grad()

        return run

    plays = interleaved({name: playing(name) for name in games}, repeats=args.repeats)
    updates = interleaved({name: updating(name) for name in games}, repeats=args.repeats)
    turns = [
        sum(t.response is not None for t in c.turns) for r in played["2 turns"] for row in r.conversations for c in row
    ]
    result = {
        "machine": describe_machine(),
        "play_s": plays,
        "update_s": updates,
        "play_ratio": plays["2 turns"] / plays["1 turn"],
        "update_ratio": updates["2 turns"] / updates["1 turn"],
        "step_ratio": (plays["2 turns"] + updates["2 turns"]) / (plays["1 turn"] + updates["1 turn"]),
        "answered_turns_per_conversation": sum(turns) / len(turns),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
