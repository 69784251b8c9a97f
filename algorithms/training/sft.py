"""The auxiliary supervised loss of Self-RedTeam: next-token NLL on supplied chat data.

A JSONL file, one conversation per line, either ``{"messages": [{"role", "content"}, ...]}``
(the last message is the assistant's target) or ``{"prompt": ..., "response": ...}``. Only the
target's tokens carry loss; the prompt is rendered with the model's chat template (and the
role's prefill, when the target starts with it, so a hidden-reasoning target is trained the
way it is sampled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advgame_env.seeds import read_text
from agents.hf import encode, render_chat, token_logprobs

if TYPE_CHECKING:
    from agents.handles import CausalLM, Tokenizer


@dataclass
class SFTExample:
    prompt_ids: list[int]
    target_ids: list[int]


class SFTFormatError(ValueError):
    """An SFT data file is malformed; the message names the file and the line."""


def read_sft(path: str | Path) -> list[list[dict[str, str]]]:
    """The chats of an SFT file, each ending in the assistant turn to learn; read and checked
    without a tokenizer, so a run checks its files before any model loads."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SFT data file {path} does not exist")
    text = read_text(path, SFTFormatError)
    chats = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = record.get("messages") or [
                {"role": "user", "content": record["prompt"]},
                {"role": "assistant", "content": record["response"]},
            ]
            *context, target = messages
            for message in messages:
                content = message["content"]
                if not isinstance(content, str) or not isinstance(message["role"], str):
                    raise ValueError("every message needs a string role and content")
                if "\x00" in content or any("\ud800" <= c <= "\udfff" for c in content):
                    raise ValueError("a message holds a NUL character or a lone surrogate")
            if target["role"] != "assistant" or not context or not str(target["content"]).strip():
                raise ValueError("the last message must be a non-empty assistant turn after at least one other")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise SFTFormatError(f"{path}, line {n}: not an SFT record ({error})") from None
        chats.append(list(messages))
    if not chats:
        raise SFTFormatError(f"{path}: no SFT records")
    return chats


def load_sft(path: str | Path, tokenizer: Tokenizer, prefill: str = "") -> list[SFTExample]:
    out = []
    for *context, target in read_sft(path):
        text = str(target["content"])
        opening = prefill if prefill and text.startswith(prefill) else ""
        chat = [*context, {"role": "assistant", "content": opening}] if opening else list(context)
        ids = [*encode(tokenizer, text.removeprefix(opening)), tokenizer.eos_token_id]
        out.append(SFTExample(encode(tokenizer, render_chat(tokenizer, chat)), ids))
    return out


def sft_loss(model: CausalLM, batch: list[SFTExample], pad_id: int, max_context: int) -> torch.Tensor:
    """Mean over the batch of each target's mean token NLL."""
    logps, mask = token_logprobs(
        model, [(e.prompt_ids, e.target_ids) for e in batch], pad_id=pad_id, max_context=max_context
    )
    return (-(logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def sft_coef_at(step: int, coef: float, stop_step: int | None = None, decay_steps: int = 0) -> float:
    """The SFT term's coefficient at ``step`` (0-based): ``coef`` until ``decay_steps`` before
    ``stop_step``, then falling linearly so that the last step before ``stop_step`` still has
    some of it, and 0 from ``stop_step`` on. ``stop_step`` None: ``coef`` at every step.

    Why a late stop: the SFT chats seed behaviour the untrained players never sample (a refusal
    to a harmful request), but a fixed target set is a low-loss mode the player over-applies (the
    demo defender refused a chickpea recipe in one of its SFT phrasings); once the game's pairs
    hold both behaviours, they alone decide when to refuse."""
    if stop_step is None:
        return coef
    left = stop_step - step  # steps before the stop, this one included
    if left <= 0:
        return 0.0
    return coef * min(1.0, left / (decay_steps + 1))
