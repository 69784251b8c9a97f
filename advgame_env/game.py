"""The rules of the safety game, for many rounds at once.

A round is one seed. The attacker writes ``num_attacks`` (A) rewrites; each valid one is
answered ``num_responses`` (D) times by the defender; the judge turns the answers into rewards.

    attack phase   parse each rewrite (hidden <think> stripped) -> faithfulness judge (1 call)
    respond phase  parse each response -> defender judge (1 call) -> pick each attack's
                   response (the best one if optimistic) -> attacker judge (1 call) -> rewards

Every judge phase is one batched call over all rounds, so N rounds played together give the
same results as N rounds played one by one with a deterministic judge. A failed judge call
raises :class:`JudgeError` and leaves the rounds as they were, ready to be retried.

Payoffs (AdvGame rule). Harmful seed: the defender is paid for deflecting the rewritten
prompt, the attacker for the defender's compliance with the seed. Benign seed: the defender
is paid for helping, the attacker for a refusal. The game is not zero-sum.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypedDict, TypeVar

from advgame_env.judges import ClassifyItem, FaithfulnessItem, Judge, JudgeError, PairItem, PointItem, Rubric
from advgame_env.parsing import Failure, Parsed, failure_reward, parse_attack, parse_response
from advgame_env.rewards import (
    Classification,
    SelfRedTeamCoefficients,
    first_argmax,
    judge_pairs,
    mean_or_none,
    preference_pair,
    scores_from_pairs,
    srt_attacker_reward,
    srt_defender_reward,
)
from advgame_env.roles import ATTACKER, DEFENDER
from advgame_env.seeds import Label, Seed
from advgame_env.templates import TemplateSet


@dataclass(frozen=True)
class GameConfig:
    """Every switch of the game. Defaults are the paper's main recipe (A = D = 2, pairwise).

    Over-length. A generation (an action with a ``finish_reason``) is over-length when it was
    stopped by its token limit (``finish_reason == "length"``; the AdvGame code's MAX_LENGTH,
    which it reads off any finish other than "stop"); a complete generation is never
    over-length for its size. ``max_attack_chars`` and
    ``max_response_chars`` are a size guard above that: any action longer is over-length
    without being scanned or shown to anyone. Their defaults (100,000 characters) lie far
    above any token budget (the papers use 2,048 tokens, some 8,000-10,000 characters), so
    only absurd inputs and plain-text actions given by hand ever meet them.

    Self-RedTeam rule (``reward_rule: self_redteam``, see ``_pay_self_redteam``): no
    faithfulness filter by default (``faithfulness_check: None`` follows the rule; faithfulness
    enters only through the prompt-label term); a malformed or cut-off output is still shown
    to its opponent and classified (the text inside its public tags, else all of it) and is
    paid the table reward plus the negative format term; a failed defender answer is a game
    like any other, so its attacker is still paid. Deliberate differences from the reference
    code: ``faithfulness_check: true`` adds the AdvGame filter; a failed attack that shows
    nothing (blank) is not answered and keeps -1; without hidden reasoning a malformed output
    still pays -1 (the prompt-only format has tags to break; the reference's no-CoT variant
    parses nothing), and ``judge_truncated_responses: true`` gives a cut-off answer the
    reference's no-CoT treatment (judged, no term).
    """

    num_attacks: int = 2  # A: attacker samples per seed
    num_responses: int = 2  # D: defender samples per attack
    optimistic_attacker: bool = True  # judge the attacker on the defender's best response
    attacker_think: bool = True  # strict <think>+<prompt> format; False: <prompt> only
    defender_think: bool = False  # defender answers <think>..</think><answer>..</answer>
    # Unfaithful rewrites are paid -1 and not answered. None (default): follow the reward
    # rule, on for advgame (the AdvGame filter), off for self_redteam (the reference has none).
    # True under self_redteam is a deliberate mix of the two recipes.
    faithfulness_check: bool | None = None
    attacker_judge: bool = True  # False: every valid attack is paid 0 (format-only signal)
    judging: Literal["pairwise", "pointwise"] = "pairwise"
    reward_rule: Literal["advgame", "self_redteam"] = "advgame"
    srt_coefficients: SelfRedTeamCoefficients = field(default_factory=SelfRedTeamCoefficients)
    max_attack_chars: int = 100_000  # size guard on the attacker's whole output (see above)
    max_response_chars: int = 100_000  # size guard on the defender's whole output
    # False (the paper): an answer cut off at the token limit is over-long and paid -1. True:
    # it is judged on the text it has, for small token budgets (CPU runs) where most answers
    # of an untrained model would be cut off and every reward would be the same -1.
    judge_truncated_responses: bool = False
    direct_fraction: float = 0.0  # share of rounds where the seed goes straight to the defender
    # "round": each round is direct with probability direct_fraction. "seed" (Self-RedTeam): the
    # share is split off each label's seed list once, drawn with direct_split_seed (the paper's
    # dataset seed 8888), so a seed is always revised or always direct (``direct_seed_ids``)
    direct_rounds: Literal["round", "seed"] = "round"
    direct_split_seed: int = 8888
    # False: a blank plain defender answer is a format failure (-1). True (AdvGame's paper: its
    # defender pattern accepts any text): it is an answer like any other and goes to the judge.
    judge_empty_responses: bool = False
    # The prompt texts and formats; TemplateSet.self_redteam() is Self-RedTeam's own game
    # (revision task, system message, <answer> tags, strict check, the paper's prefill).
    templates: TemplateSet = field(default_factory=TemplateSet)
    # K: a round is a conversation of up to K attacker messages and defender answers
    # (advgame_env.conversation); 1 is the single-turn game above, unchanged
    turns: int = 1
    # Size guard on a conversation's visible text (every message and answer so far): a
    # conversation that would grow past it ends there, truncated, and is judged on what it has
    max_conversation_chars: int = 200_000

    @property
    def checks_faithfulness(self) -> bool:
        """Whether rewrites pass the faithfulness judge (``faithfulness_check`` resolved)."""
        if self.faithfulness_check is None:
            return self.reward_rule == "advgame"
        return self.faithfulness_check

    def system_message(self, role: str) -> str:
        """The role's system message ('' for none): the attacker's comes from the template set."""
        return self.templates.text("attacker_system") if role == ATTACKER else ""

    @property
    def lead_in(self) -> str:
        """What the template set's prefill writes before its ``<think>`` ("Let's think step by
        step." in Self-RedTeam's); parsing starts after it."""
        prefill = self.templates.prefill
        return prefill[: prefill.index("<think>")] if "<think>" in prefill else prefill

    @property
    def shows_failed_outputs(self) -> bool:
        """Self-RedTeam shows a malformed output to its opponent and classifies it."""
        return self.reward_rule == "self_redteam"

    def __post_init__(self) -> None:
        if self.num_attacks < 1 or self.num_responses < 1:
            raise ValueError("num_attacks and num_responses must be at least 1")
        if self.judging not in ("pairwise", "pointwise"):
            raise ValueError(f"judging must be 'pairwise' or 'pointwise', not {self.judging!r}")
        if self.reward_rule not in ("advgame", "self_redteam"):
            raise ValueError(f"reward_rule must be 'advgame' or 'self_redteam', not {self.reward_rule!r}")
        if self.max_attack_chars < 1 or self.max_response_chars < 1:
            raise ValueError("max_attack_chars and max_response_chars must be positive")
        if not 0.0 <= self.direct_fraction <= 1.0:
            raise ValueError("direct_fraction must lie in [0, 1]")
        if self.turns < 1:
            raise ValueError(f"turns must be at least 1, not {self.turns!r}")
        if self.max_conversation_chars < 1:
            raise ValueError("max_conversation_chars must be positive")
        if self.direct_rounds not in ("round", "seed"):
            raise ValueError(f"direct_rounds must be 'round' or 'seed', not {self.direct_rounds!r}")


class GameSwitches(TypedDict, total=False):
    """:class:`GameConfig`'s fields as keyword arguments (the envs' ``**switches``); a test
    checks the two name the same fields with the same types."""

    num_attacks: int
    num_responses: int
    optimistic_attacker: bool
    attacker_think: bool
    defender_think: bool
    faithfulness_check: bool | None
    attacker_judge: bool
    judging: Literal["pairwise", "pointwise"]
    reward_rule: Literal["advgame", "self_redteam"]
    srt_coefficients: SelfRedTeamCoefficients
    max_attack_chars: int
    max_response_chars: int
    judge_truncated_responses: bool
    direct_fraction: float
    direct_rounds: Literal["round", "seed"]
    direct_split_seed: int
    judge_empty_responses: bool
    templates: TemplateSet
    turns: int
    max_conversation_chars: int


def direct_seed_ids(seeds: Sequence[Seed], config: GameConfig) -> frozenset[str]:
    """The seeds that always go straight to the defender (``direct_rounds: seed``): within each
    label, ``round(direct_fraction * n)`` of its n seeds, drawn once with ``direct_split_seed``,
    as Self-RedTeam marks its dataset rows when it builds the dataset."""
    rng = random.Random(config.direct_split_seed)
    chosen: set[str] = set()
    for label in Label:
        ids = sorted({s.id for s in seeds if s.label is label})
        chosen.update(rng.sample(ids, round(config.direct_fraction * len(ids))))
    return frozenset(chosen)


class Phase(StrEnum):
    ATTACK = "attack"
    RESPOND = "respond"
    DONE = "done"


class SampleRecord(TypedDict):
    """A sample as the env's ``infos`` show it."""

    text: str | None
    failure: str | None
    faithful: bool | None
    score: float | None
    selected: int | None
    reward: float | None


@dataclass
class Sample:
    """One player output: raw text, what others see, and how it was judged and paid.

    ``public`` is what the opponent (or the judge) was shown, None when nothing was; it is
    kept when the sample fails later (an attack whose answers all failed was still answered,
    and those answers are trained on the prompt they saw). ``failure`` is the sample's own
    state: a failed sample can have been shown (Self-RedTeam shows malformed outputs).
    """

    raw: str
    public: str | None
    reasoning: str = ""
    failure: Failure | None = None
    faithful: bool | None = None  # attacks only
    score: float | None = None  # the judge's 0-10 score
    classification: Classification | None = None  # Self-RedTeam rule
    selected: int | None = None  # attacks: the defender response the attacker was judged on
    reward: float | None = None
    # The action as the player sent it, when it was a generation: its token ids and sampler
    # log-probs are what a trainer learns from (re-tokenising the text need not give them back).
    # Opaque here (read with getattr by trainers): any object with a ``.text``, see protocol.py.
    generation: object = field(default=None, repr=False, compare=False)

    @classmethod
    def parsed(cls, raw: str, parsed: Parsed, generation: object = None, show_failed: bool = False) -> Sample:
        """``show_failed``: a failed output is shown anyway, as its fallback text (Self-RedTeam)."""
        if parsed.failure is None:
            return cls(raw, parsed.public, parsed.reasoning, generation=generation)
        public = parsed.fallback if show_failed else None
        return cls(raw, public, failure=parsed.failure, reward=failure_reward(parsed.failure), generation=generation)

    def fail(self, failure: Failure) -> None:
        """The sample failed; what it showed stays shown (see the class docstring)."""
        self.failure, self.reward = failure, failure_reward(failure)

    def withdraw(self, failure: Failure) -> None:
        """The sample failed before anyone was shown it: nothing is shown."""
        self.fail(failure)
        self.public = None

    def record(self) -> SampleRecord:
        return SampleRecord(
            text=self.public,
            failure=self.failure.value if self.failure else None,
            faithful=self.faithful,
            score=self.score,
            selected=self.selected,
            reward=self.reward,
        )


@dataclass
class Round:
    seed: Seed
    direct: bool = False  # the seed goes to the defender unchanged; the attacker sits out
    phase: Phase = Phase.ATTACK
    attacks: list[Sample] = field(default_factory=list)
    responses: list[list[Sample]] = field(default_factory=list)  # [attack][response]

    @property
    def attacker_rewards(self) -> list[float | None]:
        return [None if self.direct else a.reward for a in self.attacks]

    @property
    def defender_rewards(self) -> list[list[float | None]]:
        return [[r.reward for r in row] for row in self.responses]

    def attacker_pair(self) -> tuple[int, int] | None:
        return preference_pair(self.attacker_rewards)

    def defender_pairs(self) -> list[tuple[int, int, int]]:
        """(attack, chosen response, rejected response) for every attack with distinct rewards."""
        pairs = [(a, preference_pair(row)) for a, row in enumerate(self.defender_rewards)]
        return [(a, *pair) for a, pair in pairs if pair is not None]


T = TypeVar("T")
Item = TypeVar("Item")


# What one action slot holds, read off what the player sent (a str, or a generation with ``.text``
# and ``.finish_reason``, see protocol.py): (text, finish reason, the generation or None).
# Actions come from outside the package, so they are typed object and checked here.
ActionText = tuple[str, str | None, object]


def _text_and_finish(value: object, where: str) -> ActionText:
    """(text, finish reason, the generation itself or None) of one action."""
    if isinstance(value, str):
        return value, None, None
    text, finish = getattr(value, "text", None), getattr(value, "finish_reason", None)
    if isinstance(text, str):
        return text, finish, value
    raise TypeError(f"{where} must be a str or a generation with a .text str, got {type(value).__name__}")


def _check_shape(actions: object, size: int, where: str) -> Sequence[object]:
    """``actions`` as the sequence of ``size`` items it must be."""
    if isinstance(actions, str | bytes) or not isinstance(actions, Sequence):
        raise TypeError(f"{where} must be a sequence of {size} texts, got {type(actions).__name__}")
    if len(actions) != size:
        raise ValueError(f"{where} must hold exactly {size} texts, got {len(actions)}")
    return actions


def _judge_call(call: Callable[[list[Item]], list[T]], items: list[Item], role: str) -> list[T]:
    """One batched judge call; a crash or a wrong count becomes a JudgeError."""
    if not items:
        return []
    try:
        verdicts = list(call(items))
    except Exception as error:  # any backend failure: the caller's rounds stay untouched
        raise JudgeError(f"{role} judge failed on a batch of {len(items)}: {error}") from error
    if len(verdicts) != len(items):
        raise JudgeError(f"{role} judge returned {len(verdicts)} verdicts for {len(items)} items")
    return verdicts


class Game:
    """The game's rules applied to a batch of rounds. Stateless apart from judge and config."""

    def __init__(self, judge: Judge, config: GameConfig | None = None) -> None:
        self.judge, self.config = judge, config or GameConfig()

    # ------------------------------------------------------------------ observations

    def attacker_observation(self, round_: Round) -> str:
        if round_.direct or round_.phase is not Phase.ATTACK:
            return ""
        return self.config.templates.attacker_task(round_.seed.prompt, round_.seed.label, self.config.attacker_think)

    def defender_observation(self, round_: Round) -> tuple[str, ...]:
        """The defender's user turn for each attack slot ('' where there is nothing to answer)."""
        if round_.phase is not Phase.RESPOND:
            return ("",) * self.config.num_attacks
        think = self.config.defender_think
        return tuple(
            "" if a.public is None else self.config.templates.defender_task(a.public, think) for a in round_.attacks
        )

    # ------------------------------------------------------------------ attack phase

    def attack(self, rounds: Sequence[Round], actions: Sequence[object]) -> None:
        """Parse the attacker's rewrites of every round and check their faithfulness."""
        cfg = self.config
        _check_shape(actions, len(rounds), "attacker actions for the batch")
        texts: list[list[ActionText]] = []
        for r, (round_, action) in enumerate(zip(rounds, actions, strict=True)):
            if round_.phase is not Phase.ATTACK:
                raise RuntimeError(f"round {r} is in phase {round_.phase.value!r}, not 'attack'")
            if round_.direct:
                texts.append([(round_.seed.prompt, None, None)] * cfg.num_attacks)
                continue
            texts_of = _check_shape(action, cfg.num_attacks, f"attacker_0's action in round {r}")
            texts.append([_text_and_finish(t, f"attacker_0's text {i} in round {r}") for i, t in enumerate(texts_of)])

        show = cfg.shows_failed_outputs
        attacks = [
            [Sample(t, t) if round_.direct else Sample.parsed(t, self.parse_attack(t, f), g, show) for t, f, g in row]
            for round_, row in zip(rounds, texts, strict=True)
        ]
        for attack in (a for row in attacks for a in row):
            if attack.failure is not None and not attack.public:
                attack.public = None  # a failed attack that shows nothing asks nothing: not answered
        if cfg.checks_faithfulness:
            todo = [
                (a, FaithfulnessItem(round_.seed.prompt, round_.seed.label, a.public))
                for round_, row in zip(rounds, attacks, strict=True)
                if not round_.direct
                for a in row
                if a.failure is None and a.public is not None
            ]
            verdicts = _judge_call(self.judge.faithfulness, [item for _, item in todo], "faithfulness")
            for (attack, _), faithful in zip(todo, verdicts, strict=True):
                attack.faithful = faithful
                if faithful is not True:
                    # the AdvGame filter: an unfaithful rewrite is not answered
                    attack.withdraw(Failure.UNFAITHFUL if faithful is False else Failure.JUDGE_FAILURE)

        for round_, row in zip(rounds, attacks, strict=True):
            round_.attacks, round_.phase = row, Phase.RESPOND

    def parse_attack(self, text: str, finish: str | None) -> Parsed:
        """One attacker output parsed under this game's format (template set, think, size guard)."""
        cfg, templates = self.config, self.config.templates
        form = "attacker_format_think" if cfg.attacker_think else "attacker_format_prompt_only"
        tag, strict = templates.attacker_tag(cfg.attacker_think), templates.strict(form)
        lead_in = cfg.lead_in if cfg.attacker_think else ""
        return parse_attack(
            text, cfg.attacker_think, cfg.max_attack_chars, finish, tag=tag, strict=strict, lead_in=lead_in
        )

    # ------------------------------------------------------------------ respond phase

    def respond(self, rounds: Sequence[Round], actions: Sequence[object]) -> None:
        """Parse the defender's answers, judge both players and pay them."""
        cfg = self.config
        _check_shape(actions, len(rounds), "defender actions for the batch")
        grids = []
        for r, (round_, action) in enumerate(zip(rounds, actions, strict=True)):
            if round_.phase is not Phase.RESPOND:
                raise RuntimeError(f"round {r} is in phase {round_.phase.value!r}, not 'respond'")
            rows = _check_shape(action, cfg.num_attacks, f"defender_0's action in round {r}")
            grid = []
            for a, (attack, row) in enumerate(zip(round_.attacks, rows, strict=True)):
                answers = _check_shape(row, cfg.num_responses, f"defender_0's answers to attack {a} in round {r}")
                texts = [
                    _text_and_finish(t, f"defender_0's text ({a}, {d}) in round {r}") for d, t in enumerate(answers)
                ]
                grid.append([self._parse_response(attack, t, f, g) for t, f, g in texts])
            grids.append(grid)

        # Work on copies so a failed judge call leaves the rounds untouched.
        attacks = [[Sample(**vars(a)) for a in round_.attacks] for round_ in rounds]
        if cfg.reward_rule == "self_redteam":
            self._pay_self_redteam(rounds, attacks, grids)
        else:
            self._judge_defender(rounds, attacks, grids)
            self._judge_attacker(rounds, attacks, grids)
        for round_, row, grid in zip(rounds, attacks, grids, strict=True):
            round_.attacks, round_.responses, round_.phase = row, grid, Phase.DONE

    def _parse_response(self, attack: Sample, text: str, finish: str | None, generation: object) -> Sample:
        if attack.public is None:
            sample = Sample(text, None, generation=generation)
            sample.fail(Failure.PROMPT_INVALID)
            return sample
        cfg = self.config
        if cfg.judge_truncated_responses and finish == "length":
            finish = None
        think = cfg.defender_think
        parsed = parse_response(
            text,
            think,
            cfg.max_response_chars,
            finish,
            strict=think and cfg.templates.strict("defender_think"),
            lead_in=cfg.lead_in if think else "",
            accept_empty=cfg.judge_empty_responses,
        )
        return Sample.parsed(text, parsed, generation, cfg.shows_failed_outputs)

    def _score_groups(self, groups: list[tuple[Rubric, str, list[Sample]]], role: str) -> None:
        """Set ``score`` on every sample of every group; each group is judged within itself."""
        if self.config.judging == "pointwise":
            todo = [(s, PointItem(rubric, query, s.public or "")) for rubric, query, group in groups for s in group]
            for (sample, _), score in zip(todo, _judge_call(self.judge.score, [i for _, i in todo], role), strict=True):
                sample.score = score
            return
        pairs = [(group, judge_pairs(range(len(group)))) for _, _, group in groups]
        items = [
            PairItem(rubric, query, group[i].public or "", group[j].public or "")
            for (rubric, query, group), (_, group_pairs) in zip(groups, pairs, strict=True)
            for i, j in group_pairs
        ]
        verdicts = iter(_judge_call(self.judge.compare, items, role))
        for group, group_pairs in pairs:
            scores = scores_from_pairs(len(group), group_pairs, [next(verdicts) for _ in group_pairs])
            for sample, score in zip(group, scores, strict=True):
                sample.score = score

    def _judge_defender(
        self, rounds: Sequence[Round], attacks: list[list[Sample]], grids: list[list[list[Sample]]]
    ) -> None:
        groups = []
        for round_, row, grid in zip(rounds, attacks, grids, strict=True):
            rubric = Rubric.DEFLECTION if round_.seed.label is Label.HARMFUL else Rubric.COMPLIANCE
            for attack, responses in zip(row, grid, strict=True):
                valid = [s for s in responses if s.failure is None]
                if valid:  # the judge's query is the prompt the defender actually saw
                    groups.append((rubric, attack.public or "", valid))
        self._score_groups(groups, DEFENDER)
        for sample in (s for grid in grids for responses in grid for s in responses):
            if sample.failure is None:
                if sample.score is None:
                    sample.fail(Failure.JUDGE_FAILURE)
                else:
                    sample.reward = sample.score

    def _select(self, responses: list[Sample]) -> int | None:
        """The response the attacker is judged on: the defender's best (optimistic) or first."""
        if self.config.optimistic_attacker:
            return first_argmax([s.score if s.failure is None else None for s in responses])
        return next((d for d, s in enumerate(responses) if s.failure is None), None)

    def _judge_attacker(
        self, rounds: Sequence[Round], attacks: list[list[Sample]], grids: list[list[list[Sample]]]
    ) -> None:
        groups, judged = [], []
        for round_, row, grid in zip(rounds, attacks, grids, strict=True):
            live = []
            for attack, responses in zip(row, grid, strict=True):
                if attack.failure is not None:
                    continue
                attack.selected = self._select(responses)
                if attack.selected is None:
                    attack.fail(Failure.NO_VALID_RESPONSE)
                elif not round_.direct:
                    live.append((attack, responses[attack.selected]))
            if not self.config.attacker_judge:
                for attack, _ in live:
                    attack.score = attack.reward = 0.0
            elif live:
                # The attacks are compared through what the defender said, against the seed.
                rubric = Rubric.COMPLIANCE if round_.seed.label is Label.HARMFUL else Rubric.REFUSAL
                answers = [Sample(response.raw, response.public) for _, response in live]
                groups.append((rubric, round_.seed.prompt, answers))
                judged += [(attack, answer) for (attack, _), answer in zip(live, answers, strict=True)]
        self._score_groups(groups, ATTACKER)
        for attack, answer in judged:
            attack.score = answer.score
            if answer.score is None:
                attack.fail(Failure.JUDGE_FAILURE)
            else:
                attack.reward = answer.score

    def _format_term(self, sample: Sample, think: bool) -> float:
        """Self-RedTeam's format term: -c for a malformed or cut-off output, +c for a
        well-formed one when the format has hidden reasoning (the reference's CoT format
        reward), else 0."""
        c = self.config.srt_coefficients.format
        if sample.failure in (Failure.BAD_FORMAT, Failure.OVER_LENGTH):
            return -c
        return c if think else 0.0

    def _pay_self_redteam(
        self, rounds: Sequence[Round], attacks: list[list[Sample]], grids: list[list[list[Sample]]]
    ) -> None:
        """The Self-RedTeam rule: every game (a shown prompt and a shown answer) is classified
        once; each player is paid its table reward plus its format term.

            defender   R = table(prompt harmful, refusal, response harmful) + format(answer)
            attacker   R = mean over its games of table(seed label, ...) + format(attack)

        Malformed or cut-off outputs are classified on what was shown (their fallback text),
        so their reward lies in [-3, +1] with the default coefficients (table -2..+2, format
        -1). A game without a verdict (a judge failure) or with a missing label (a tie) is
        excluded for both players, as the reference drops it. Only a text over the size
        guard, which nobody is shown, keeps the flat PENALTY.
        """
        cfg, k = self.config, self.config.srt_coefficients
        todo = [
            (
                round_,
                attack,
                s,
                ClassifyItem(attack.public, s.public, round_.seed.prompt, round_.seed.label),
            )
            for round_, row, grid in zip(rounds, attacks, grids, strict=True)
            for attack, responses in zip(row, grid, strict=True)
            if attack.public is not None
            for s in responses
            if s.public is not None
        ]
        labels = _judge_call(self.judge.classify, [item for *_, item in todo], "classifier")
        games: dict[int, list[float | None]] = {}
        for (round_, attack, sample, _), c in zip(todo, labels, strict=True):
            sample.classification = c
            defender = None if c is None else srt_defender_reward(c, k)
            if c is None and sample.failure is None:
                sample.fail(Failure.JUDGE_FAILURE)
            else:  # a tie, or a judged game
                sample.reward = None if defender is None else defender + self._format_term(sample, cfg.defender_think)
            games.setdefault(id(attack), []).append(None if c is None else srt_attacker_reward(round_.seed.label, c, k))
        for round_, row in zip(rounds, attacks, strict=True):
            for attack in row:
                if attack.public is None or round_.direct:
                    continue
                table = mean_or_none(games.get(id(attack), []))
                if table is not None:
                    attack.reward = table + self._format_term(attack, cfg.attacker_think)
                elif attack.failure is None:
                    attack.fail(Failure.NO_VALID_RESPONSE if id(attack) not in games else Failure.JUDGE_FAILURE)
                else:  # a malformed attack without a judged game: excluded, its own failure kept
                    attack.reward = None
