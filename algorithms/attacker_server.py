"""The trained players behind an OpenAI-compatible chat endpoint, as red-teaming tools call their
adversarial model and their target: ``advgame serve --attacker PATH`` and ``advgame serve --defender PATH``.

Attacker. A tool sends ``POST /v1/chat/completions`` with a system message stating the objective and
the conversation so far. The server maps that onto the task the attacker was trained on (the game's
attacker prompt for a seed and its label: the objective is the seed, harmful unless the request
says ``"label": "benign"``), samples, parses the strict ``<think>..</think><prompt>..</prompt>``
format, and answers with the public prompt only: the hidden reasoning never leaves the server.

Where the objective is read (first found):
  1. a top-level ``"objective"`` string (an extension field; tools that allow extra body keys);
  2. the system messages' text: its ``<objective>..</objective>``, else the rest of the first line
     after ``Objective:`` (promptfoo's "the following behavior: '..'" first: its prompt has an
     "OBJECTIVE:" line of its own), else the whole text.
A request without one is a 400 naming what is missing. A ``response_format`` asking for JSON (PyRIT
asks its adversarial model for ``{"next_message", "rationale", "last_response_summary"}``) gets the
attack under the schema's message key and empty strings elsewhere.

The conversation so far. From the adversarial model's side a tool's dialogue is reversed: its own
earlier attacks are the ``assistant`` turns (JSON-wrapped when JSON was asked for: the attack is
read back from the message key), and the target's answer to each comes as the next ``user`` turn
(PyRIT's ``RedTeamingAttack`` sends the answer as it came, or a "blocked" notice, followed by
its JSON instructions, a "### Response format" section that is left out when JSON is asked for); ``user`` turns
before the first attack are the tool's own instructions and are not shown, and so is a last attack
not answered yet (promptfoo's tree search ends on the attack it wants refined). With no attack yet the
attacker gets its opening task (the single-turn task, or the multi-turn game's opener when it was
trained with ``turns > 1``); later it reads the multi-turn game's own view of the conversation
(``ConversationGame.attacker_view``), so the next message depends on the target's answers. The
oldest exchanges are dropped from that view past the game's ``max_conversation_chars``. The
attacker cannot end a tool's conversation: an ``[END CONVERSATION]`` output is sampled again.

Defender. A plain chat target: the conversation is sent as it came, its last turn (a user turn:
the attack) written as the defender's trained task (the game's defender template), and the answer
is the defender's public answer (a thinking defender's ``<think>`` stays on the server).

Both share the request checks and the app: every bad request has a defined answer and the server
keeps serving: malformed JSON or an unexpected layout 400 (naming the field), a body over
``max_body_bytes`` 413, ``stream`` 400, a player that produced no valid output in ``attempts``
samples 502.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from advgame_env.conversation import END_CONVERSATION, Conversation, ConversationGame, Dialogue, Turn
from advgame_env.game import Game, GameConfig, Round, Sample
from advgame_env.parsing import Failure, Parsed, parse_response
from advgame_env.roles import ATTACKER, DEFENDER
from advgame_env.rule_judge import RuleJudge
from advgame_env.seeds import Label, Seed
from agents.hf import Generation
from agents.policy import Policy, chat
from algorithms.training.copies import Which

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from algorithms.config import TrainConfig

ROLES = ("system", "developer", "user", "assistant")
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above a red-teaming conversation, far below memory trouble
_OBJECTIVE_TAG = re.compile(r"<objective>(.*?)</objective>", re.DOTALL | re.IGNORECASE)
_OBJECTIVE_LINE = re.compile(r"\bobjective[ \t]*:[ \t]*(\S[^\n]*)", re.IGNORECASE)  # the rest of its line
# promptfoo's attacker system prompts (jailbreak:iterative, jailbreak:tree) state the goal as
# "... perform the following behavior: '{{goal}}' and ideally begin ..." / "...: '{{goal}}'. ..."
_BEHAVIOR = re.compile(r"the following behavior: '(.+?)'(?=\.|\s+and ideally)", re.DOTALL | re.IGNORECASE)


class RequestError(Exception):
    """A request the server answers with an error: its HTTP status and one line naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Message:
    role: str
    content: str


# Where tools' JSON schemas for the adversarial model's reply put the attack (PyRIT's shared
# adversarial_chat schema: next_message, with rationale and last_response_summary beside it).
ATTACK_KEYS = ("next_message", "prompt", "message", "attack")


@dataclass(frozen=True)
class JsonReply:
    """An OpenAI ``response_format`` asking for a JSON object: the attack goes under ``key``, every
    other required key gets an empty string (the attacker's reasoning stays on the server)."""

    key: str = ATTACK_KEYS[0]
    others: tuple[str, ...] = ()

    def render(self, attack: str) -> str:
        return json.dumps({self.key: attack, **dict.fromkeys(self.others, "")})


def json_reply(response_format: object) -> JsonReply | None:
    """The reply a ``response_format`` asks for: None for text, a ``JsonReply`` for
    ``json_object`` or a ``json_schema`` with string properties; a 400 for any other."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        # no schema sent: PyRIT's shared adversarial_chat layout, which PyRIT validates the reply
        # against even when its target only declares plain JSON mode (what OpenAIChatTarget sends)
        return JsonReply(ATTACK_KEYS[0], ("rationale", "last_response_summary"))
    if kind != "json_schema":
        raise RequestError(400, "response_format: {'type': 'text' | 'json_object' | 'json_schema', ...}")
    assert isinstance(response_format, Mapping)
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(schema, Mapping) or not isinstance(properties, Mapping):
        raise RequestError(400, "response_format.json_schema.schema: an object schema with 'properties'")
    key = next((k for k in ATTACK_KEYS if k in properties), None)
    if key is None:
        raise RequestError(
            400, f"response_format: the schema has no property for the attack ({', '.join(ATTACK_KEYS)})"
        )
    required = schema.get("required", [])
    others = tuple(str(k) for k in required if k != key) if isinstance(required, list) else ()
    for name in (key, *others):
        if not isinstance(properties.get(name), Mapping) or properties[name].get("type") != "string":
            raise RequestError(400, f"response_format: property {name!r} is not a string; the attacker writes text")
    return JsonReply(key, others)


@dataclass(frozen=True)
class Exchange:
    """One earlier turn of the tool's dialogue: the attack we wrote and the target's answer."""

    attack: str
    answer: str


def attack_text(content: str, reply: JsonReply | None) -> str:
    """The attack inside one of our earlier replies: the message key of a JSON reply, else the text."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return content
    if not isinstance(value, dict):
        return content
    keys = (reply.key, *ATTACK_KEYS) if reply is not None else ATTACK_KEYS
    return next((value[k] for k in keys if isinstance(value.get(k), str)), content)


# PyRIT appends its JSON instructions to every user turn it sends its adversarial model
# ("### Response format" to the end): the tool's scaffolding, not the target's answer
_FORMAT_SECTION = re.compile(r"\s*### Response format\n.*\Z", re.DOTALL)


def exchanges(conversation: tuple[Message, ...], reply: JsonReply | None) -> tuple[Exchange, ...]:
    """The tool's dialogue as (our attack, the target's answer) pairs: each ``assistant`` turn
    with the ``user`` turn after it; ``user`` turns with no attack before them are the tool's
    instructions; a last attack not answered yet is left out. A 400 for two attacks in a row."""
    pairs, attack = [], None
    for message in conversation:
        if message.role == "assistant":
            if attack is not None:
                raise RequestError(
                    400, "messages: two assistant (attacker) turns in a row; each is followed by the target's answer"
                )
            attack = attack_text(message.content, reply)
        elif attack is not None:
            answer = message.content if reply is None else _FORMAT_SECTION.sub("", message.content)
            pairs.append(Exchange(attack, answer))
            attack = None
    # a last attack with no answer after it is not shown: promptfoo's tree search ends its request
    # with the attack it wants refined, which the target has not answered
    return tuple(pairs)


@dataclass(frozen=True)
class AttackRequest:
    """What the attacker needs from a tool's request."""

    objective: str
    label: Label
    history: tuple[Exchange, ...] = ()  # the dialogue so far, oldest first
    reply: JsonReply | None = None  # a JSON object asked for (response_format), else the plain attack
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None


def _text(content: object, where: str) -> str:
    """A message's content: a string, or OpenAI's list of ``{"type": "text", "text": ..}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise RequestError(400, f"{where}[{i}]: only text parts ({{'type': 'text', 'text': ...}}) are read")
            parts.append(part["text"])
        return "\n".join(parts)
    raise RequestError(400, f"{where}: a string or a list of text parts, not {type(content).__name__}")


def objective_of(system: str) -> str:
    """The objective a system prompt states (see the module's docstring); '' if it is blank."""
    tagged = _OBJECTIVE_TAG.search(system)
    if tagged:
        return tagged.group(1).strip()
    line = _BEHAVIOR.search(system) or _OBJECTIVE_LINE.search(system)
    return line.group(1).strip() if line else system.strip()


N = TypeVar("N", int, float)


def _number(body: Mapping[str, object], key: str, kind: type[N], low: float, high: float) -> N | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise RequestError(400, f"{key}: a{'n integer' if kind is int else ' number'}, not {value!r}"[:200])
    if not low <= value <= high:
        raise RequestError(400, f"{key}: between {low} and {high}, not {value}")
    return kind(value)


@dataclass(frozen=True)
class ChatRequest:
    """What every chat-completions request carries, checked: its messages and sampling overrides."""

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None


def parse_chat(body: object) -> ChatRequest:
    """The messages and sampling overrides of a chat-completions body; a ``RequestError`` (400)
    names what is wrong."""
    if not isinstance(body, Mapping):
        raise RequestError(400, f"the body is a JSON object with 'messages', not a JSON {type(body).__name__}")
    if body.get("stream"):
        raise RequestError(400, "stream: not supported; send stream false (one message per request)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: a non-empty list of {'role', 'content'} objects is required")
    parsed: list[Message] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RequestError(400, f"messages[{i}]: an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(400, f"messages[{i}].role: one of {', '.join(ROLES)}, not {role!r}"[:200])
        parsed.append(Message(str(role), _text(message.get("content"), f"messages[{i}].content")))
    max_tokens = _number(body, "max_completion_tokens", int, 1, 1 << 20)
    return ChatRequest(
        messages=tuple(parsed),
        max_tokens=max_tokens if max_tokens is not None else _number(body, "max_tokens", int, 1, 1 << 20),
        temperature=_number(body, "temperature", float, 0.0, 2.0),
        seed=_number(body, "seed", int, 0, 2**63 - 1),
    )


def parse_request(body: object) -> AttackRequest:
    """The attack request in a chat-completions body; a ``RequestError`` (400) names what is wrong."""
    request = parse_chat(body)
    assert isinstance(body, Mapping)  # parse_chat checked it
    label = body.get("label", Label.HARMFUL.value)
    if label not in {lb.value for lb in Label}:
        raise RequestError(400, f"label: harmful or benign, not {label!r}"[:200])
    system = "\n".join(m.content for m in request.messages if m.role in ("system", "developer"))
    given = body.get("objective")
    if given is not None and not isinstance(given, str):
        raise RequestError(400, f"objective: a string, not {type(given).__name__}")
    objective = given.strip() if given else objective_of(system)
    if not objective:
        raise RequestError(
            400,
            "no objective: send a system message stating it (or <objective>..</objective>, "
            "a line 'Objective: ..', or a top-level 'objective' field)",
        )
    reply = json_reply(body.get("response_format"))
    return AttackRequest(
        objective=objective,
        label=Label(label),
        history=exchanges(tuple(m for m in request.messages if m.role not in ("system", "developer")), reply),
        reply=reply,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        seed=request.seed,
    )


class ChatService(Protocol):
    """A player behind the endpoint: its served name and its answer to a request body."""

    name: str

    def reply(self, body: object) -> tuple[str, int]:
        """(the assistant message, tokens generated); a ``RequestError`` for a defined failure."""
        ...


def first_valid(
    policy: Policy,
    request: AttackRequest | ChatRequest,
    attempts: int,
    lock: threading.Lock,
    sample: Callable[[Policy], Generation],
    parse: Callable[[Generation], Parsed],
    player: str,
) -> tuple[str, int]:
    """Sample (the request's sampling overrides, capped by the policy's token budget) until an
    output parses, up to ``attempts`` times: (its public text, tokens generated), else a 502."""
    policy = replace(
        policy,
        max_tokens=min(request.max_tokens or policy.max_tokens, policy.max_tokens),
        temperature=policy.temperature if request.temperature is None else request.temperature,
    )
    generated, failures = 0, []
    for attempt in range(attempts):
        seed = None if request.seed is None else request.seed + attempt
        with lock:  # one model, one generation at a time: the HF backend is not re-entrant
            generation = sample(replace(policy, seed=seed))
        generated += len(generation.token_ids)
        parsed = parse(generation)
        if parsed.public is not None:
            return parsed.public, generated
        failures.append(str(parsed.failure))
        if policy.temperature == 0:
            break  # greedy: another try is the same output
    raise RequestError(
        502,
        f"the {player} produced no valid {'attack' if player == ATTACKER else 'answer'} "
        f"in {len(failures)} samples ({', '.join(failures)})",
    )


@dataclass
class AttackerService:
    """The attacker's side of a request: the task it was trained on, sampled and parsed."""

    policy: Policy
    name: str = "advgame-attacker"
    # the game it was trained in: its task template, format (think or not) and output size guard
    game: GameConfig = field(default_factory=GameConfig)
    attempts: int = 3  # samples tried before a 502 (a sampled output may miss the strict format)

    def __post_init__(self) -> None:
        # one model, one generation at a time: the HF backend is not re-entrant
        self._lock = threading.Lock()
        # the game's own observation, so the task is the one trained on (no judge is called)
        self._game = Game(RuleJudge(), self.game)

    def task(self, request: AttackRequest) -> str:
        """The attacker's prompt: its opening task, or the multi-turn game's view of the dialogue so far."""
        seed = Seed("request", request.objective, request.label)
        turn = len(request.history) + 1
        # the multi-turn game's own observations (its checks need a pairwise judging config; no judge is called)
        game = replace(self.game, turns=max(self.game.turns, turn), judging="pairwise")
        if not request.history:
            opener = ConversationGame(RuleJudge(), game) if self.game.turns > 1 else self._game
            return opener.attacker_observation(Round(seed))
        conversation = Conversation(
            [Turn(Sample(e.attack, e.attack), Sample(e.answer, e.answer)) for e in self.recent(request.history)]
        )
        dialogue = Dialogue(seed, turn=turn, conversations=[[conversation]])
        return ConversationGame(RuleJudge(), game).attacker_view(dialogue, conversation)

    def recent(self, history: tuple[Exchange, ...]) -> tuple[Exchange, ...]:
        """The latest exchanges within the game's ``max_conversation_chars`` (at least the last,
        cut to it): a long tool dialogue cannot grow the prompt without bound."""
        limit, kept, size = self.game.max_conversation_chars, [], 0
        for exchange in reversed(history):
            size += len(exchange.attack) + len(exchange.answer)
            if size > limit:
                break
            kept.append(exchange)
        if not kept:  # the last exchange alone is over the limit: half each, the answer's end kept
            last, half = history[-1], limit // 2
            return (Exchange(last.attack[:half], last.answer[-(limit - half) :]),)
        return tuple(reversed(kept))

    def parse(self, generation: Generation) -> Parsed:
        """The attacker's output parsed as the game parses it; a tool's dialogue cannot be ended
        by the attacker, so ``[END CONVERSATION]`` counts as a failed sample."""
        parsed = self._game.parse_attack(generation.text, generation.finish_reason)
        if parsed.public is not None and parsed.public.strip() == END_CONVERSATION:
            return Parsed(None, parsed.reasoning, Failure.BAD_FORMAT)
        return parsed

    def attack(self, request: AttackRequest) -> tuple[str, int]:
        """(the public attack prompt, tokens generated); a ``RequestError`` (502) when no sample parsed."""
        task = self.task(request)
        return first_valid(
            self.policy,
            request,
            self.attempts,
            self._lock,
            lambda policy: policy.sample([task], 1)[0][0],
            self.parse,
            ATTACKER,
        )

    def reply(self, body: object) -> tuple[str, int]:
        request = parse_request(body)
        attack, generated = self.attack(request)
        return (attack if request.reply is None else request.reply.render(attack)), generated


@dataclass
class DefenderService:
    """The defender as a plain chat target: the conversation as sent, its last (user) turn written
    as the defender's trained task, its public answer returned."""

    policy: Policy
    name: str = "advgame-defender"
    game: GameConfig = field(default_factory=GameConfig)  # its task template, think format and size guard
    attempts: int = 3

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def chat(self, request: ChatRequest) -> list[dict[str, str]]:
        """The chat the defender is sent; a 400 unless the last turn is the user's."""
        *earlier, last = request.messages
        if last.role != "user":
            raise RequestError(
                400, f"messages[-1].role: the last message is the user's turn to answer, not {last.role!r}"
            )
        task = self.game.templates.defender_task(last.content, self.game.defender_think)
        # "developer" is OpenAI's newer name for system; chat templates know only system
        history = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in earlier]
        return [*history, *chat(task, self.policy.prefill, self.policy.system)]

    def parse(self, generation: Generation) -> Parsed:
        """The defender's output parsed as the game parses it (the public answer; think stays here)."""
        cfg, think = self.game, self.game.defender_think
        return parse_response(
            generation.text,
            think,
            cfg.max_response_chars,
            None,  # an answer cut at the token limit is still the answer a chat API returns
            strict=think and cfg.templates.strict("defender_think"),
            lead_in=cfg.lead_in if think else "",
            accept_empty=cfg.judge_empty_responses,
        )

    def answer(self, request: ChatRequest) -> tuple[str, int]:
        messages = self.chat(request)

        def sample(policy: Policy) -> Generation:
            [generation] = policy.backend.generate(
                [messages],
                max_tokens=policy.max_tokens,
                temperature=policy.temperature,
                top_p=policy.top_p,
                seed=policy.seed,
            )
            return replace(generation, text=policy.prefill + generation.text)  # the game parses the whole turn

        return first_valid(self.policy, request, self.attempts, self._lock, sample, self.parse, DEFENDER)

    def reply(self, body: object) -> tuple[str, int]:
        request = parse_chat(body)
        assert isinstance(body, Mapping)  # parse_chat checked it
        if json_reply(body.get("response_format")) is not None:
            raise RequestError(400, "response_format: the defender answers in text (send 'text' or none)")
        return self.answer(request)


def completion(service: ChatService, text: str, generated: int, model: object) -> dict[str, object]:
    """An OpenAI ``chat.completion`` object with the player's text as the assistant's message."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) and model else service.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": generated, "total_tokens": generated},
    }


def build_app(service: ChatService, *, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """The Starlette app: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    async def read_body(request: Request) -> bytes:
        # the declared length is checked first, then what arrives (a chunked body declares none)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise RequestError(413, f"the body is over {max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise RequestError(413, f"the body is over {max_body_bytes} bytes")
        return bytes(body)

    async def chat_completions(request: Request) -> JSONResponse:
        try:
            raw = await read_body(request)
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as bad:
                raise RequestError(400, f"the body is not JSON ({bad.__class__.__name__}: {str(bad)[:120]})") from None
            text, generated = await run_in_threadpool(service.reply, body)
        except RequestError as failed:
            return error(failed.status, failed.message)
        return JSONResponse(completion(service, text, generated, body.get("model")))

    async def models(_: Request) -> JSONResponse:
        return JSONResponse(
            {"object": "list", "data": [{"id": service.name, "object": "model", "owned_by": "advgame"}]}
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def run_config(source: Path) -> TrainConfig | None:
    """The config of the run ``source`` belongs to (a run folder, its ``final/ROLE`` or a
    checkpoint folder), so the attacker plays as it was trained; None for a lone export."""
    from algorithms.config import load_config

    if (source / "config.yaml").is_file():
        return load_config(source / "config.yaml")
    if source.parent.name in ("final", "checkpoints") and (source.parent.parent / "config.yaml").is_file():
        return load_config(source.parent.parent / "config.yaml")
    return None


def trained_policy(
    source: Path, role: str, which: Which = "learner", config: TrainConfig | None = None
) -> tuple[Policy, GameConfig]:
    """The ``role`` player of ``source`` (an export, a run folder or a checkpoint), loaded with the
    HF backend, with its run's game and sampling settings where the run is known (``config``
    overrides: e.g. a run's untrained base model playing with that run's settings; the defaults of
    a run config otherwise)."""
    from agents import HFBackend, load_model
    from algorithms.config import TrainConfig
    from algorithms.export import policy_folder
    from algorithms.training.game_format import read_format, recorded_game
    from algorithms.training.rollouts import prefills

    # first: a config that cannot load (a plugin not given) is the error to show
    cfg = config if config is not None else run_config(source)
    folder = policy_folder(source, role, which)
    fmt = read_format(folder)
    if cfg is None:  # a lone export: the run config's defaults, in the format the export records
        cfg = TrainConfig()
        if fmt is not None:  # its think switches and template set (a Self-RedTeam attacker: its system turn)
            cfg = replace(cfg, game=recorded_game(fmt, cfg.game))
    prefill = getattr(fmt, f"{role}_prefill") if fmt is not None else prefills(cfg)[role]
    model, tokenizer = load_model(folder)
    rollout, game = cfg.rollout, cfg.game
    policy = Policy(
        HFBackend(model, tokenizer),
        max_tokens=cfg.roles[role].max_tokens,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        prefill=prefill,
        system=game.system_message(role),  # Self-RedTeam's template set has one for the attacker
    )
    return policy, game


def attacker_service(
    source: Path, *, which: Which = "learner", name: str = "advgame-attacker", attempts: int = 3
) -> AttackerService:
    """The attacker of ``source`` playing as it was trained (``trained_policy``)."""
    policy, game = trained_policy(source, ATTACKER, which)
    return AttackerService(policy, name=name, game=game, attempts=attempts)


def defender_service(
    source: Path, *, which: Which = "learner", name: str = "advgame-defender", attempts: int = 3
) -> DefenderService:
    """The defender of ``source`` answering as it was trained (``trained_policy``)."""
    policy, game = trained_policy(source, DEFENDER, which)
    return DefenderService(policy, name=name, game=game, attempts=attempts)
