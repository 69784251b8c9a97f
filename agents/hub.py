"""The Hugging Face hub is off unless the user opts in.

The project runs offline: weights come from the bundled model or local folders. Without this,
transformers takes any missing ``org/name``-shaped folder for a hub id and spends about a minute
retrying https://huggingface.co before a long traceback. ``offline_by_default`` puts every hub
client we use (huggingface_hub, transformers, datasets) in its documented offline mode, where a
cached hub model still loads and anything else fails at once. ``ADVGAME_HUB=1`` opts in to the
hub; an ``HF_HUB_OFFLINE`` the user set is left as it is.
"""

from __future__ import annotations

import os
import sys

OPT_IN = "ADVGAME_HUB"  # set to 1 to let hub ids download (needs network)
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_allowed() -> bool:
    """Whether the user opted in to the hub (``ADVGAME_HUB=1``)."""
    return os.environ.get(OPT_IN, "").strip().lower() in ("1", "true", "yes", "on")


def offline_by_default() -> None:
    """Offline mode for every hub client, unless the user opted in or chose a mode themselves."""
    if hub_allowed() or any(name in os.environ for name in OFFLINE):
        return
    for name in OFFLINE:
        os.environ[name] = "1"
    # huggingface_hub reads the variable once, at import: a client imported before us needs telling
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


offline_by_default()  # on import of ``agents``, before transformers loads
