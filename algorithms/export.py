"""Exports that load outside advgame: a trained policy as a folder plain transformers, peft and
vLLM load as they are.

    advgame export runs/x --role attacker --merged out/attacker    # adapter merged into its base
    advgame export runs/x/final/attacker out/attacker_lora          # adapter naming a loadable base

A run's own exports name a LoRA adapter's base by the bundled alias (``smollm2-135m-instruct``),
which only ``agents.load_model`` resolves: transformers and peft read it as a hub id and fail. A
merged export is an ordinary model folder (config, safetensors, tokenizer, chat template); an
adapter export names its base by what plain tools resolve: the converted base folder on this
machine for a bundled model (its dequantised weights are not the hub's), a folder's absolute
path, or the hub id as given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from advgame_types import ROLES
from agents.models import ADAPTER_CONFIG, BUNDLED, adapter_base, resolve_model
from algorithms.training.checkpoints import CONFIG_FILE, STATE_FILE, checkpoint_step
from algorithms.training.copies import Which


@dataclass(frozen=True)
class Exported:
    """What ``export`` wrote: the folder, the policy folder it came from, and the base an adapter
    export names (None for a model folder)."""

    out: Path
    source: Path
    base: str | None


def policy_folder(source: Path, role: str = "attacker", which: Which = "learner") -> Path:
    """The loadable folder of a policy: ``source`` itself (a model or adapter folder), a run
    folder's ``final/ROLE`` (``final/policy`` for a self-play run), or a checkpoint's policy
    (exported once into the run's ``eval/exports``, as ``advgame eval --run`` does)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    if (source / ADAPTER_CONFIG).is_file() or (source / "config.json").is_file():
        return source
    suffix = "" if which == "learner" else f"_{which}"
    if (source / STATE_FILE).is_file():  # a checkpoint folder: RUN/checkpoints/step_N
        from algorithms.evaluation.evaluate import checkpoint_models

        run_dir = source.parent.parent
        [(_, folder)] = checkpoint_models(run_dir, role, which, steps=str(checkpoint_step(source)))
        return Path(folder)
    if (source / CONFIG_FILE).is_file():  # a run folder
        for name in (role, "policy"):
            if (source / "final" / f"{name}{suffix}").is_dir():
                return source / "final" / f"{name}{suffix}"
        raise FileNotFoundError(
            f"{source} has no final/{role}{suffix} (unfinished run?): give one of its checkpoints/step_N folders"
        )
    raise FileNotFoundError(f"{source} is neither a model or adapter folder, a run folder, nor a checkpoint folder")


def loadable_base(base: str) -> str:
    """How a plain tool should name an adapter's base: a bundled alias (or another machine's cache
    path of it) becomes this machine's converted folder, a local folder its absolute path, a hub
    id stays."""
    path = Path(base)
    if path.exists():
        return str(path.resolve())
    if path.name in BUNDLED:  # the alias, or another machine's cache folder of it: converted here once
        return str(Path(resolve_model(base)).resolve())
    return base  # a hub id: plain tools resolve it themselves (never looked up here: offline)


def export(source: Path, out: Path, *, merged: bool, role: str = "attacker", which: Which = "learner") -> Exported:
    """Write the policy ``source`` names into ``out`` (a new folder, written whole or not at all)."""
    folder = policy_folder(source, role, which)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: give a new folder")
    base = adapter_base(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if base is not None and merged:
            _merge(folder, loadable_base(base), staging)
        else:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
            if base is not None:
                config_path = staging / ADAPTER_CONFIG
                config = json.loads(config_path.read_text(encoding="utf-8"))
                config["base_model_name_or_path"] = loadable_base(base)
                config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, folder, None if base is None or merged else loadable_base(base))


def _merge(adapter: Path, base: str, out: Path) -> None:
    """The adapter folded into its base's weights (peft's ``merge_and_unload``), saved in the
    base's own dtype with the tokenizer and chat template."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    except OSError as error:  # a hub base that is not in the hub cache, offline
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"the base {base} of {adapter} does not load here ({reason})") from None
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    # the training export saves the tokenizer beside the adapter; older folders lack it
    tokenizer = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file() else base)
    tokenizer.save_pretrained(out)
