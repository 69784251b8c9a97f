"""Write the CPU demo's auxiliary SFT data (configs/data/cpu_demo_sft.jsonl).

The bundled defender refuses about 1% of sampled answers to harmful requests, so its own
rollouts rarely hold a refusal for the judge to prefer. Like Self-RedTeam's auxiliary SFT term,
the demo adds a small supervised loss on chats that show both halves of the behaviour it wants:

- harmful training seeds, each answered by a short refusal with a safe redirect (written here,
  one of a few phrasings, chosen by the seed's id so the file is reproducible);
- as many benign training seeds (vanilla and benign-but-scary alike), each answered by the
  bundled model's own greedy answer cut at its last full sentence, so helpfulness is anchored
  in the model's own words rather than in new knowledge. (Twice as many benign answers was
  tried and ended worse: 40% refusal of held-out benign requests against 17% with these counts.)

Only the training split is used; the held-out seeds that the demo evaluates on stay unseen.

    .venv/bin/python scripts/make_demo_sft.py [--harmful 160] [--benign 160] [--out configs/data/cpu_demo_sft.jsonl]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

from advgame_env.rule_judge import Behaviour, behaviour
from advgame_env.seeds import Label, Seed, bundled_seeds
from agents.hf import HFBackend
from agents.models import load_model
from agents.policy import chat

# Short enough to end inside the demo's 24-token answers, so the model also learns to stop.
REFUSALS = (
    "I can't help with that. It could seriously hurt people.",
    "Sorry, but I can't assist with this. If you're worried, please talk to someone you trust.",
    "I won't help with that because it could cause real harm.",
    "I'm not able to help with this. It's dangerous and likely illegal.",
    "I can't provide that. If someone is in danger, please contact emergency services.",
    "Sorry, I can't do that. It could harm others, and I won't take part in it.",
    "I'm unable to help with that request, since it could be used to hurt someone.",
    "No, I can't help with this one. It risks real harm to people.",
)
SENTENCE_END = re.compile(r"(?<=[A-Za-z)\"'])[.!?](?=\s|$)")  # not "1." of a list


def refusal_for(seed: Seed) -> str:
    digest = int(hashlib.sha256(seed.id.encode()).hexdigest(), 16)
    return REFUSALS[digest % len(REFUSALS)]


def whole_sentences(text: str) -> str:
    """The text up to its last sentence end ('' when it has none)."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def spread(seeds: list[Seed], n: int) -> list[Seed]:
    """``n`` seeds taken evenly across the list, so every topic and subtype is represented."""
    if n >= len(seeds):
        return seeds
    return [seeds[round(i * len(seeds) / n)] for i in range(n)]


def helpful_answers(seeds: list[Seed], max_tokens: int) -> list[tuple[Seed, str]]:
    model, tokenizer = load_model()
    backend = HFBackend(model, tokenizer, batch_size=32)
    generations = backend.generate([chat(s.prompt) for s in seeds], max_tokens=max_tokens, temperature=0.0)
    kept = []
    for seed, generation in zip(seeds, generations, strict=True):
        answer = whole_sentences(generation.text)
        if answer and behaviour(answer) is Behaviour.COMPLIANCE:  # the model's rare refusals are not a target
            kept.append((seed, answer))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harmful", type=int, default=160)
    parser.add_argument("--benign", type=int, default=160)
    parser.add_argument("--answer-tokens", type=int, default=48)
    parser.add_argument("--out", default="configs/data/cpu_demo_sft.jsonl")
    args = parser.parse_args()
    harmful = spread(bundled_seeds("train", Label.HARMFUL), args.harmful)
    benign = helpful_answers(spread(bundled_seeds("train", Label.BENIGN), args.benign), args.answer_tokens)
    rows = [(s, refusal_for(s)) for s in harmful] + benign
    rows.sort(key=lambda row: row[0].id)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for seed, answer in rows:
            record = {"id": seed.id, "label": seed.label.value, "prompt": seed.prompt, "response": answer}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{out}: {len(harmful)} refusals, {len(benign)} helpful answers")


if __name__ == "__main__":
    main()
