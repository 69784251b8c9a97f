"""From played conversations to training examples, and the play step of the multi-turn game.

A player's trajectory in a conversation is its own turns, each read in the context it was
played in: a :class:`Segment` per turn, (what the player read, what it wrote). The opponent's
messages are in the contexts only, so they are never trained (each player's tokens are masked
to its own turns), and the trajectory's log-probability is the sum over its own turns,

    log π(τ) = Σ_t log π(y_t | context_t),

which is exactly the policy's factor of the conversation's probability: the opponent's factors
are the same under the learner and its reference, so they cancel in every ratio π/π_ref
(the DPO margin) and in ∇ log π (the policy gradient). See docs/multiturn.md.

Contexts, as the players read them when they play (``play_dialogues``):
  * the attacker, at turn 1 the game's opening task (``attacker_observation``), at turn t > 1
    the game's view of that conversation (``attacker_view``: its task and the visible
    conversation so far), each as one user turn, as in the single-turn game;
  * the defender, the conversation as a chat: each earlier user message (wrapped in the
    defender's task, as ``defender_views`` shows it) and its own earlier answer as it wrote it,
    then the new user message. At turn 1 this is the single-turn game's defender prompt.

Pairs share a prefix and branch at a turn (DialTree-RPO's tree rollouts): the D conversations
of a row share the opener and branch at the defender's first answer (the defender's pairs); the
A rows of a round share the task and branch at the attacker's opener (the attacker's pairs,
each row through the conversation it was judged on, ``attack.selected``, else its first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from advgame_env.conversation import Conversation, ConversationGame, Dialogue
from advgame_env.game import Game, Phase, Round, Sample
from advgame_env.judges import JudgeError
from advgame_env.parsing import Failure
from advgame_env.roles import ATTACKER, DEFENDER
from agents.hf import encode, render_chat
from agents.policy import Policy, chat
from algorithms.training.algorithm import policy_logprobs
from algorithms.training.batches import Tokenizers, continuation, tokenizer_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from algorithms.training.players import Player, Which

Chat = list[dict[str, str]]


@dataclass
class Segment:
    """One turn of one player: the ids of what it read and of what it wrote (trained)."""

    turn: int  # 1-based
    prompt_ids: list[int]
    completion_ids: list[int]
    sampler_logprobs: list[float] | None = None  # per completion token, NaN where unknown
    reward: float | None = None  # this turn's reward, where the rule has per-turn rewards (Self-RedTeam)


@dataclass
class TrajectoryPair:
    """Two trajectories of one player from a shared prefix: chosen (higher reward) and rejected."""

    role: str
    chosen: list[Segment]
    rejected: list[Segment]
    chosen_reward: float
    rejected_reward: float


@dataclass
class Trajectory:
    """A player's whole trajectory in one conversation, scored: a policy-gradient example."""

    role: str
    segments: list[Segment]
    reward: float
    group: tuple[int, ...]  # (round,) for the attacker, (round, attack) for the defender
    failed: bool = False  # a turn of this player broke a rule of the game (the failure penalty)


# ----------------------------------------------------------------------------- contexts


def _at_turn(conversation: Conversation, turn: int) -> Conversation:
    """The conversation as it stood before turn ``turn``: its first turn - 1 turns, still open."""
    return Conversation(conversation.turns[: turn - 1])


def attacker_context(game: ConversationGame, round_: Dialogue, conversation: Conversation, turn: int) -> str:
    """What the attacker read before writing turn ``turn`` of ``conversation``."""
    if turn == 1:
        return game.attacker_observation(replace(round_, phase=Phase.ATTACK, turn=1))
    return game.attacker_view(replace(round_, phase=Phase.ATTACK, turn=turn), _at_turn(conversation, turn))


def defender_chat(game: Game, conversation: Conversation, turn: int, prefill: str = "") -> Chat:
    """The chat the defender reads before answering turn ``turn``: its system message, the
    conversation's earlier turns (its own answers as it wrote them), the new user message and
    its prefill. An empty list when there is nothing to answer."""
    cfg = game.config
    messages: Chat = (
        [{"role": "system", "content": cfg.system_message(DEFENDER)}] if cfg.system_message(DEFENDER) else []
    )
    for t, exchange in enumerate(conversation.turns[:turn], start=1):
        if exchange.attack.public is None:
            return []
        messages.append(
            {"role": "user", "content": cfg.templates.defender_task(exchange.attack.public, cfg.defender_think)}
        )
        if t == turn:
            break
        if exchange.response is None:
            return []
        messages.append({"role": "assistant", "content": exchange.response.raw})
    return [*messages, {"role": "assistant", "content": prefill}] if prefill else messages


def _ids(tokenizer: PreTrainedTokenizerBase, messages: Chat) -> list[int]:
    return encode(tokenizer, render_chat(tokenizer, messages))


def _segment(
    tokenizer: PreTrainedTokenizerBase, prompt: list[int], sample: Sample, turn: int, prefill: str, reward: float | None
) -> Segment:
    ids, logprobs = continuation(tokenizer, sample, prefill)
    return Segment(turn, prompt, ids, logprobs, reward)


def attacker_segments(
    game: ConversationGame,
    round_: Dialogue,
    conversation: Conversation,
    tokenizer: PreTrainedTokenizerBase,
    prefill: str = "",
) -> list[Segment]:
    """The attacker's turns of a conversation, each with the context it read (a failed message
    is its last turn), then the message with which it closed the conversation, if it did
    (``Conversation.closing``: ending it is a move too; no turn reward of its own)."""
    system = game.config.system_message(ATTACKER)
    moves = [(t.attack, t.attacker_reward) for t in conversation.turns]
    if conversation.closing is not None:
        moves.append((conversation.closing, None))
    out = []
    for t, (sample, reward) in enumerate(moves, start=1):
        prompt = _ids(tokenizer, chat(attacker_context(game, round_, conversation, t), prefill, system))
        out.append(_segment(tokenizer, prompt, sample, t, prefill, reward))
    return out


def defender_segments(
    game: Game, conversation: Conversation, tokenizer: PreTrainedTokenizerBase, prefill: str = ""
) -> list[Segment]:
    """The defender's answered turns of a conversation, each with the chat it read."""
    out = []
    for t, exchange in enumerate(conversation.turns, start=1):
        if exchange.response is None:
            break
        messages = defender_chat(game, conversation, t, prefill)
        if not messages:
            break
        out.append(
            _segment(tokenizer, _ids(tokenizer, messages), exchange.response, t, prefill, exchange.defender_reward)
        )
    return out


def _judged_conversation(attack: Sample, row: Sequence[Conversation]) -> Conversation:
    return row[attack.selected if attack.selected is not None else 0]


def _game(game: Game) -> ConversationGame:
    if not isinstance(game, ConversationGame):
        raise TypeError("conversation examples need the multi-turn game (ConversationGame, game.turns > 1)")
    return game


# ----------------------------------------------------------------------------- examples


def conversation_pairs(
    rounds: Sequence[Round],
    game: Game,
    tokenizer: Tokenizers,
    *,
    clip_rejected_to_chosen_length: bool = False,
    prefills: Mapping[str, str] | None = None,
) -> list[TrajectoryPair]:
    """(argmax, argmin) trajectory pairs of every group whose rewards differ, attacker pairs first.

    The groups and rewards are the single-turn game's (``Round.attacker_pair``,
    ``Round.defender_pairs``): a dialogue's ``attacks[a]`` carries row a's reward and
    ``responses[a][d]`` conversation (a, d)'s. ``clip_rejected_to_chosen_length``: a rejected
    trajectory that failed by length is cut at its last turn to the chosen trajectory's length."""
    conversation_game = _game(game)
    pre_a, pre_d = (prefills or {}).get(ATTACKER, ""), (prefills or {}).get(DEFENDER, "")
    tok_a, tok_d = tokenizer_of(tokenizer, ATTACKER), tokenizer_of(tokenizer, DEFENDER)
    attacker, defender = [], []
    for round_ in _dialogues(rounds):
        pair = round_.attacker_pair()
        if pair is not None and not round_.direct:
            c, r = (round_.attacks[i] for i in pair)
            assert c.reward is not None and r.reward is not None  # preference_pair skips None
            chosen, rejected = (
                attacker_segments(
                    conversation_game,
                    round_,
                    _judged_conversation(round_.attacks[i], round_.conversations[i]),
                    tok_a,
                    pre_a,
                )
                for i in pair
            )
            attacker.append(
                _clipped(
                    TrajectoryPair(ATTACKER, chosen, rejected, c.reward, r.reward), r, clip_rejected_to_chosen_length
                )
            )
        for a, ci, ri in round_.defender_pairs():
            c, r = round_.responses[a][ci], round_.responses[a][ri]
            assert c.reward is not None and r.reward is not None
            row = round_.conversations[a]
            chosen, rejected = (defender_segments(game, row[i], tok_d, pre_d) for i in (ci, ri))
            if chosen and rejected:
                defender.append(
                    _clipped(
                        TrajectoryPair(DEFENDER, chosen, rejected, c.reward, r.reward),
                        r,
                        clip_rejected_to_chosen_length,
                    )
                )
    return attacker + defender


def _clipped(pair: TrajectoryPair, rejected: Sample, clip: bool) -> TrajectoryPair:
    # as the single-turn pairs: a length failure would otherwise dominate the summed log-probs
    if not clip or rejected.failure is not Failure.OVER_LENGTH:
        return pair
    excess = sum(len(s.completion_ids) for s in pair.rejected) - sum(len(s.completion_ids) for s in pair.chosen)
    last = pair.rejected[-1]
    if excess > 0 and len(last.completion_ids) > excess:
        pair.rejected[-1] = replace(last, completion_ids=last.completion_ids[:-excess])
    return pair


def conversation_rollouts(
    rounds: Sequence[Round], game: Game, tokenizer: Tokenizers, *, prefills: Mapping[str, str] | None = None
) -> list[Trajectory]:
    """Every scored trajectory with its reward and group key, attacker trajectories first: a row's
    attacker trajectory (its opener and its messages in the conversation it was judged on), and
    every conversation's defender trajectory."""
    conversation_game = _game(game)
    pre_a, pre_d = (prefills or {}).get(ATTACKER, ""), (prefills or {}).get(DEFENDER, "")
    tok_a, tok_d = tokenizer_of(tokenizer, ATTACKER), tokenizer_of(tokenizer, DEFENDER)
    attacker, defender = [], []
    for r, round_ in enumerate(_dialogues(rounds)):
        for attack, row in zip(round_.attacks, round_.conversations, strict=True):
            if round_.direct or attack.reward is None:
                continue
            conversation = _judged_conversation(attack, row)
            failed = attack.failure is not None
            segments = attacker_segments(conversation_game, round_, conversation, tok_a, pre_a)
            attacker.append(Trajectory(ATTACKER, segments, attack.reward, (r,), failed))
        for a, (answers, row) in enumerate(zip(round_.responses, round_.conversations, strict=True)):
            for first, conversation in zip(answers, row, strict=True):
                if first.reward is None:
                    continue
                segments = defender_segments(game, conversation, tok_d, pre_d)
                if segments:
                    failed = first.failure is not None
                    defender.append(Trajectory(DEFENDER, segments, first.reward, (r, a), failed))
    return attacker + defender


def rewards_to_go(trajectory: Trajectory) -> list[float]:
    """Each turn's reward counted from that turn on: the trajectory's reward with the rule's
    extreme over its turns (the attacker's best turn, the defender's worst) replaced by the extreme
    over turns t.. only, so a turn is neither credited nor blamed for the turns before it,

        G_t = R(τ) - ext_{t' ≤ T} r_{t'} + ext_{t' ≥ t} r_{t'},   G_1 = R(τ).

    Turns without a reward of their own (the AdvGame rule; an unanswered last message) get R(τ)."""
    extreme = max if trajectory.role == ATTACKER else min
    known = [s.reward for s in trajectory.segments if s.reward is not None]
    if not known:
        return [trajectory.reward] * len(trajectory.segments)
    overall = extreme(known)
    out = []
    for t in range(len(trajectory.segments)):
        later = [s.reward for s in trajectory.segments[t:] if s.reward is not None]
        out.append(trajectory.reward - overall + extreme(later) if later else trajectory.reward)
    return out


def _dialogues(rounds: Sequence[Round]) -> list[Dialogue]:
    if not all(isinstance(r, Dialogue) for r in rounds):
        raise TypeError("conversation examples are built from Dialogue rounds (advgame_env.conversation.Dialogue)")
    return list(rounds)  # type: ignore[arg-type]


def summed_logprobs(
    player: Player, which: Which, trajectories: Sequence[Sequence[tuple[list[int], list[int]]]], max_context: int
) -> torch.Tensor:
    """Σ_t log π(y_t | context_t) of each trajectory (its turns as (prompt, completion) ids), all
    turns in one forward; a one-turn trajectory is the single-turn game's summed log-prob."""
    logps, mask = turn_logprobs(player, which, trajectories, max_context)
    return sum_by_trajectory((logps * mask).sum(-1), trajectories)


def turn_logprobs(
    player: Player, which: Which, trajectories: Sequence[Sequence[tuple[list[int], list[int]]]], max_context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs and masks of every turn of every trajectory, ``[turns, tokens]``, turns
    in order (the first trajectory's turns first)."""
    return policy_logprobs(player, which, [turn for t in trajectories for turn in t], max_context)


def sum_by_trajectory(per_turn: torch.Tensor, trajectories: Sequence[Sequence[object]]) -> torch.Tensor:
    """Per-turn values summed into one value per trajectory (turns in ``turn_logprobs``' order)."""
    owner = torch.tensor([i for i, t in enumerate(trajectories) for _ in t], device=per_turn.device)
    return torch.zeros(len(trajectories), dtype=per_turn.dtype, device=per_turn.device).index_add(0, owner, per_turn)


# ----------------------------------------------------------------------------- play


def play_dialogues(
    game: ConversationGame, attacker: Policy, defender: Policy, rounds: list[Round], retries: int = 0
) -> list[Round]:
    """Conversations of a batch of :class:`Dialogue` rounds, turn by turn, each turn one batched
    generation per player. A slot with nothing to do gets an empty action, as in the env.
    ``retries``: how many times more a failed judge call is made (``judge.retries``)."""
    a, d = game.config.num_attacks, game.config.num_responses
    dialogues = _dialogues(rounds)
    openers = attacker.attack([game.attacker_observation(r) for r in dialogues], a)
    # a row's D conversations share its opener: the game reads the first slot of each row
    _move(game, game.attack, dialogues, [[(g,) * d for g in row] for row in openers], retries)
    while live := [r for r in dialogues if r.phase is Phase.RESPOND]:
        chats = [
            defender_chat(game, c, len(c.turns), defender.prefill) if c.awaits == DEFENDER else None
            for r in live
            for row in r.conversations
            for c in row
        ]
        answers = iter(defender.sample_chats(chats, 1))
        _move(
            game, game.respond, live, [[[next(answers)[0] for _ in range(d)] for _ in range(a)] for _ in live], retries
        )
        if waiting := [r for r in dialogues if r.phase is Phase.ATTACK]:
            views = [v for r in waiting for row in game.attacker_views(r) for v in row]
            messages = iter(attacker.sample(views, 1))
            moves = [[[next(messages)[0] for _ in range(d)] for _ in range(a)] for _ in waiting]
            _move(game, game.attack, waiting, moves, retries)
    return rounds


def _move(
    game: ConversationGame,
    move: Callable[[Sequence[Round], Sequence[object]], None],
    rounds: list[Dialogue],
    actions: Sequence[object],
    retries: int,
) -> None:
    """One player's move; a move that ends conversations judges them, and a failed judge call
    leaves them recorded but unjudged, so only the judging is made again (the move is not)."""
    try:
        move(rounds, actions)
        return
    except JudgeError:
        if retries == 0:
            raise
    pending = [r for r in rounds if r.phase is not Phase.DONE and not r.open_conversations()]
    for attempt in range(retries):
        try:
            game.judge_dialogues(pending)
            return
        except JudgeError:
            if attempt == retries - 1:
                raise
