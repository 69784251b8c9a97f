"""The safety game as a PettingZoo parallel environment, ``advgame_v0``.

One episode is one round, in two steps with both agents alive throughout:

1. ``reset`` draws a seed; ``attacker_0`` observes its task, ``defender_0`` nothing yet.
   ``step({"attacker_0": (A rewrites), ...})``: the defender's action is ignored; each valid
   rewrite is shown to ``defender_0`` (``""`` in slots whose rewrite failed).
2. ``step({"defender_0": (A tuples of D answers), ...})``: the attacker's action is ignored;
   both agents are judged and paid, and the episode ends.

The reward per agent is the mean of its samples' rewards (0.0 if every sample was excluded);
per-sample rewards, failures and the DPO pairs are in ``infos``. For many rounds at once use
:class:`advgame_env.game.Game` directly: one batched judge call per phase.

``turns=K`` (K > 1) makes the episode a conversation game of up to 2K steps
(:mod:`advgame_env.conversation`): both actions and observations are then A x D slots, one
per conversation, and ``infos`` carry ``turn``, ``to_act`` (the agent whose move it is, None
at the end) and ``history`` (each conversation's visible chat). ``turns=1`` is the game above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Unpack

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec_wrapper
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from advgame_env import roles
from advgame_env.conversation import ConversationGame, Dialogue
from advgame_env.game import Game, GameConfig, GameSwitches, Phase, Round, direct_seed_ids
from advgame_env.judges import Judge
from advgame_env.rewards import mean_or_none
from advgame_env.rule_judge import RuleJudge
from advgame_env.seeds import Seed, bundled_seeds
from advgame_env.spaces import Observation, Unicode, typed

ATTACKER, DEFENDER = roles.agent_id(roles.ATTACKER), roles.agent_id(roles.DEFENDER)  # agent ids
OBSERVATION_CHARS = 1 << 20


RENDER_MODES = ("human", "ansi")


class EnvArguments(GameSwitches, total=False):
    """The keyword arguments of :class:`AdvGameEnv` (and so of ``parallel_env``, ``raw_env``
    and ``env``): its own four and every :class:`GameConfig` switch."""

    judge: Judge | None
    seeds: list[Seed] | None
    render_mode: str | None
    config: GameConfig | None


# Actions are checked by the game (a text, or a generation with .text, per slot), not typed here
class AdvGameEnv(ParallelEnv[str, Observation, object]):
    """``judge`` defaults to the model-free :class:`RuleJudge`, ``seeds`` to the bundled
    training split; every other keyword is a :class:`GameConfig` switch (``num_attacks``,
    ``num_responses``, ``optimistic_attacker``, ``attacker_think``, ``faithfulness_check``,
    ``attacker_judge``, ``judging``, ``reward_rule``, ``max_attack_chars``, ...)."""

    metadata: ClassVar[dict[str, object]] = {
        "name": "advgame_v0",
        "render_modes": list(RENDER_MODES),
        "is_parallelizable": True,
    }

    def __init__(
        self,
        judge: Judge | None = None,
        seeds: list[Seed] | None = None,
        render_mode: str | None = None,
        config: GameConfig | None = None,
        **switches: Unpack[GameSwitches],
    ) -> None:
        if render_mode not in (None, *RENDER_MODES):
            raise ValueError(f"render_mode must be one of {list(RENDER_MODES)} or None, not {render_mode!r}")
        if config is not None and switches:
            raise TypeError("pass either config= or individual switches, not both")
        self.config = config or GameConfig(**switches)
        self.multi_turn = self.config.turns > 1
        game_class = ConversationGame if self.multi_turn else Game
        self.game = game_class(judge or RuleJudge(), self.config)
        self.seeds = list(seeds) if seeds is not None else bundled_seeds("train")
        if not self.seeds:
            raise ValueError("the seed list is empty")
        seed_rows = self.config.direct_rounds == "seed"
        self._direct_ids = direct_seed_ids(self.seeds, self.config) if seed_rows else None
        self.render_mode = render_mode
        self.possible_agents = [ATTACKER, DEFENDER]
        self.agents = list[str]()
        self._rng = np.random.default_rng()
        self.round: Round | None = None

        a, d = self.config.num_attacks, self.config.num_responses
        attack_text, answer_text = Unicode(self.config.max_attack_chars), Unicode(self.config.max_response_chars)
        self._observation_spaces: dict[str, spaces.Space[object]] = {
            ATTACKER: Unicode(OBSERVATION_CHARS),
            DEFENDER: spaces.Tuple([Unicode(OBSERVATION_CHARS)] * a),
        }
        self._action_spaces: dict[str, spaces.Space[object]] = {
            ATTACKER: spaces.Tuple([attack_text] * a),
            DEFENDER: spaces.Tuple([spaces.Tuple([answer_text] * d)] * a),
        }
        if self.multi_turn:  # one slot per conversation, for both agents (see the module docstring)
            seen = Unicode(max(OBSERVATION_CHARS, 2 * self.config.max_conversation_chars))
            grid = spaces.Tuple([spaces.Tuple([seen] * d)] * a)
            self._observation_spaces = {ATTACKER: grid, DEFENDER: grid}
            self._action_spaces[ATTACKER] = spaces.Tuple([spaces.Tuple([attack_text] * d)] * a)

    def observation_space(self, agent: str) -> spaces.Space[object]:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space[object]:
        return self._action_spaces[agent]

    # ------------------------------------------------------------------ episode

    def reset(
        self, seed: int | None = None, options: dict[str, object] | None = None
    ) -> tuple[dict[str, Observation], dict[str, dict[str, object]]]:
        """``options``: ``{"seed_id": id}`` plays that seed, ``{"direct": bool}`` forces or
        forbids a direct round (the seed goes to the defender unchanged). A value of another
        type is a TypeError; other keys are ignored, as PettingZoo's API test requires."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise TypeError(f"reset options must be a dict or None, not {type(options).__name__}")
        seed_id, forced = options.get("seed_id"), options.get("direct")
        if seed_id is not None and not isinstance(seed_id, str):
            raise TypeError(f"reset option 'seed_id' must be a seed id (str), not {seed_id!r}")
        # bool("false") is True: only a real bool forces or forbids a direct round
        if forced is not None and not isinstance(forced, (bool, np.bool_)):
            raise TypeError(f"reset option 'direct' must be True or False, not {forced!r}")
        chosen = self._pick_seed(seed_id)
        drawn = self._rng.random() < self.config.direct_fraction  # drawn always, so the stream is stable
        if self._direct_ids is not None:  # fixed per seed (direct_rounds: seed)
            drawn = chosen.id in self._direct_ids
        direct = bool(drawn if forced is None else forced)
        self.round = Dialogue(chosen, direct=direct) if self.multi_turn else Round(chosen, direct=direct)
        self.agents = list(self.possible_agents)
        return self._observations(), self._infos()

    def _pick_seed(self, seed_id: str | None) -> Seed:
        index = int(self._rng.integers(len(self.seeds)))  # drawn always, so the stream is stable
        if seed_id is None:
            return self.seeds[index]
        for candidate in self.seeds:
            if candidate.id == seed_id:
                return candidate
        raise KeyError(f"no seed with id {seed_id!r} in this environment's seed list")

    def step(
        self, actions: dict[str, object]
    ) -> tuple[
        dict[str, Observation], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, object]]
    ]:
        round_ = self.round
        if round_ is None or not self.agents:
            raise RuntimeError("the round is over (or never started): call reset() first")
        if not isinstance(actions, Mapping):
            raise TypeError(
                f"step() takes a dict of actions keyed by agent ({ATTACKER!r}, {DEFENDER!r}), "
                f"not {type(actions).__name__}"
            )
        if round_.phase is Phase.ATTACK:
            self.game.attack([round_], [actions.get(ATTACKER)])
        else:
            self.game.respond([round_], [actions.get(DEFENDER)])
        rewards = {ATTACKER: 0.0, DEFENDER: 0.0}
        if round_.phase is Phase.DONE:
            rewards = {
                ATTACKER: _mean(round_.attacker_rewards),
                DEFENDER: _mean([r for row in round_.defender_rewards for r in row]),
            }
        done = round_.phase is Phase.DONE
        observations, infos = self._observations(), self._infos()
        terminations = {agent: done for agent in self.agents}
        truncations = {agent: False for agent in self.agents}
        if done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    # ------------------------------------------------------------------ views

    def _observations(self) -> dict[str, Observation]:
        assert self.round is not None
        if isinstance(self.round, Dialogue) and isinstance(self.game, ConversationGame):
            return {ATTACKER: self.game.attacker_views(self.round), DEFENDER: self.game.defender_views(self.round)}
        return {
            ATTACKER: self.game.attacker_observation(self.round),
            DEFENDER: self.game.defender_observation(self.round),
        }

    def _infos(self) -> dict[str, dict[str, object]]:
        assert self.round is not None
        r = self.round
        common: dict[str, object] = {
            "phase": r.phase.value,
            "seed_id": r.seed.id,
            "label": r.seed.label.value,
            "direct": r.direct,
        }
        if isinstance(r, Dialogue):
            to_act = None if r.phase is Phase.DONE else ATTACKER if r.phase is Phase.ATTACK else DEFENDER
            history = [[c.messages() for c in row] for row in r.conversations]
            common |= {"turn": min(r.turn, self.config.turns), "to_act": to_act, "history": history}
            common["conversations"] = [[c.record() for c in row] for row in r.conversations]
        pair = r.attacker_pair()
        return {
            ATTACKER: {
                **common,
                "samples": [a.record() for a in r.attacks],
                "rewards": r.attacker_rewards if r.attacks else [],
                "pairs": [list(pair)] if pair else [],
            },
            DEFENDER: {
                **common,
                "samples": [[s.record() for s in row] for row in r.responses],
                "rewards": r.defender_rewards,
                "pairs": [list(p) for p in r.defender_pairs()],
            },
        }

    def render(self) -> str | None:
        if self.round is None:
            return None
        text = transcript(self.round)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        self.round = None


def _mean(rewards: list[float | None]) -> float:
    value = mean_or_none(rewards)
    return 0.0 if value is None else float(value)


def _show(value: float | None) -> str:
    return "excluded" if value is None else f"{value:+.2f}"


def transcript(r: Round) -> str:
    """A readable account of a round: seed, each attack, each answer, verdicts and rewards."""
    lines = [f"seed {r.seed.id} [{r.seed.label.value}]{' (direct)' if r.direct else ''}: {r.seed.prompt}"]
    for a, attack in enumerate(r.attacks):
        status = attack.failure.value if attack.failure else "ok"
        lines.append(f"  attack {a} [{status}] reward {_show(attack.reward)}: {attack.public or attack.raw[:200]!r}")
        if attack.reasoning:
            lines.append(f"    (hidden reasoning: {attack.reasoning[:200]!r})")
        for d, response in enumerate(r.responses[a] if r.responses else []):
            status = response.failure.value if response.failure else "ok"
            mark = " <- judged for the attacker" if attack.selected == d and not r.direct else ""
            text = response.public or response.raw[:200]
            lines.append(f"    answer {d} [{status}] reward {_show(response.reward)}{mark}: {text[:400]!r}")
    for a, row in enumerate(r.conversations if isinstance(r, Dialogue) else []):
        for d, conversation in enumerate(row):
            how = "ended" if conversation.ended else "truncated" if conversation.truncated else "open"
            failure = conversation.attacker_failure or conversation.defender_failure
            lines.append(f"  conversation ({a}, {d}) [{failure.value if failure else how}]:")
            lines += [f"    {m['role']}: {m['content'][:200]!r}" for m in conversation.messages()]
    return "\n".join(lines)


def parallel_env(**kwargs: Unpack[EnvArguments]) -> AdvGameEnv:
    return AdvGameEnv(**kwargs)


class AECGame(parallel_to_aec_wrapper):
    """The parallel game turned AEC (the attacker acts first in each step); its observations
    say their ``dtype`` as the spaces do (see :mod:`advgame_env.spaces`)."""

    def observe(self, agent: str) -> object:
        return typed(super().observe(agent))


def raw_env(**kwargs: Unpack[EnvArguments]) -> AECGame:
    """The same game as an AEC environment, without PettingZoo's checking wrappers."""
    return AECGame(parallel_env(**kwargs))


def env(**kwargs: Unpack[EnvArguments]) -> OrderEnforcingWrapper[str, object, object]:
    """The AEC environment as PettingZoo's own environments ship it: ``raw_env`` in the
    ``OrderEnforcingWrapper`` (calls out of order are clear errors). The out-of-bounds and
    illegal-action wrappers apply to discrete actions only; text actions have no such checks
    there (the game parses and penalises malformed text)."""
    return OrderEnforcingWrapper(raw_env(**kwargs))
