"""The trained attacker behind an OpenAI-compatible chat endpoint, as red-teaming tools call their
adversarial model: ``advgame serve --attacker PATH``.

A tool sends ``POST /v1/chat/completions`` with a system message stating the objective and the
conversation so far. The server maps that onto the task the attacker was trained on (the game's
attacker prompt for a seed and its label: the objective is the seed, harmful unless the request
says ``"label": "benign"``), samples, parses the strict ``<think>..</think><prompt>..</prompt>``
format, and answers with the public prompt only: the hidden reasoning never leaves the server.

Where the objective is read (first found):
  1. a top-level ``"objective"`` string (an extension field; tools that allow extra body keys);
  2. the system messages' text: its ``<objective>..</objective>``, else the rest of the first line
     after ``Objective:``,
     else the whole text.
A request without one is a 400 naming what is missing. The attacker was trained single-turn, so
the turns after the system message are checked (their layout) but not yet shown to it: each call
is a fresh rewrite of the objective (the multi-turn issue will feed them).

Every bad request has a defined answer and the server keeps serving: malformed JSON or an
unexpected layout 400 (naming the field), a body over ``max_body_bytes`` 413, ``stream`` 400,
an attacker that produced no valid attack in ``attempts`` samples 502.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from advgame_env.game import Game, GameConfig, Round
from advgame_env.parsing import Parsed
from advgame_env.roles import ATTACKER
from advgame_env.rule_judge import RuleJudge
from advgame_env.seeds import Label, Seed
from agents.hf import Generation
from agents.policy import Policy
from algorithms.training.copies import Which

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from algorithms.config import TrainConfig

ROLES = ("system", "developer", "user", "assistant")
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above a red-teaming conversation, far below memory trouble
_OBJECTIVE_TAG = re.compile(r"<objective>(.*?)</objective>", re.DOTALL | re.IGNORECASE)
_OBJECTIVE_LINE = re.compile(r"\bobjective[ \t]*:[ \t]*(\S[^\n]*)", re.IGNORECASE)  # the rest of its line


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


@dataclass(frozen=True)
class AttackRequest:
    """What the attacker needs from a tool's request."""

    objective: str
    label: Label
    conversation: tuple[Message, ...]  # the turns after the system messages (checked, not yet used)
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
    line = _OBJECTIVE_LINE.search(system)
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


def parse_request(body: object) -> AttackRequest:
    """The attack request in a chat-completions body; a ``RequestError`` (400) names what is wrong."""
    if not isinstance(body, Mapping):
        raise RequestError(400, f"the body is a JSON object with 'messages', not a JSON {type(body).__name__}")
    if body.get("stream"):
        raise RequestError(400, "stream: not supported; send stream false (one attack message per request)")
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
    label = body.get("label", Label.HARMFUL.value)
    if label not in {lb.value for lb in Label}:
        raise RequestError(400, f"label: harmful or benign, not {label!r}"[:200])
    system = "\n".join(m.content for m in parsed if m.role in ("system", "developer"))
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
    max_tokens = _number(body, "max_completion_tokens", int, 1, 1 << 20)
    return AttackRequest(
        objective=objective,
        label=Label(label),
        conversation=tuple(m for m in parsed if m.role not in ("system", "developer")),
        max_tokens=max_tokens if max_tokens is not None else _number(body, "max_tokens", int, 1, 1 << 20),
        temperature=_number(body, "temperature", float, 0.0, 2.0),
        seed=_number(body, "seed", int, 0, 2**63 - 1),
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
        return self._game.attacker_observation(Round(Seed("request", request.objective, request.label)))

    def parse(self, generation: Generation) -> Parsed:
        """The attacker's output parsed as the game parses it."""
        return self._game.parse_attack(generation.text, generation.finish_reason)

    def attack(self, request: AttackRequest) -> tuple[str, int]:
        """(the public attack prompt, tokens generated); a ``RequestError`` (502) when no sample parsed."""
        policy = replace(
            self.policy,
            max_tokens=min(request.max_tokens or self.policy.max_tokens, self.policy.max_tokens),
            temperature=self.policy.temperature if request.temperature is None else request.temperature,
        )
        task, generated, failures = self.task(request), 0, []
        for attempt in range(self.attempts):
            seed = None if request.seed is None else request.seed + attempt
            with self._lock:
                [[generation]] = replace(policy, seed=seed).sample([task], 1)
            generated += len(generation.token_ids)
            parsed = self.parse(generation)
            if parsed.public is not None:
                return parsed.public, generated
            failures.append(str(parsed.failure))
            if policy.temperature == 0:
                break  # greedy: another try is the same output
        raise RequestError(
            502, f"the attacker produced no valid attack in {len(failures)} samples ({', '.join(failures)})"
        )


def completion(service: AttackerService, text: str, generated: int, model: object) -> dict[str, object]:
    """An OpenAI ``chat.completion`` object with the attack as the assistant's message."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) and model else service.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": generated, "total_tokens": generated},
    }


def build_app(service: AttackerService, *, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
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
            attack_request = parse_request(body)
            text, generated = await run_in_threadpool(service.attack, attack_request)
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


def attacker_service(
    source: Path, *, which: Which = "learner", name: str = "advgame-attacker", attempts: int = 3
) -> AttackerService:
    """The attacker of ``source`` (an export, a run folder or a checkpoint), loaded with the HF
    backend, playing with its run's game and sampling settings where the run is known (the
    defaults of a run config otherwise)."""
    from agents import HFBackend, load_model
    from algorithms.config import TrainConfig
    from algorithms.export import policy_folder
    from algorithms.training.game_format import read_format
    from algorithms.training.rollouts import prefills

    cfg = run_config(source)  # first: a config that cannot load (a plugin not given) is the error to show
    folder = policy_folder(source, "attacker", which)
    fmt = read_format(folder)
    if cfg is None:  # a lone export: the run config's defaults, in the format the export records
        cfg = TrainConfig()
        if fmt is not None:
            cfg = replace(cfg, game=replace(cfg.game, attacker_think=fmt.attacker_think))
    prefill = fmt.attacker_prefill if fmt is not None else prefills(cfg)[ATTACKER]
    model, tokenizer = load_model(folder)
    rollout, game = cfg.rollout, cfg.game
    policy = Policy(
        HFBackend(model, tokenizer),
        max_tokens=cfg.roles.attacker.max_tokens,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        prefill=prefill,
        system=game.system_message(ATTACKER),  # Self-RedTeam's template set has one
    )
    return AttackerService(policy, name=name, game=game, attempts=attempts)
